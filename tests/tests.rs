//! The one integration test binary: real database files, real processes.

mod util;
// The PostgreSQL test cluster, shared with the cinecut-postgres crate's tests.
#[path = "../postgres/tests/util.rs"]
mod pg_util;

mod database;
mod dedupe;
mod dialogue;
mod enqueue;
mod film;
mod parity;
mod passes;
mod postgres;
mod promises;
mod real_hosts;
mod real_models;
mod report;
mod results;
mod server;
mod status;
mod worker;
mod worker_processes;
