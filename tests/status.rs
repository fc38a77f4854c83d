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
