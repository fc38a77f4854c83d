//! `cinecut report`: the contact sheet of a film described end to end by
//! the real server, loaded in a real headless Chromium; where reports go,
//! and what a bad request says.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::util::browser::Browser;
use crate::util::{
    Env, FakeServer, assert_exit, llama_server, on_both, stderr, stdout, tiny_model,
};

/// A 4-second test film, one frame taken every half second: 8 frames.
fn film(env: &Env, name: &str) -> PathBuf {
    let out = env.path().join(name);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
        .args(["-i", "testsrc2=size=320x240:rate=25:duration=4"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .expect("ffmpeg not found: install it with `bash scripts/setup.sh`");
    assert!(status.success());
    out
}

/// A word that some described cards hold and others do not (never a word
/// the page itself prints on every card), with the cards that hold it.
fn telling_word(texts: &[(String, String)]) -> Option<(String, HashSet<String>)> {
    let page_words = "visual content mood action setting failed after attempts not yet described";
    let holding = |w: &str| -> HashSet<String> {
        texts
            .iter()
            .filter(|(_, t)| t.contains(w))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let mut candidates: Vec<String> = texts
        .iter()
        .flat_map(|(_, t)| t.split(|c: char| !c.is_alphabetic()))
        .filter(|w| w.chars().count() >= 3 && !page_words.contains(*w))
        .map(str::to_string)
        .collect();
    candidates.sort();
    candidates.dedup();
    candidates
        .into_iter()
        .map(|w| {
            let h = holding(&w);
            (w, h)
        })
        .filter(|(_, h)| !h.is_empty() && h.len() < texts.len())
        .max_by_key(|(w, h)| (h.len(), std::cmp::Reverse(w.clone())))
}

fn visible_cards(b: &mut Browser) -> HashSet<String> {
    let v = b.eval(
        "[...document.querySelectorAll('#cards > article')].filter(c => !c.hidden).map(c => c.id)",
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The browser test: one card per frame in time order, every
/// thumbnail decodes, the filter box hides what does not match (and dims
/// its timeline mark), one mark per frame, no network request; a frame
/// whose file vanished is a failed card with its reason; markup in a
/// description stays text.
#[test]
fn a_film_described_by_the_real_server_reads_in_a_real_browser() {
    let env = Env::new();
    let video = film(&env, "night walk.mp4");
    let o = env.run([
        "enqueue".as_ref(),
        video.as_os_str(),
        "--select".as_ref(),
        "interval".as_ref(),
        "--every".as_ref(),
        "0.5".as_ref(),
        // Every frame goes to the model (the lost one must fail).
        "--no-dedupe".as_ref(),
    ]);
    assert_exit(&o, 0);
    let n = env.count_now("SELECT count(*) FROM frames");
    assert_eq!(n, 8, "{}", stderr(&o));
    // A frame file lost before it was described: it fails, with its reason.
    let path: String = env.string_now("SELECT path FROM frames WHERE frame_index = 3");
    std::fs::remove_file(&path).unwrap();

    let (model, mmproj, _) = tiny_model();
    let mut w = env.cmd(["worker", "--until-empty", "--parallel", "2"]);
    w.arg("--model").arg(&model).arg("--mmproj").arg(&mmproj);
    w.arg("--server-bin").arg(llama_server());
    w.args(["--server-arg=-t", "--server-arg=1"]);
    let o = w.output().unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        env.count_now("SELECT count(*) FROM descriptions"),
        n - 1,
        "{}",
        stderr(&o)
    );
    assert_eq!(
        env.count_now("SELECT count(*) FROM jobs WHERE state = 'failed'"),
        1
    );
    // The thumbnail extraction wrote for frame 5 is gone: the report makes
    // one from the frame. Frame 6 lost both after it was described: its
    // card says so, with no picture.
    let thumb = |i: i64| {
        let frame = PathBuf::from(
            env.string_now(&format!("SELECT path FROM frames WHERE frame_index = {i}")),
        );
        (
            frame
                .parent()
                .unwrap()
                .join("thumbs")
                .join(frame.file_name().unwrap()),
            frame,
        )
    };
    let (thumb_5, _) = thumb(5);
    std::fs::remove_file(thumb_5).unwrap();
    let (thumb_6, frame_6) = thumb(6);
    std::fs::remove_file(thumb_6).unwrap();
    std::fs::remove_file(frame_6).unwrap();
    // What a model might say (or a hostile subtitle one day): shown, never run.
    env.execute_now(
        "UPDATE descriptions SET fields = json_set(fields, '$.mood', \
         '<img src=x onerror=\"window.pwned=1\"> eerie') \
         WHERE frame_id = (SELECT id FROM frames WHERE frame_index = 5)",
    );

    let out_dir = env.path().join("reports");
    let o = env.run(["report".as_ref(), "-o".as_ref(), out_dir.as_os_str()]);
    assert_exit(&o, 0);
    let report = PathBuf::from(stdout(&o).trim());
    assert_eq!(report, out_dir.join("night walk.html"), "{}", stderr(&o));
    let size = std::fs::metadata(&report).unwrap().len();

    let mut b = Browser::launch();
    b.open(&report);

    let ids = b.eval("[...document.querySelectorAll('#cards > article')].map(c => c.id)");
    let expected: Vec<Value> = (0..n).map(|i| json!(format!("f{i}"))).collect();
    assert_eq!(ids, json!(expected), "one card per frame, in time order");
    let times = b.eval("[...document.querySelectorAll('#cards time')].map(t => t.textContent)");
    let expected: Vec<Value> = (0..n)
        .map(|i| {
            let ms = env.count_now(&format!(
                "SELECT pts_ms FROM frames WHERE frame_index = {i}"
            ));
            json!(format!("00:00:{:02}.{:03}", ms / 1000, ms % 1000))
        })
        .collect();
    assert_eq!(times, json!(expected), "each card's time is its frame's");

    let widths = b.eval(
        "Promise.all([...document.querySelectorAll('#cards img')].map(i => { \
           i.loading = 'eager'; return i.decode().then(() => i.naturalWidth, () => 0); }))",
    );
    let widths: Vec<u64> = widths
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .collect();
    assert_eq!(
        widths.len() as i64,
        n - 1,
        "a thumbnail for every frame but #6"
    );
    assert!(
        widths.iter().all(|w| *w > 0),
        "every thumbnail decodes: {widths:?}"
    );
    assert_eq!(
        b.eval("document.querySelector('#f6 .nothumb').textContent.includes('does not exist')"),
        json!(true)
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#f6 dd').length"),
        json!(4)
    );

    let failed = b.eval("document.querySelector('#f3').className + ' | ' + document.querySelector('#f3').textContent");
    let failed = failed.as_str().unwrap();
    assert!(
        failed.contains("failed") && failed.contains("does not exist"),
        "{failed}"
    );
    assert_eq!(
        b.eval("document.querySelector('#f5 dl').textContent.includes('<img src=x')"),
        json!(true),
        "markup is shown as text"
    );
    assert_eq!(b.eval("typeof window.pwned"), json!("undefined"));
    assert_eq!(
        b.eval("document.querySelectorAll('#timeline > a').length"),
        json!(n),
        "one timeline mark per frame"
    );

    // Typing in the filter box: the cards that hold the word stay.
    let texts: Vec<(String, String)> = (0..n)
        .map(|i| {
            let text = b.eval(&format!(
                "document.querySelector('#f{i} dl, #f{i} .why').textContent.toLowerCase()"
            ));
            (format!("f{i}"), text.as_str().unwrap().to_string())
        })
        .collect();
    let (word, holding) =
        telling_word(&texts).unwrap_or_else(|| panic!("no word tells the cards apart: {texts:?}"));
    b.eval("document.getElementById('filter').focus()");
    b.type_text(&word.to_uppercase());
    assert_eq!(visible_cards(&mut b), holding, "filtered by {word:?}");
    let dimmed = b.eval("document.querySelectorAll('#timeline > a.off').length");
    assert_eq!(dimmed, json!(n as usize - holding.len()));
    assert_eq!(
        b.eval("document.getElementById('shown').textContent"),
        json!(format!("{} of {n} frames", holding.len()))
    );
    b.type_text(" zqxjv");
    assert!(visible_cards(&mut b).is_empty(), "every word must match");
    b.eval("const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'))");
    assert_eq!(visible_cards(&mut b).len() as i64, n);

    let shot = std::env::temp_dir().join(format!("cinecut-report-{}.png", std::process::id()));
    b.call("Page.reload", json!({}));
    b.wait_event("Page.loadEventFired", std::time::Duration::from_secs(60));
    b.screenshot(&shot);
    println!(
        "screenshot of the report: {} (report {} bytes for {n} frames)",
        shot.display(),
        size
    );

    let url = b.eval("location.href").as_str().unwrap().to_string();
    let urls = b.requested_urls();
    assert!(!urls.is_empty(), "the network domain saw the page load");
    for u in &urls {
        assert!(
            u == &url || u.starts_with("data:"),
            "the page asked for {u}: it must make no network request"
        );
    }
    // The Content Security Policy forbids every fetch: a script's request
    // and an image's, to a listener on this host, never reach it (asked
    // last: the network domain reports a blocked request too).
    // (It answers 404 at once, so that without the policy the page's
    // requests end, and counts them.)
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/x",
        listener.local_addr().unwrap().port()
    );
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reached.clone();
    std::thread::spawn(move || {
        use std::io::Write;
        for mut conn in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let fetched = b.eval(&format!(
        "fetch('{url}').then(() => 'fetched', e => 'refused: ' + e.message)"
    ));
    assert!(
        fetched.as_str().unwrap().starts_with("refused"),
        "{fetched}"
    );
    let image = b.eval(&format!(
        "new Promise(done => {{ const i = new Image(); i.onload = () => done('loaded'); \
         i.onerror = () => done('refused'); i.src = '{url}.png'; }})"
    ));
    assert_eq!(image, json!("refused"));
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the policy let a request out"
    );
}

on_both!(reports_go_where_asked_and_bad_requests_say_why);

/// `-o FILE` for one film, a folder for several; `--open` hands each file
/// to xdg-open; the strip field shows in the legend; unknown films and
/// empty databases are clear errors.
fn reports_go_where_asked_and_bad_requests_say_why(env: &Env) {
    // A database with nothing in it (SQLite: made by a worker, as a report
    // on a file that does not exist is an error of its own).
    let fake = FakeServer::start(env, &[]);
    let o = env.run(["worker", "--server-url", &fake.url(), "--until-empty"]);
    assert_exit(&o, 0);
    let o = env.run(["report"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("no films yet"), "{}", stderr(&o));

    env.enqueue_images("first", 3, &[]);
    env.enqueue_images("second", 2, &[]);
    assert_exit(
        &env.run(["worker", "--server-url", &fake.url(), "--until-empty"]),
        0,
    );

    let o = env.run(["report", "--film", "nope"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));

    let one = env.path().join("one.html");
    let o = env.run([
        "report".as_ref(),
        "--film".as_ref(),
        "second".as_ref(),
        "--strip".as_ref(),
        "setting".as_ref(),
        "-o".as_ref(),
        one.as_os_str(),
    ]);
    assert_exit(&o, 0);
    let html = std::fs::read_to_string(&one).unwrap();
    assert_eq!(html.matches("<article ").count(), 2);
    assert!(html.contains("Timeline by setting:"), "--strip setting");
    assert!(html.contains("a small room at night"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&one).unwrap().permissions());
    assert_eq!(
        mode & 0o044,
        0o044,
        "readable by others, as files people share are: {mode:o}"
    );

    // Several films: a folder (made), one file per title; xdg-open gets each.
    let bin = env.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let opened = env.path().join("opened.txt");
    let script = bin.join("xdg-open");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let folder = env.path().join("all");
    let mut c = env.cmd([
        "report".as_ref(),
        "--open".as_ref(),
        "-o".as_ref(),
        folder.as_os_str(),
    ]);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    c.env("PATH", path);
    let o = c.output().unwrap();
    assert_exit(&o, 0);
    let written: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    let expected = [folder.join("first.html"), folder.join("second.html")];
    assert_eq!(
        written,
        expected
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
    );
    assert!(expected.iter().all(|p| p.is_file()));
    crate::util::wait_until(
        "xdg-open to run twice",
        std::time::Duration::from_secs(10),
        || std::fs::read_to_string(&opened).is_ok_and(|s| s.lines().count() == 2),
    );
    let opened = std::fs::read_to_string(&opened).unwrap();
    for p in &expected {
        assert!(opened.contains(&p.display().to_string()), "{opened}");
    }
    assert!(
        !std::fs::read_dir(&folder).unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with(".cinecut-report")),
        "no temporary file left behind"
    );
}
