//! Dialogue: a film's own subtitle stream or a subtitle file becomes its
//! `subtitles` rows, `frame_dialogue` puts each frame next to its line,
//! `search` and `report` show the lines; bad subtitle input is a clear
//! error that writes nothing.

use std::path::{Path, PathBuf};

use crate::util::{Env, assert_exit, ffmpeg, on_both, stderr, stdout};

/// A 15-second film; with `subtitles`, muxed in as its text subtitle stream.
fn film(env: &Env, name: &str, subtitles: Option<&Path>) -> PathBuf {
    let plain = env.path().join(format!("{name}-plain.mkv"));
    ffmpeg(&[
        "-f".as_ref(),
        "lavfi".as_ref(),
        "-i".as_ref(),
        "testsrc2=size=160x120:rate=10:duration=15".as_ref(),
        "-c:v".as_ref(),
        "libx264".as_ref(),
        plain.as_os_str(),
    ]);
    let Some(subs) = subtitles else { return plain };
    let out = env.path().join(format!("{name}.mkv"));
    mux(&plain, subs, "srt", &out);
    out
}

/// `video` with `subs` as its subtitle stream in `codec`, into `out`.
fn mux(video: &Path, subs: &Path, codec: &str, out: &Path) {
    ffmpeg(&[
        "-i".as_ref(),
        video.as_os_str(),
        "-i".as_ref(),
        subs.as_os_str(),
        "-map".as_ref(),
        "0:v".as_ref(),
        "-map".as_ref(),
        "1".as_ref(),
        "-c:v".as_ref(),
        "copy".as_ref(),
        "-c:s".as_ref(),
        codec.as_ref(),
        out.as_os_str(),
    ]);
}

const SRT: &str = "1\n00:00:01,000 --> 00:00:03,000\n<i>Where were you</i>\nlast night?\n\n\
                   2\n00:00:10,000 --> 00:00:12,500\n{\\an8}At the <b>lighthouse</b>.\n";

fn dialogue(env: &Env) -> Vec<(i64, i64, String)> {
    env.rows_now("SELECT start_ms, end_ms, text FROM subtitles ORDER BY line_index")
        .iter()
        .map(|r| {
            let n = |c: &str| r[c].as_i64().unwrap();
            (
                n("start_ms"),
                n("end_ms"),
                r["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

on_both!(a_films_own_subtitle_stream_becomes_its_dialogue);

fn a_films_own_subtitle_stream_becomes_its_dialogue(env: &Env) {
    let srt = env.path().join("lines.srt");
    std::fs::write(&srt, SRT).unwrap();
    let video = film(env, "night", Some(&srt));
    let enqueue = || {
        env.run([
            "enqueue".as_ref(),
            video.as_os_str(),
            "--select".as_ref(),
            "interval".as_ref(),
            "--every".as_ref(),
            "1".as_ref(),
        ])
    };
    let o = enqueue();
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("2 subtitle lines"), "{}", stdout(&o));
    let dialogue = || {
        env.strings_now(
            "SELECT start_ms || '|' || end_ms || '|' || text FROM subtitles ORDER BY line_index",
        )
    };
    assert_eq!(
        dialogue(),
        [
            "1000|3000|Where were you\nlast night?",
            "10000|12500|At the lighthouse."
        ],
        "markup stripped, times kept"
    );
    // (line, previous line, next line) of the frame at `ms`.
    let at = |ms: i64| {
        env.strings_now(&format!(
            "SELECT coalesce(line, '-') || ' / ' || coalesce(previous_line, '-') || ' / ' \
             || coalesce(next_line, '-') FROM frame_dialogue WHERE pts_ms = {ms}"
        ))
        .join(",")
        .replace('\n', " ")
    };
    let (first, second) = ("Where were you last night?", "At the lighthouse.");
    assert_eq!(at(0), format!("- / - / {first}"));
    assert_eq!(at(2000), format!("{first} / - / {second}"));
    assert_eq!(at(5000), format!("- / {first} / {second}"));
    assert_eq!(at(11_000), format!("{second} / {first} / -"));
    assert_eq!(at(14_000), format!("- / {second} / -"));

    // Search covers the dialogue, with the frame on screen.
    let o = env.run(["search", "lighthouse"]);
    assert_exit(&o, 0);
    let hit = stdout(&o);
    let frame = env
        .strings_now("SELECT path FROM frames WHERE pts_ms = 10000")
        .join(",");
    assert!(
        hit.contains("00:00:10.000")
            && hit.contains(&frame)
            && hit.contains("dialogue: At the lighthouse."),
        "{hit}"
    );

    // The report shows each frame's line.
    let report = env.path().join("night.html");
    assert_exit(
        &env.run(["report".as_ref(), "-o".as_ref(), report.as_os_str()]),
        0,
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert_eq!(
        html.matches("<q class=\"line\">At the lighthouse.</q>")
            .count(),
        3,
        "the frames at 10, 11 and 12 s"
    );

    // Enqueued again: nothing new, the dialogue as it was.
    let o = enqueue();
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("0 new"), "{}", stdout(&o));
    assert_eq!(dialogue().len(), 2);
}

on_both!(subtitle_files_in_other_formats_replace_the_dialogue);

fn subtitle_files_in_other_formats_replace_the_dialogue(env: &Env) {
    let video = film(env, "plain", None);
    let o = env.run(["enqueue".as_ref(), video.as_os_str()]);
    assert_exit(&o, 0);
    assert!(
        dialogue(env).is_empty(),
        "a film without subtitles has none"
    );

    let vtt = env.path().join("lines.vtt");
    std::fs::write(
        &vtt,
        "WEBVTT\n\n00:00:02.000 --> 00:00:04.000\n<v Anna>Keep <i>walking</i>.\n\n\
         00:00:05.500 --> 00:00:06.000\nDon't look back.\n",
    )
    .unwrap();
    let o = env.run([
        "enqueue".as_ref(),
        video.as_os_str(),
        "--subtitles".as_ref(),
        vtt.as_os_str(),
    ]);
    assert_exit(&o, 0);
    assert_eq!(
        dialogue(env),
        vec![
            (2000, 4000, "Keep walking.".to_string()),
            (5500, 6000, "Don't look back.".to_string()),
        ]
    );

    let ass = env.path().join("lines.ass");
    std::fs::write(
        &ass,
        "[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\n\
         Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n\
         Style: Default,Arial,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,2,0,2,10,10,10,1\n\n\
         [Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n\
         Dialogue: 0,0:00:07.25,0:00:09.00,Default,,0,0,0,,{\\i1}The tide{\\i0} is coming in.\\NRun!\n",
    )
    .unwrap();
    let o = env.run([
        "enqueue".as_ref(),
        video.as_os_str(),
        "--subtitles".as_ref(),
        ass.as_os_str(),
    ]);
    assert_exit(&o, 0);
    assert_eq!(
        dialogue(env),
        vec![(7250, 9000, "The tide is coming in.\nRun!".to_string())],
        "replaced, not added to"
    );
    let o = env.run(["search", "tide"]);
    assert!(
        stdout(&o).contains("dialogue: The tide is coming in. Run!"),
        "{}",
        stdout(&o)
    );
}

on_both!(bad_subtitle_input_is_a_clear_error_and_writes_nothing);

fn bad_subtitle_input_is_a_clear_error_and_writes_nothing(env: &Env) {
    let srt = env.path().join("lines.srt");
    std::fs::write(&srt, SRT).unwrap();
    let video = film(env, "night", Some(&srt));
    let films = || env.count_now("SELECT count(*) FROM films");

    // Each is exit 1 with a message that says why, and writes nothing.
    let refused = |flag: &str, value: &std::ffi::OsStr, says: &str| {
        let o = env.run(["enqueue".as_ref(), video.as_os_str(), flag.as_ref(), value]);
        assert_exit(&o, 1);
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        assert_eq!(films(), 0, "{says}: nothing written");
    };
    let missing = env.path().join("missing.srt");
    refused(
        "--subtitles",
        missing.as_os_str(),
        "missing.srt does not exist",
    );

    let notes = env.path().join("notes.srt");
    std::fs::write(&notes, "these are my notes, not subtitles\n").unwrap();
    refused("--subtitles", notes.as_os_str(), "notes.srt");

    // A timestamp that does not parse, one that ends before it starts, a
    // file in another encoding (Latin-1 "é" on line 7): each names its line.
    for (name, bytes, says) in [
        (
            "bad-time.srt",
            b"1\n00:00:01,000 --> 00:00:03,000\nHello.\n\n2\n00:00:04,000 --> 00:0O:05,000\nAgain.\n".to_vec(),
            "line 6: bad timestamp \"00:00:04,000 --> 00:0O:05,000\"",
        ),
        (
            "backwards.srt",
            b"1\n00:00:09,000 --> 00:00:03,000\nHello.\n".to_vec(),
            "line 2: the line ends before it starts",
        ),
        (
            "latin1.srt",
            b"1\n00:00:01,000 --> 00:00:03,000\nHello.\n\n2\n00:00:04,000 --> 00:00:05,000\nCaf\xe9?\n".to_vec(),
            "line 7 is not UTF-8 text",
        ),
    ] {
        let file = env.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let says = format!("subtitle file {}: {says}", file.display());
        refused("--subtitles", file.as_os_str(), &says);
    }

    refused(
        "--subtitle-stream",
        "3".as_ref(),
        "--subtitle-stream 3: the film has 1 subtitle stream(s)",
    );

    let o = env.run([
        "enqueue".as_ref(),
        video.as_os_str(),
        "--subtitles".as_ref(),
        srt.as_os_str(),
        "--no-subtitles".as_ref(),
    ]);
    assert_exit(&o, 2);

    let o = env.run([
        "enqueue".as_ref(),
        video.as_os_str(),
        "--no-subtitles".as_ref(),
    ]);
    assert_exit(&o, 0);
    assert!(dialogue(env).is_empty(), "--no-subtitles reads none");
    assert_eq!(films(), 1);
}

on_both!(the_line_on_screen_goes_to_the_model_as_context);

/// `--dialogue-context`: the frames with a line on screen are sent with it
/// (and stored as prompt_version 2); the others with the plain prompt.
fn the_line_on_screen_goes_to_the_model_as_context(env: &Env) {
    let srt = env.path().join("lines.srt");
    std::fs::write(&srt, SRT).unwrap();
    let video = film(env, "night", Some(&srt));
    assert_exit(
        &env.run([
            "enqueue".as_ref(),
            video.as_os_str(),
            "--select".as_ref(),
            "interval".as_ref(),
            "--every".as_ref(),
            "1".as_ref(),
        ]),
        0,
    );
    let record = env.path().join("requests.jsonl");
    let fake = crate::util::FakeServer::start(env, &["--record", record.to_str().unwrap()]);
    let o = env
        .cmd([
            "worker",
            "--server-url",
            &fake.url(),
            "--until-empty",
            "--dialogue-context",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let with_line = env.count_now("SELECT count(*) FROM frame_dialogue WHERE line IS NOT NULL");
    let frames = env.count_now("SELECT count(*) FROM frames");
    assert_eq!((with_line, frames), (6, 15), "1-3 s and 10-12.5 s");
    let mut sent: Vec<String> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["messages"][1]["content"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .filter_map(|t| {
            t.split_once("(describe only what the frame shows): ")
                .map(|(_, l)| l.to_string())
        })
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            "\"At the lighthouse.\"",
            "\"At the lighthouse.\"",
            "\"At the lighthouse.\"",
            "\"Where were you last night?\"",
            "\"Where were you last night?\"",
            "\"Where were you last night?\"",
        ]
    );
}

on_both!(scene_mode_takes_a_frame_for_each_line_its_shot_frame_misses);

/// Scene mode takes a frame at the midpoint of each line that no picked
/// frame of its shot shows (a 20-second shot has its middle at 10 s), and
/// the frame↔line view puts the line next to it.
fn scene_mode_takes_a_frame_for_each_line_its_shot_frame_misses(env: &Env) {
    let plain = env.path().join("one-shot.mkv");
    ffmpeg(&[
        "-f".as_ref(),
        "lavfi".as_ref(),
        "-i".as_ref(),
        "testsrc2=size=160x120:rate=10:duration=20".as_ref(),
        "-c:v".as_ref(),
        "libx264".as_ref(),
        plain.as_os_str(),
    ]);
    let srt = env.path().join("lines.srt");
    std::fs::write(
        &srt,
        "1\n00:00:01,000 --> 00:00:03,000\nWho's there?\n\n\
         2\n00:00:09,000 --> 00:00:11,000\nOnly the wind.\n\n\
         3\n00:00:15,000 --> 00:00:17,000\nThen why is the door open?\n",
    )
    .unwrap();
    let o = env.run([
        "enqueue".as_ref(),
        plain.as_os_str(),
        "--subtitles".as_ref(),
        srt.as_os_str(),
        "--max-gap".as_ref(),
        "30".as_ref(),
    ]);
    assert_exit(&o, 0);
    let rows: Vec<(i64, i64, Option<String>)> = env
        .rows_now("SELECT frame_index, pts_ms, line FROM frame_dialogue ORDER BY frame_index")
        .iter()
        .map(|r| {
            let n = |c: &str| r[c].as_i64().unwrap();
            let line = r["line"].as_str().map(str::to_string);
            (n("frame_index"), n("pts_ms"), line)
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (0, 2000, Some("Who's there?".to_string())),
            (1, 10_000, Some("Only the wind.".to_string())),
            (2, 16_000, Some("Then why is the door open?".to_string())),
        ],
        "the shot's middle (10 s) shows line 2; lines 1 and 3 get their midpoints"
    );
    assert_eq!(
        env.count_now("SELECT count(DISTINCT shot_id) FROM frames"),
        1
    );
}

on_both!(utf16_files_mov_text_in_mp4_and_the_json_summary_give_the_dialogue);

/// Promises of README's dialogue and `--json` lines: a subtitle file in
/// UTF-16 with its mark (little- and big-endian) reads as UTF-8 would; a
/// film's own mov_text stream in MP4 is its dialogue; `enqueue --json`
/// gives each film's `dialogue_lines` and the run's `seconds`.
fn utf16_files_mov_text_in_mp4_and_the_json_summary_give_the_dialogue(env: &Env) {
    let want = vec![
        (1000, 3000, "Where were you\nlast night?".to_string()),
        (10_000, 12_500, "At the lighthouse.".to_string()),
    ];
    let video = film(env, "plain", None);
    let text: Vec<u16> = SRT.encode_utf16().collect();
    let le: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain(text.iter().flat_map(|c| c.to_le_bytes()))
        .collect();
    let be: Vec<u8> = [0xfe, 0xff]
        .into_iter()
        .chain(text.iter().flat_map(|c| c.to_be_bytes()))
        .collect();
    for (name, bytes) in [("le.srt", le), ("be.srt", be)] {
        let file = env.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let o = env.run([
            "enqueue".as_ref(),
            video.as_os_str(),
            "--subtitles".as_ref(),
            file.as_os_str(),
            "--json".as_ref(),
        ]);
        assert_exit(&o, 0);
        assert_eq!(dialogue(env), want, "{name}: {}", stderr(&o));
        let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(summary["films"][0]["dialogue_lines"], 2, "{summary}");
        let seconds = summary["seconds"].as_f64().expect("seconds, a number");
        assert!(seconds >= 0.0, "{summary}");
    }

    // mov_text, MP4's own text subtitles, muxed from the SRT.
    let srt = env.path().join("lines.srt");
    std::fs::write(&srt, SRT).unwrap();
    let mp4 = env.path().join("with text.mp4");
    mux(&video, &srt, "mov_text", &mp4);
    let o = env.run(["enqueue".as_ref(), mp4.as_os_str(), "--json".as_ref()]);
    assert_exit(&o, 0);
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let film = summary["films"][0]["film_id"].as_i64().unwrap();
    assert_eq!(summary["films"][0]["dialogue_lines"], 2, "{summary}");
    let lines = env.rows_now(&format!(
        "SELECT start_ms, end_ms, text FROM subtitles WHERE film_id = {film} ORDER BY line_index"
    ));
    let got: Vec<(i64, i64, String)> = lines
        .iter()
        .map(|r| {
            (
                r["start_ms"].as_i64().unwrap(),
                r["end_ms"].as_i64().unwrap(),
                r["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, want, "the MP4's own mov_text stream");
}
