//! `status`, `retry --failed` and `cancel`.

use crate::util::{Env, assert_exit, on_both, stdout};

async fn fail_some(env: &Env, n: i64, reason: &str) {
    // As a worker leaves them: attempts spent, then failed.
    env.execute_now(&format!(
        "UPDATE jobs SET state = 'failed', attempts = max_attempts, transient_failures = 1, \
         last_error = '{reason}' \
         WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT {n})"
    ));
}

on_both!(async status_counts_states_and_failure_reasons_per_film);

async fn status_counts_states_and_failure_reasons_per_film(env: &Env) {
    let a = env.frames("alpha", 10);
    let b = env.frames("beta", 4);
    assert_exit(
        &env.run(["enqueue".as_ref(), a.as_os_str(), b.as_os_str()]),
        0,
    );
    fail_some(env, 3, "frame is not a decodable image").await;
    fail_some(env, 1, "model answered garbage").await;

    let o = env.run(["status", "--json"]);
    assert_exit(&o, 0);
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let alpha = &s["films"][0];
    assert_eq!(alpha["title"], "alpha");
    assert_eq!(alpha["total"], 10);
    assert_eq!(alpha["failed"], 4);
    assert_eq!(alpha["queued"], 6);
    assert_eq!(
        alpha["top_failures"][0]["reason"],
        "frame is not a decodable image"
    );
    assert_eq!(alpha["top_failures"][0]["count"], 3);
    assert_eq!(s["films"][1]["queued"], 4);
    assert_eq!(s["totals"]["total"], 14);
    assert_eq!(s["totals"]["failed"], 4);
    assert!(alpha["oldest_queued_at"].as_i64().unwrap() > 0);

    let text = stdout(&env.run(["status"]));
    assert!(
        text.contains("alpha") && text.contains("3 failed: frame is not a decodable image"),
        "{text}"
    );
    assert!(text.contains("GPU leases: none held"), "{text}");
    let plain: Vec<&str> = text.lines().next().unwrap().split('\t').collect();
    assert_eq!(plain[0], "FILM", "plain lines on a pipe: {text}");
    assert_eq!(plain.len(), 9);
    // On a person's terminal 90 columns wide: every film line fits.
    let (table, status) = crate::util::on_terminal(&mut env.cmd(["status"]), 90);
    assert!(status.success());
    let films: Vec<&str> = table
        .lines()
        .take_while(|l| !l.starts_with("GPU leases"))
        .collect();
    assert!(films.len() >= 4, "{table}");
    for line in films {
        assert!(
            unicode_width::UnicodeWidthStr::width(line) <= 90,
            "fits 90 columns: {line:?}\n{table}"
        );
    }
    assert!(
        table.contains("3 failed: frame is not a decodable image"),
        "{table}"
    );

    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'failed' AND attempts > 0")
            .await,
        4,
        "failed jobs carry their attempts, which retry must reset"
    );
    let o = env.run(["retry", "--failed", "--film", "alpha"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("requeued 4 failed job(s)"));
    assert_eq!(
        env.count("SELECT count(*) FROM jobs WHERE state = 'queued' AND attempts = 0 AND transient_failures = 0")
            .await,
        14
    );

    // The counts follow the jobs back out of `failed` (status keeps them
    // beside the job count, not by counting rows).
    let s: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(["status", "--json", "--film", "alpha"]))).unwrap();
    assert_eq!(s["films"][0]["failed"], 0);
    assert_eq!(s["films"][0]["queued"], 10);
    env.execute_now(
        "UPDATE jobs SET state = 'done' WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 2)",
    );
    let s: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(["status", "--json", "--film", "alpha"]))).unwrap();
    assert_eq!(s["films"][0]["done"], 2);
    assert_eq!(s["films"][0]["queued"], 8);

    let o = env.run(["cancel", "--film", "beta"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("cancelled 4 queued job(s)"));
    let s: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(["status", "--json", "--film", "beta"]))).unwrap();
    assert_eq!(s["films"].as_array().unwrap().len(), 1);
    assert_eq!(s["films"][0]["cancelled"], 4);
    assert_eq!(s["films"][0]["queued"], 0);
}

on_both!(an_unknown_film_is_a_clear_error);

fn an_unknown_film_is_a_clear_error(env: &Env) {
    env.enqueue_images("known", 1, &[]);
    let o = env.run(["cancel", "--film", "nope"]);
    assert_exit(&o, 1);
    assert!(crate::util::stderr(&o).contains("no film titled \"nope\""));
    assert_exit(&env.run(["retry"]), 2);
}

on_both!(workers_gone_for_more_than_a_day_are_counted_and_listed_on_request);

/// A crash test or a busy farm leaves many stopped workers behind: those gone
/// more than a day (stopped, or silent without a stop) are one line.
fn workers_gone_for_more_than_a_day_are_counted_and_listed_on_request(env: &Env) {
    env.make_db();
    let pg = env.backend() == crate::util::Backend::Postgres;
    let ago = |hours: i64| {
        if pg {
            format!("clock_timestamp() - interval '{hours} hours'")
        } else {
            format!("(CAST(unixepoch('subsec') * 1000 AS INTEGER) - {hours} * 3600000)")
        }
    };
    for (id, started, beat, stopped) in [
        ("w-stopped-old", ago(50), ago(49), Some(ago(48))),
        ("w-silent-old", ago(50), ago(30), None),
        ("w-stopped-recent", ago(3), ago(2), Some(ago(2))),
        ("w-running", ago(1), ago(0), None),
    ] {
        let stopped = stopped.unwrap_or_else(|| "NULL".into());
        env.execute_now(&format!(
            "INSERT INTO workers (id, pid, host, gpu, started_at, heartbeat_at, stopped_at, state) \
             VALUES ('{id}', 1, 'h', 'gpu0', {started}, {beat}, {stopped}, 'stopped')"
        ));
    }
    let text = stdout(&env.run(["status"]));
    assert!(text.contains("worker w-stopped-recent "), "{text}");
    assert!(text.contains("worker w-running "), "{text}");
    assert!(!text.contains("-old"), "{text}");
    assert!(
        text.contains("2 worker(s) gone for more than a day (status --workers all lists them)"),
        "{text}"
    );
    let s: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(["status", "--json"]))).unwrap();
    assert_eq!(s["workers"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["workers_gone_before_a_day"], 2);

    let all = stdout(&env.run(["status", "--workers", "all"]));
    for id in [
        "w-stopped-old",
        "w-silent-old",
        "w-stopped-recent",
        "w-running",
    ] {
        assert!(all.contains(&format!("worker {id} ")), "{all}");
    }
    assert!(!all.contains("gone for more than a day"), "{all}");
}
