//! The queue on a real PostgreSQL server: claims that never hand a job to
//! two live workers, GPU leases that expire by the database's clock and
//! fence their old holder, dead holders told apart by host, workers that
//! carry on across a server restart, wake-ups through LISTEN/NOTIFY.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cinecut_postgres::host::HostId;
use cinecut_postgres::lease::{self, Acquire, Holder};
use cinecut_postgres::queue::{
    self, Answer, ClaimedJob, Fence, Finished, NewFrame, Outcome, Scope, Wakeups,
};
use cinecut_postgres::{PgQueue, Result};
use util::TestPg;

fn frames(n: i64) -> Vec<NewFrame> {
    (0..n)
        .map(|i| NewFrame {
            path: format!("/shared/film/frame_{i:06}.jpg"),
            shot: None,
            dhash: None,
            duplicate_of: None,
            dedupe_distance: None,
            frame_index: Some(i),
            bytes: None,
            pts_ms: Some(i * 40),
            width: None,
            height: None,
        })
        .collect()
}

/// A film of `n` frames queued in pass `default`; returns the pass id.
async fn queued(q: &PgQueue, n: i64) -> i64 {
    let film = queue::ensure_film(q, "film").await.unwrap();
    let pass = queue::ensure_pass(q, "default").await.unwrap();
    for chunk in frames(n).chunks(500) {
        queue::enqueue(q, film, pass, chunk, 3).await.unwrap();
    }
    pass
}

fn holder(id: &str, host: &str, pid: i64) -> Holder {
    Holder {
        id: id.into(),
        host: HostId(host.into()),
        pid,
        purpose: "worker",
    }
}

fn answer() -> Answer {
    let sqlx::types::JsonValue::Object(fields) = serde_json_value() else {
        unreachable!("a JSON object")
    };
    Answer::validated(fields, None)
}

/// Job `id` as its claim named it (the PostgreSQL queue records by id).
fn job(id: i64) -> ClaimedJob {
    ClaimedJob {
        job_id: id,
        frame_id: 0,
        path: String::new(),
        line: None,
        attempts: 1,
        transient_failures: 0,
        max_attempts: 3,
        stored: None,
        dedupe: None,
    }
}

/// Job `id`'s try, ended with `outcome`, 40 ms long.
fn ended(id: i64, outcome: Outcome) -> Finished {
    Finished {
        job: job(id),
        outcome,
        started_at: 1_000,
        finished_at: 1_040,
    }
}

fn done_with(id: i64) -> Finished {
    ended(
        id,
        Outcome::Done {
            answer: answer(),
            model: "fake".into(),
            model_sha256: Some("ab".repeat(32)),
            prompt_version: 1,
            prompt_tokens: Some(120),
            completion_tokens: Some(30),
        },
    )
}

/// Records job `id`'s answer under `fence`: whether it was still ours.
async fn finish_done(q: &PgQueue, fence: &Fence, id: i64) -> Result<bool> {
    queue::finish(q, fence, done_with(id)).await
}

/// One round as these tests read it.
#[derive(Debug)]
struct Round {
    recorded: queue::Recorded,
    claimed: Vec<ClaimedJob>,
    gpu_wanted: bool,
}

/// One record-and-claim round of pass `pass` (under its first binding).
async fn claim_round(
    q: &PgQueue,
    fence: &Fence,
    finished: &[Finished],
    pass: i64,
    n: i64,
    ttl: Duration,
) -> Result<Round> {
    let scope = Scope {
        pass,
        binding: 0,
        film: None,
    };
    let (recorded, claimed) = queue::record_and_claim(q, fence, finished, scope, n, ttl).await?;
    Ok(Round {
        recorded,
        claimed: claimed.jobs,
        gpu_wanted: claimed.gpu_wanted,
    })
}

fn serde_json_value() -> sqlx::types::JsonValue {
    sqlx::types::JsonValue::Object(
        [
            ("visual_content", "a quay at night"),
            ("mood", "calm"),
            ("action", "none"),
            ("setting", "port"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), sqlx::types::JsonValue::String(v.to_string())))
        .collect(),
    )
}

/// One worker as the real one behaves on PostgreSQL: takes its GPU's lease,
/// renews it, recovers expired jobs of any host now and then, claims in
/// batches, "describes" (1 ms) and stores each answer fenced by its epoch,
/// waits on LISTEN/NOTIFY when there is nothing to claim, and rides out
/// errors (a server restart) by trying again. Returns when the pass has
/// nothing queued or running.
async fn work(
    url: String,
    me: Holder,
    gpu: String,
    pass: i64,
    ttl: Duration,
    done: Arc<AtomicU64>,
) {
    let q = loop {
        match PgQueue::connect(&url).await {
            Ok(q) => break q,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut wake = None;
    let mut epoch: Option<i64> = None;
    let mut renewed = Instant::now();
    let mut recovered = Instant::now() - ttl;
    loop {
        let step: Result<bool> = async {
            if wake.is_none() {
                wake = Some(Wakeups::listen(&q).await?);
            }
            let e = match epoch {
                Some(e) => e,
                None => match lease::acquire(&q, &gpu, &me, ttl).await? {
                    Acquire::Acquired { epoch: e, .. } => {
                        epoch = Some(e);
                        renewed = Instant::now();
                        e
                    }
                    Acquire::Held { .. } | Acquire::WaitersFirst => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return Ok(false);
                    }
                },
            };
            if renewed.elapsed() >= ttl / 3 {
                if !lease::renew(&q, &gpu, &me, e, &[], ttl).await? {
                    epoch = None;
                    return Ok(false);
                }
                renewed = Instant::now();
            }
            if recovered.elapsed() >= ttl / 2 {
                queue::recover_expired(&q).await?;
                recovered = Instant::now();
            }
            let fence = Fence {
                gpu: gpu.clone(),
                owner: me.id.clone(),
                epoch: e,
            };
            let jobs = queue::claim(&q, &fence, pass, 8, ttl).await?;
            if jobs.is_empty() {
                let c = queue::counts(&q, pass).await?;
                if c.queued == 0 && c.running == 0 {
                    return Ok(true);
                }
                wake.as_mut()
                    .unwrap()
                    .wait(Duration::from_millis(200))
                    .await?;
                return Ok(false);
            }
            for job in jobs {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if finish_done(&q, &fence, job.job_id).await? {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(false)
        }
        .await;
        match step {
            Ok(true) => return,
            Ok(false) => {}
            Err(_) => {
                // The server went away (a restart): the pool reconnects.
                wake = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn count(q: &PgQueue, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(q.pool())
        .await
        .unwrap()
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Attempts of one job that overlap in time (a job held by two live
/// workers at once): there must be none.
const OVERLAPPING_ATTEMPTS: &str = "SELECT count(*) FROM attempts a JOIN attempts b \
     ON a.job_id = b.job_id AND a.id < b.id \
     WHERE b.started_at < coalesce(a.finished_at, 'infinity')";

/// Four workers standing for two hosts × two GPUs describe 2,000 frames;
/// one host's two workers die mid-run (their tasks dropped, connections
/// and all, as a SIGKILLed host would leave them): their jobs come back by
/// lease expiry on the database's clock, not by pid, and every frame is
/// described exactly once, never held by two live workers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_on_two_hosts_lose_one_host_and_describe_every_frame_once() {
    let pg = TestPg::new().await;
    let q = pg.queue().await;
    let pass = queued(&q, 2000).await;
    assert_eq!(
        count(&q, "SELECT count(*) FROM jobs WHERE state = 'queued'").await,
        2000
    );
    let ttl = Duration::from_secs(1);
    let done = Arc::new(AtomicU64::new(0));
    let start = |host: &str, gpu: &str| {
        let me = holder(
            &format!("{host}-{gpu}"),
            host,
            i64::from(std::process::id()),
        );
        tokio::spawn(work(
            pg.url.clone(),
            me,
            format!("GPU-{host}-{gpu}"),
            pass,
            ttl,
            done.clone(),
        ))
    };
    let host_a = [start("a", "0"), start("a", "1")];
    let host_b = [start("b", "0"), start("b", "1")];
    wait_until("400 frames described", Duration::from_secs(60), || {
        done.load(Ordering::Relaxed) >= 400
    })
    .await;
    for w in &host_a {
        w.abort();
    }
    for w in host_a {
        let _ = w.await;
    }
    for w in host_b {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("host b's workers finish")
            .unwrap();
    }
    assert_eq!(
        count(&q, "SELECT count(*) FROM jobs WHERE state = 'done'").await,
        2000
    );
    assert_eq!(count(&q, "SELECT count(*) FROM descriptions").await, 2000);
    assert_eq!(
        count(&q, "SELECT count(DISTINCT frame_id) FROM descriptions").await,
        2000
    );
    assert_eq!(
        count(&q, "SELECT count(*) FROM attempts WHERE outcome = 'done'").await,
        2000,
        "one finished attempt per frame"
    );
    assert_eq!(
        count(&q, OVERLAPPING_ATTEMPTS).await,
        0,
        "no job held twice at once"
    );
    // What host a had in hand came back by expiry, and host b finished it.
    let expired = count(
        &q,
        "SELECT count(*) FROM attempts WHERE outcome = 'expired' AND worker_id LIKE 'a-%'",
    )
    .await;
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM attempts WHERE outcome IS DISTINCT FROM 'done'"
        )
        .await,
        expired,
        "every attempt not finished is one of the dead host's, ended by expiry"
    );
    assert!(expired >= 1, "host a died with jobs in hand");
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM attempts a JOIN attempts b ON a.job_id = b.job_id \
             WHERE a.outcome = 'expired' AND b.outcome = 'done' AND b.worker_id LIKE 'b-%'"
        )
        .await,
        expired
    );
}

/// A lease held by one worker is refused to another until it expires by the
/// database's clock; then the other takes it under a higher epoch, and the
/// first one's renewals, claims and results are all refused (fencing).
#[tokio::test]
async fn a_lease_expires_by_the_database_clock_and_fences_its_old_holder() {
    let pg = TestPg::new().await;
    let q = pg.queue().await;
    let pass = queued(&q, 10).await;
    let pid = i64::from(std::process::id());
    let (a, b) = (holder("a", "host-a", pid), holder("b", "host-b", pid));
    let ttl = Duration::from_millis(600);
    let Acquire::Acquired { epoch: ea, .. } = lease::acquire(&q, "GPU-1", &a, ttl).await.unwrap()
    else {
        panic!("a free GPU");
    };
    let fence_a = Fence {
        gpu: "GPU-1".into(),
        owner: "a".into(),
        epoch: ea,
    };
    let mine = queue::claim(&q, &fence_a, pass, 2, ttl).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert_eq!(
        lease::acquire(&q, "GPU-1", &b, ttl).await.unwrap(),
        Acquire::Held {
            holder: "a".into(),
            pid: Some(i64::from(std::process::id())),
            host: Some("host-a".into()),
            purpose: Some("worker".into()),
        }
    );
    // Expired by the server's clock (the test never compares its own).
    loop {
        let expired: bool = sqlx::query_scalar(
            "SELECT expires_at <= clock_timestamp() FROM gpu_leases WHERE gpu = 'GPU-1'",
        )
        .fetch_one(q.pool())
        .await
        .unwrap();
        if expired {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Acquire::Acquired {
        epoch: eb,
        recovered,
        took_over_from: taken_from,
        ..
    } = lease::acquire(&q, "GPU-1", &b, ttl).await.unwrap()
    else {
        panic!("an expired lease is free");
    };
    assert_eq!(taken_from.as_deref(), Some(a.id.as_str()));
    assert_eq!(
        (eb, recovered),
        (ea + 1, 2),
        "a's two jobs back in the queue"
    );
    assert!(!lease::renew(&q, "GPU-1", &a, ea, &[], ttl).await.unwrap());
    assert!(
        queue::claim(&q, &fence_a, pass, 5, ttl)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!finish_done(&q, &fence_a, mine[0].job_id).await.unwrap());
    let fence_b = Fence {
        gpu: "GPU-1".into(),
        owner: "b".into(),
        epoch: eb,
    };
    let theirs = queue::claim(&q, &fence_b, pass, 10, ttl).await.unwrap();
    assert_eq!(theirs.len(), 10, "a's jobs are claimable again");
    assert!(finish_done(&q, &fence_b, mine[0].job_id).await.unwrap());
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM attempts WHERE outcome = 'requeued' AND worker_id = 'a'"
        )
        .await,
        2
    );
}

/// A holder that died on this very host is replaced at once (its pid is
/// gone); one on another host is not judged by a pid that means nothing
/// here, only by its lease's expiry.
#[tokio::test]
async fn a_dead_holder_is_replaced_at_once_only_on_its_own_host() {
    let pg = TestPg::new().await;
    let q = pg.queue().await;
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead_pid = i64::from(gone.id());
    let minute = Duration::from_secs(60);
    let me = holder("me", "host-a", i64::from(std::process::id()));

    let dead_here = holder("dead-here", "host-a", dead_pid);
    assert!(matches!(
        lease::acquire(&q, "GPU-1", &dead_here, minute)
            .await
            .unwrap(),
        Acquire::Acquired { .. }
    ));
    assert!(
        matches!(
            lease::acquire(&q, "GPU-1", &me, minute).await.unwrap(),
            Acquire::Acquired { epoch: 2, .. }
        ),
        "the dead holder on this host is replaced without waiting a minute"
    );

    let dead_elsewhere = holder("dead-elsewhere", "host-b", dead_pid);
    assert!(matches!(
        lease::acquire(&q, "GPU-2", &dead_elsewhere, minute)
            .await
            .unwrap(),
        Acquire::Acquired { .. }
    ));
    assert_eq!(
        lease::acquire(&q, "GPU-2", &me, minute).await.unwrap(),
        Acquire::Held {
            holder: "dead-elsewhere".into(),
            pid: Some(dead_pid),
            host: Some("host-b".into()),
            purpose: Some("worker".into()),
        },
        "a pid of another host says nothing here"
    );
}

/// The server restarts (`pg_ctl restart`) while two workers describe 600
/// frames: they reconnect and carry on; nothing is lost or described twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_carry_on_across_a_server_restart() {
    let pg = TestPg::private().await;
    let q = pg.queue().await;
    let pass = queued(&q, 600).await;
    q.close().await;
    let ttl = Duration::from_secs(2);
    let done = Arc::new(AtomicU64::new(0));
    let pid = i64::from(std::process::id());
    let workers: Vec<_> = ["0", "1"]
        .into_iter()
        .map(|g| {
            tokio::spawn(work(
                pg.url.clone(),
                holder(&format!("w{g}"), "host", pid),
                format!("GPU-{g}"),
                pass,
                ttl,
                done.clone(),
            ))
        })
        .collect();
    wait_until("150 frames described", Duration::from_secs(60), || {
        done.load(Ordering::Relaxed) >= 150
    })
    .await;
    tokio::task::block_in_place(|| pg.restart());
    let at_restart = done.load(Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("the workers finish after the restart")
            .unwrap();
    }
    assert!(
        at_restart < 600,
        "the restart came mid-run ({at_restart} done)"
    );
    let q = pg.queue().await;
    assert_eq!(
        count(&q, "SELECT count(*) FROM jobs WHERE state = 'done'").await,
        600
    );
    assert_eq!(
        count(&q, "SELECT count(DISTINCT frame_id) FROM descriptions").await,
        600
    );
    assert_eq!(count(&q, "SELECT count(*) FROM descriptions").await, 600);
    assert_eq!(count(&q, OVERLAPPING_ATTEMPTS).await, 0);
    q.close().await;
}

/// A worker waiting for work is woken by an enqueue (LISTEN/NOTIFY), not
/// by polling: it returns long before its limit.
#[tokio::test]
async fn an_enqueue_wakes_a_waiting_worker() {
    let pg = TestPg::new().await;
    let q = pg.queue().await;
    let film = queue::ensure_film(&q, "film").await.unwrap();
    let pass = queue::ensure_pass(&q, "default").await.unwrap();
    let mut wake = Wakeups::listen(&q).await.unwrap();
    assert!(
        !wake.wait(Duration::from_millis(50)).await.unwrap(),
        "nothing yet"
    );
    let producer = pg.queue().await;
    let enqueue = tokio::spawn(async move {
        queue::enqueue(&producer, film, pass, &frames(3), 3)
            .await
            .unwrap()
    });
    assert!(
        wake.wait(Duration::from_secs(60)).await.unwrap(),
        "woken by the enqueue"
    );
    assert_eq!(enqueue.await.unwrap().jobs, 3);
}

/// Deleting a film removes its frames, jobs, attempts and descriptions,
/// and nothing of another film.
#[tokio::test]
async fn deleting_a_film_leaves_nothing_of_it() {
    let pg = TestPg::new().await;
    let q = pg.queue().await;
    let pass = queue::ensure_pass(&q, "default").await.unwrap();
    let (gone, kept) = (
        queue::ensure_film(&q, "gone").await.unwrap(),
        queue::ensure_film(&q, "kept").await.unwrap(),
    );
    queue::enqueue(&q, gone, pass, &frames(5), 3).await.unwrap();
    queue::enqueue(&q, kept, pass, &frames(3), 3).await.unwrap();
    let me = holder("w", "host", i64::from(std::process::id()));
    let ttl = Duration::from_secs(60);
    let Acquire::Acquired { epoch, .. } = lease::acquire(&q, "GPU-1", &me, ttl).await.unwrap()
    else {
        panic!("a free GPU")
    };
    let fence = Fence {
        gpu: "GPU-1".into(),
        owner: "w".into(),
        epoch,
    };
    let claimed = queue::claim(&q, &fence, pass, 8, ttl).await.unwrap();
    let done: Vec<_> = claimed.iter().map(|c| done_with(c.job_id)).collect();
    claim_round(&q, &fence, &done, pass, 0, ttl).await.unwrap();
    assert_eq!(count(&q, "SELECT count(*) FROM descriptions").await, 8);
    assert!(queue::delete_film(&q, gone).await.unwrap());
    for (table, left) in [
        ("films", 1),
        ("frames", 3),
        ("jobs", 3),
        ("attempts", 3),
        ("descriptions", 3),
    ] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(q.pool())
                .await
                .unwrap();
        assert_eq!(n, left, "{table}");
    }
    assert!(!queue::delete_film(&q, gone).await.unwrap());
}

/// Enqueuing the same frames again adds nothing (by path and index).
#[tokio::test]
async fn enqueue_is_idempotent() {
    let pg = TestPg::new().await;
    let q = pg.queue().await;
    let film = queue::ensure_film(&q, "film").await.unwrap();
    let pass = queue::ensure_pass(&q, "default").await.unwrap();
    let added = |frames, jobs| queue::Enqueued {
        frames,
        jobs,
        near_duplicates: 0,
        index_conflicts: Vec::new(),
    };
    assert_eq!(
        queue::enqueue(&q, film, pass, &frames(100), 3)
            .await
            .unwrap(),
        added(100, 100)
    );
    assert_eq!(
        queue::enqueue(&q, film, pass, &frames(120), 3)
            .await
            .unwrap(),
        added(20, 20)
    );
    assert_eq!(count(&q, "SELECT count(*) FROM jobs").await, 120);
    assert_eq!(count(&q, "SELECT frame_count FROM films").await, 120);
    // A second pass over the same frames: no new frame, a job for each.
    let second = queue::ensure_pass(&q, "second").await.unwrap();
    assert_eq!(
        queue::enqueue(&q, film, second, &frames(120), 3)
            .await
            .unwrap(),
        added(0, 120)
    );
    assert_eq!(count(&q, "SELECT count(*) FROM jobs").await, 240);
    assert_eq!(count(&q, "SELECT frame_count FROM films").await, 120);
}

/// A worker on GPU-1 of one test, its lease taken.
async fn leased(q: &PgQueue, id: &str) -> Fence {
    let me = holder(id, "host", i64::from(std::process::id()));
    let ttl = Duration::from_secs(60);
    let Acquire::Acquired { epoch, .. } = lease::acquire(q, "GPU-1", &me, ttl).await.unwrap()
    else {
        panic!("a free GPU")
    };
    Fence {
        gpu: "GPU-1".into(),
        owner: id.into(),
        epoch,
    }
}

/// Whether the database's clock has passed job `job`'s run_after.
async fn due(q: &PgQueue, job: i64) -> bool {
    sqlx::query_scalar("SELECT run_after <= clock_timestamp() FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(q.pool())
        .await
        .unwrap()
}

fn retry(id: i64) -> Finished {
    ended(
        id,
        Outcome::Retry {
            class: "bad_output",
            error: "mood: not a string".into(),
            raw: Some("{\"mood\": 7}".into()),
            backoff_ms: 300,
        },
    )
}

fn crashed(id: i64) -> Finished {
    ended(
        id,
        Outcome::Requeue {
            class: "server_crash",
            error: "connection reset".into(),
            counts: true,
            poison_after: 2,
            backoff_ms: 0,
        },
    )
}

/// Every way a try ends, as on SQLite: a retry burns an attempt and waits
/// its backoff by the database's clock, and fails the job once attempts run
/// out, the raw answer kept; a fail is at once; a requeue burns no attempt
/// and counts toward poison; a release leaves no trace.
#[tokio::test]
async fn each_outcome_moves_the_job_as_the_sqlite_queue_does() {
    let pg = TestPg::new().await;
    let q = pg.queue().await;
    let pass = queued(&q, 4).await;
    let fence = leased(&q, "w").await;
    let ttl = Duration::from_secs(60);
    let claim_ids = || async {
        queue::claim(&q, &fence, pass, 4, ttl)
            .await
            .unwrap()
            .iter()
            .map(|c| (c.job_id, c.attempts))
            .collect::<Vec<_>>()
    };
    let ids: Vec<i64> = claim_ids().await.iter().map(|c| c.0).collect();
    let finished = [
        retry(ids[0]),
        ended(
            ids[1],
            Outcome::Fail {
                class: "bad_frame",
                error: "not an image".into(),
            },
        ),
        crashed(ids[2]),
        ended(ids[3], Outcome::Release),
    ];
    let round = claim_round(&q, &fence, &finished, pass, 0, ttl)
        .await
        .unwrap();
    assert_eq!(
        round.recorded,
        queue::Recorded {
            done: 0,
            retried: 1,
            failed: 1,
            requeued: 1,
            fenced: 0
        }
    );
    // The retried job waits its backoff, the failed one is gone; the
    // requeued and the released ones are claimable at once, with the
    // attempt they had (neither burnt one).
    assert_eq!(claim_ids().await, vec![(ids[2], 1), (ids[3], 1)]);
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM attempts WHERE outcome = 'retry' \
             AND raw_output = '{\"mood\": 7}' AND error_class = 'bad_output'"
        )
        .await,
        1
    );
    // The released job's try left no attempt behind; only its new one.
    let tries: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE job_id = $1")
        .bind(ids[3])
        .fetch_one(q.pool())
        .await
        .unwrap();
    assert_eq!(tries, 1);
    // The frame's second transient failure makes it poison.
    let round = claim_round(
        &q,
        &fence,
        &[crashed(ids[2]), done_with(ids[3])],
        pass,
        0,
        ttl,
    )
    .await
    .unwrap();
    assert_eq!((round.recorded.failed, round.recorded.done), (1, 1));
    // Retried to exhaustion: three attempts, then failed.
    for tries in 2..=3 {
        while !due(&q, ids[0]).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(claim_ids().await, vec![(ids[0], tries)]);
        claim_round(&q, &fence, &[retry(ids[0])], pass, 0, ttl)
            .await
            .unwrap();
    }
    assert_eq!(
        count(&q, "SELECT count(*) FROM jobs WHERE state = 'failed'").await,
        3,
        "the bad frame, the poison frame and the one retried to exhaustion"
    );
    // Each one's last try is `failed`, as SQLite spells it (a retry or a
    // requeue that ended its job included).
    assert_eq!(
        count(&q, "SELECT count(*) FROM attempts WHERE outcome = 'failed'").await,
        3
    );
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM attempts WHERE outcome IN ('fail', 'requeue')"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &q,
            "SELECT count(*) FROM attempts WHERE finished_at IS NULL"
        )
        .await,
        0
    );
}

/// A gpu-lock command waiting for a GPU stops that GPU's worker from
/// claiming (it is told to yield); another host's GPU is not affected; once
/// the command is done, the worker claims again.
#[tokio::test]
async fn a_waiting_gpu_lock_command_stops_claims_on_its_gpu_only() {
    let pg = TestPg::new().await;
    let q = pg.queue().await;
    let pass = queued(&q, 10).await;
    let ttl = Duration::from_secs(60);
    let fence = leased(&q, "w").await;
    let other = holder("w-b", "host-b", i64::from(std::process::id()));
    let Acquire::Acquired { epoch, .. } = lease::acquire(&q, "GPU-B", &other, ttl).await.unwrap()
    else {
        panic!("a free GPU")
    };
    let fence_b = Fence {
        gpu: "GPU-B".into(),
        owner: "w-b".into(),
        epoch,
    };
    let lock = Holder {
        purpose: "gpu-lock",
        ..holder("ffmpeg", "host", i64::from(std::process::id()))
    };
    lease::wait_for(&q, "GPU-1", &lock).await.unwrap();
    let round = claim_round(&q, &fence, &[], pass, 4, ttl).await.unwrap();
    assert!(round.gpu_wanted && round.claimed.is_empty(), "{round:?}");
    let round_b = claim_round(&q, &fence_b, &[], pass, 4, ttl).await.unwrap();
    assert!(
        !round_b.gpu_wanted && round_b.claimed.len() == 4,
        "{round_b:?}"
    );
    lease::stop_waiting(&q, "GPU-1", &lock).await.unwrap();
    let round = claim_round(&q, &fence, &[], pass, 4, ttl).await.unwrap();
    assert!(!round.gpu_wanted && round.claimed.len() == 4, "{round:?}");
}
