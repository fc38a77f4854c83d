//! cinecut's domain types, defined once for both database backends.
//!
//! The SQLite store (the `cinecut` crate's `db/`) and the PostgreSQL store
//! (`cinecut-postgres`) take and return these types, so that a command, the
//! worker and the producer are written once and a row means the same on
//! either database. Nothing here knows a database: the SQL spelling of
//! each state is the one both schemas' `CHECK`s use.

pub mod lease;
pub mod rows;
pub mod state;
pub mod work;

pub use lease::{Acquire, Holder, OrphanServer, Purpose, Renewal};
pub use rows::{
    DialogueHit, ExistingFilm, FailureReason, FilmFacts, FilmStatus, LeaseHolder, NewShot, Pass,
    PassCandidate, PassSummary, ReportField, ReportFrame, ResultRow, SearchHit, SubtitleLine,
    VideoFilm, WorkerRow,
};
pub use state::{AttemptOutcome, JobState, ServerEvent, WorkerState};
pub use work::{
    Answer, Claimed, ClaimedJob, Fence, Finished, HashedFrame, Neighbour, Outcome, Recorded, Scope,
    StoredFrame,
};
