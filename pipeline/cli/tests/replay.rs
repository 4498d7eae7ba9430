//! `distill-watch replay` on the real broker: a live run, then replays of a
//! range of it into a topic, JSON lines and Parquet, compared record by
//! record, byte for byte, with what the live run emitted for the same
//! windows.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use distill_watch::replay::score_json;
use distill_watch_traffic::Scenario;
use integration_tests::unique_name;

/// A live score record: its sort key in the replay's order, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Scored {
    order: (i64, i64, Vec<u8>, i64),
    key: Vec<u8>,
    value: Vec<u8>,
}

fn scored(key: Vec<u8>, value: Vec<u8>) -> (Scored, serde_json::Value) {
    let json: serde_json::Value = serde_json::from_str(&score_json(&value).unwrap()).unwrap();
    let n = |f: &str| json[f].as_i64().unwrap_or_else(|| panic!("{f} in {json}"));
    let order = (
        n("window_end"),
        n("window_start"),
        key.clone(),
        n("revision"),
    );
    (Scored { order, key, value }, json)
}

/// The records of `topic` (account scores only, not member scores) whose
/// window lies in [from, to], in the replay's order.
fn in_range(topic: &str, from: i64, to: i64) -> Vec<Scored> {
    let mut v: Vec<Scored> = committed_records(topic)
        .into_iter()
        .map(|(k, v, _)| scored(k, v))
        .filter(|(_, j)| {
            j["cluster_id"].is_null()
                && j["window_start"].as_i64().unwrap() >= from
                && j["window_end"].as_i64().unwrap() <= to
        })
        .map(|(s, _)| s)
        .collect();
    v.sort();
    v
}

/// `distill-watch --config CONFIG replay ARGS` with `envs`, output piped.
fn replay(config: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    command(config, "replay", args, envs)
}

/// `distill-watch --config CONFIG NAME ARGS`, which must succeed.
fn command(config: &Path, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_distill-watch"))
        .arg("--config")
        .arg(config)
        .arg(name)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("running distill-watch");
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The same on a pseudo-terminal (`script`), as a person at a terminal runs
/// it: what the terminal showed.
fn replay_on_a_terminal(config: &Path, args: &[&str]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut cmd = vec![
        quote(env!("CARGO_BIN_EXE_distill-watch")),
        "--config".into(),
        quote(&config.display().to_string()),
        "replay".into(),
    ];
    cmd.extend(args.iter().map(|a| quote(a)));
    let out = Command::new("script")
        .args(["-qec", &cmd.join(" "), "/dev/null"])
        .env("TERM", "xterm-256color")
        .output()
        .expect("running script(1)");
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "replay on a terminal failed:\n{shown}"
    );
    shown
}

/// Live run of `names` to its end with `envs`, its scores topic read.
fn live_run(names: &Names, envs: &[(&str, &str)]) -> PathBuf {
    let config = names.config_file("live", &[]);
    Worker::spawn(names, "live", &config, "info", &["--exit-at-eof"], envs)
        .finish(Duration::from_secs(600));
    config
}

/// The `ci` scenario with `seed` on fresh topics, scored by a live run
/// with `envs`: the names, the run's config, the first window start and
/// last window end it scored, and the traffic.
fn scored_live(
    prefix: &str,
    seed: u64,
    envs: &[(&str, &str)],
) -> (Names, PathBuf, (i64, i64), distill_watch_traffic::Traffic) {
    let traffic = distill_watch_traffic::generate(&Scenario::builtin("ci").unwrap(), seed, 0.3);
    let names = Names::new(prefix);
    names.create_inputs();
    names.create_outputs();
    write(&traffic, &names);
    let config = live_run(&names, envs);
    let records = in_range(&names.scores, i64::MIN, i64::MAX);
    let first = records.iter().map(|s| s.order.1).min().unwrap();
    let last = records.iter().map(|s| s.order.0).max().unwrap();
    (names, config, (first, last), traffic)
}

#[test]
fn a_replayed_range_is_byte_identical_to_the_live_records_in_a_topic_json_lines_and_parquet() {
    let (names, config, (first, last), _) = scored_live("replay", 5, &[]);
    // An hour and a half in the middle, between window boundaries: the
    // windows inside it, revisions included.
    let from = first + 3_600_000 + 60_000;
    let to = from + 90 * 60_000;
    assert!(to < last, "the range lies inside the traffic");
    let live = in_range(&names.scores, from, to);
    assert!(live.len() > 150, "{} live records in range", live.len());
    assert!(
        live.iter().any(|s| s.order.3 > 0),
        "the range holds revisions (late events within the lateness)"
    );
    let (from_s, to_s) = (from.to_string(), to.to_string());

    // Into a topic, output piped: no progress bar.
    let topic = unique_name("replayed");
    let out = replay(
        &config,
        &["--from", &from_s, "--to", &to_s, "--topic", &topic],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replay done"), "{stderr}");
    for bar in ["ETA", "\r", "\x1b["] {
        assert!(
            !stderr.contains(bar),
            "a bar's {bar:?} in piped output:\n{stderr}"
        );
    }
    let replayed = in_range(&topic, i64::MIN, i64::MAX);
    assert_eq!(replayed.len(), live.len(), "{stderr}");
    assert!(
        replayed == live,
        "replayed records differ from the live ones"
    );

    // A live topic is refused.
    let refused = Command::new(env!("CARGO_BIN_EXE_distill-watch"))
        .arg("--config")
        .arg(&config)
        .args(["replay", "--from", &from_s, "--topic", &names.scores])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("live scores topic"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // JSON lines on a terminal: a progress bar, and the same records as
    // lines, in the same order.
    let dir = std::env::temp_dir().join(unique_name("replay-out"));
    std::fs::create_dir_all(&dir).unwrap();
    let jsonl = dir.join("range.jsonl");
    let to_file = |path: &Path| {
        let path = path.display().to_string();
        ["--from", &from_s, "--to", &to_s, "--out", &path].map(str::to_string)
    };
    let mut args: Vec<String> = to_file(&jsonl).into();
    // Slow enough for the bar to be drawn several times.
    args.extend(["--max-rate".into(), "15000".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shown = replay_on_a_terminal(&config, &args);
    assert!(
        shown.contains("messages, ETA") && shown.contains('\r'),
        "no progress bar on the terminal:\n{shown}"
    );
    // It moves: several positions drawn ("read/total messages").
    let positions: std::collections::BTreeSet<&str> = shown
        .split(" messages, ETA")
        .filter_map(|before| before.rsplit(' ').next()?.split('/').next())
        .collect();
    assert!(
        positions.len() >= 3,
        "the bar did not move: {positions:?}\n{shown}"
    );
    assert!(shown.contains("replay done"), "{shown}");
    let expected: String = live
        .iter()
        .map(|s| score_json(&s.value).unwrap() + "\n")
        .collect();
    let lines = std::fs::read_to_string(&jsonl).unwrap();
    assert!(
        lines == expected,
        "the JSON lines differ from the live records"
    );

    // Parquet: the same rows, in the same order.
    let parquet = dir.join("range.parquet");
    let args = to_file(&parquet);
    replay(&config, &args.each_ref().map(String::as_str), &[]);
    let rows = read_parquet(&parquet);
    let want: Vec<(String, i64, i64, f64)> = live
        .iter()
        .map(|s| {
            let j: serde_json::Value =
                serde_json::from_str(&score_json(&s.value).unwrap()).unwrap();
            (
                j["account_id"].as_str().unwrap().to_string(),
                j["window_end"].as_i64().unwrap(),
                j["revision"].as_i64().unwrap(),
                j["score"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), want.len());
    assert!(
        rows == want,
        "the Parquet rows differ from the live records"
    );
}

/// (account, window end, revision, score) of every row of a Parquet file.
fn read_parquet(path: &Path) -> Vec<(String, i64, i64, f64)> {
    use arrow::array::{AsArray, RecordBatchReader};
    use arrow::datatypes::{Float64Type, Int32Type, TimestampMillisecondType};
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    assert!(reader.schema().field_with_name("reasons").is_ok());
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let acc = b.column_by_name("account_id").unwrap().as_string::<i32>();
        let end = b
            .column_by_name("window_end")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let rev = b
            .column_by_name("revision")
            .unwrap()
            .as_primitive::<Int32Type>();
        let score = b
            .column_by_name("score")
            .unwrap()
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            out.push((
                acc.value(i).to_string(),
                end.value(i),
                i64::from(rev.value(i)),
                score.value(i),
            ));
        }
    }
    out
}

/// A jobs directory of the repository's jobs over raw events only (no
/// roll-ups: their history is short) and the scoring rules over their
/// features.
fn base_jobs() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(unique_name("base-jobs"));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo().join("jobs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql") {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains("\n-- input: events") {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let empty = dir.join("empty.toml");
    std::fs::write(
        &empty,
        "model_version = \"probe\"\ntop_reasons = 4\nrule = []\n[levels]\nelevated = 0.3\nhigh = 0.6\ncritical = 0.8\n",
    )
    .unwrap();
    let features =
        integration_tests::block_on(distill_watch::process::Detector::load(&dir, &empty, 60_000))
            .unwrap()
            .features;
    let mut model: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("jobs/scoring.toml")).unwrap())
            .unwrap();
    let rules = model["rule"].as_array().unwrap().clone();
    let kept: Vec<toml::Value> = rules
        .into_iter()
        .filter(|r| {
            features
                .iter()
                .any(|f| Some(f.as_str()) == r["feature"].as_str())
        })
        .collect();
    assert!(kept.len() >= 5, "{kept:?}");
    model.insert("rule".into(), toml::Value::Array(kept));
    model.insert("model_version".into(), "base-only".into());
    let scoring = dir.join("scoring.toml");
    std::fs::write(&scoring, toml::to_string(&model).unwrap()).unwrap();
    (dir, scoring)
}

#[test]
fn a_replay_from_the_middle_seeks_by_reading_where_the_broker_answers_wrongly_and_matches_live() {
    let (jobs, scoring) = base_jobs();
    let (jobs, scoring) = (jobs.display().to_string(), scoring.display().to_string());
    let envs = [
        ("DISTILL_WATCH_JOBS_DIR", jobs.as_str()),
        ("DISTILL_WATCH_JOBS_SCORING", scoring.as_str()),
        ("DISTILL_WATCH_CLUSTERS_ENABLED", "false"),
    ];
    let (names, config, (first, last), traffic) = scored_live("replay-mid", 6, &envs);
    let from = first + 90 * 60_000;
    let to = last - 20 * 60_000;
    let live = in_range(&names.scores, from, to);
    assert!(live.len() > 50, "{} live records in range", live.len());

    let started = Instant::now();
    let out = replay(
        &config,
        &[
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--out",
            "-",
            "--max-rate",
            "4000",
        ],
        &envs,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The history before --from is what the jobs need (a 10-minute window
    // and the streaming margins): well after the traffic's start.
    let number_after = |text: &str, marker: &str| -> f64 {
        let at = text
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} in {text}"));
        text[at + marker.len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let read = number_after(&stderr, "; read ") as u64;
    assert!(
        read > 0 && read < traffic.requests.len() as u64 * 3 / 4,
        "started mid-stream: read {read} of {} requests\n{stderr}",
        traffic.requests.len()
    );
    // Throttled: the messages read took at least as long as the rate
    // allows.
    let responses = number_after(&stderr, " requests and ");
    let took = number_after(&stderr, "replay done in ");
    assert!(
        took >= (read as f64 + responses) / 4000.0,
        "{read} requests and {responses} responses in {took} s at --max-rate 4000"
    );
    if integration_tests::broker_is_nisshi() {
        // Its offsets-for-times answers 0 on memory storage (pinned in
        // broker_behaviour.rs); the check by reading catches it.
        assert!(stderr.contains("found by reading"), "{stderr}");
    }
    let expected: String = live
        .iter()
        .map(|s| score_json(&s.value).unwrap() + "\n")
        .collect();
    let got = String::from_utf8(out.stdout).unwrap();
    assert_eq!(got.lines().count(), live.len(), "{stderr}");
    assert!(
        got == expected,
        "the replay from the middle differs from live"
    );
    eprintln!("replay from the middle took {:?}", started.elapsed());
}

/// Records per topic, for "nothing was written here".
fn counts(topics: &[&str]) -> Vec<usize> {
    topics.iter().map(|t| read_records(t).len()).collect()
}

#[test]
fn a_shadow_model_raising_one_weight_changes_exactly_the_accounts_it_should_and_publishes_nothing()
{
    let (names, config, (first, last), traffic) = scored_live("shadow", 7, &[]);
    let (from, to) = (first + 30 * 60_000, last - 30 * 60_000);

    // The candidate: young accounts weigh 0.25 instead of 0.05.
    let dir = std::env::temp_dir().join(unique_name("shadow"));
    let candidate = young_accounts_model(&dir);

    // Which accounts it should change: the live run's final records in the
    // range, rescored from the features they carry with the candidate.
    let cand_model = distill_watch::score::ScoringModel::load(&candidate).unwrap();
    let mut finals: std::collections::BTreeMap<(String, i64), serde_json::Value> =
        Default::default();
    for s in in_range(&names.scores, from, to) {
        let (_, j) = scored(s.key, s.value);
        let k = (
            j["account_id"].as_str().unwrap().to_string(),
            j["window_start"].as_i64().unwrap(),
        );
        finals.insert(k, j); // in revision order: the last one stays
    }
    let num = |v: &serde_json::Value| v.as_f64();
    let mut expected = std::collections::BTreeSet::new();
    let mut accounts = std::collections::BTreeSet::new();
    for ((account, _), j) in &finals {
        accounts.insert(account.clone());
        let features: Vec<(String, Option<f64>)> = j["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["name"].as_str().unwrap().to_string(), num(&f["value"])))
            .collect();
        let (score, level, reasons) = cand_model.score_values(&features);
        let live_reasons: Vec<(String, f64, f64)> = j["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["feature"].as_str().unwrap().to_string(),
                    num(&r["value"]).unwrap(),
                    num(&r["contribution"]).unwrap(),
                )
            })
            .collect();
        let reasons: Vec<(String, f64, f64)> = reasons
            .into_iter()
            .map(|r| (r.feature, r.value, r.contribution))
            .collect();
        if score != j["score"].as_f64().unwrap()
            || level.as_str() != j["level"].as_str().unwrap()
            || reasons != live_reasons
        {
            expected.insert(account.clone());
        }
    }
    assert!(
        !expected.is_empty() && expected.len() < accounts.len(),
        "the raised weight matters for some accounts, not all: {} of {}",
        expected.len(),
        accounts.len()
    );

    let outputs = [
        names.scores.as_str(),
        names.clusters.as_str(),
        names.dlq.as_str(),
        names.features.as_str(),
        names.checkpoints.as_str(),
    ];
    let before = counts(&outputs);
    let truth = dir.join("truth.csv");
    distill_watch_traffic::truth::write_csv(&traffic.truth, &truth).unwrap();
    let json = dir.join("diff.json");
    let out = command(
        &config,
        "shadow",
        &[
            "--scoring",
            &candidate.display().to_string(),
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--truth",
            &truth.display().to_string(),
            "--json",
            &json.display().to_string(),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let diff: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let changed: std::collections::BTreeSet<String> = diff["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["account_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(changed, expected, "{stdout}");
    assert_eq!(diff["accounts"].as_u64().unwrap() as usize, accounts.len());
    // A higher weight only raises scores: no flag is lost.
    assert_eq!(diff["lost_flags"].as_array().unwrap().len(), 0, "{stdout}");
    for c in diff["changed"].as_array().unwrap() {
        assert!(
            c["candidate_score"].as_f64() >= c["live_score"].as_f64(),
            "{c}"
        );
    }
    assert!(stdout.contains("style / population"), "{stdout}");
    assert_eq!(counts(&outputs), before, "shadow published to a live topic");
    eprintln!("{stdout}");
}

/// A candidate model file: `jobs/scoring.toml` with young accounts
/// weighing 0.25 instead of 0.05, under its own model version.
fn young_accounts_model(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("jobs/scoring.toml")).unwrap();
    let text = text
        .replacen("weight = 0.05\nlow = 30.0", "weight = 0.25\nlow = 30.0", 1)
        .replacen(
            "model_version = \"heuristic-",
            "model_version = \"candidate-young-accounts-",
            1,
        );
    assert!(text.contains("weight = 0.25\nlow = 30.0"));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("candidate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_shadow_following_live_traffic_compares_what_both_scored_as_a_shadow_of_that_range_does() {
    let traffic = distill_watch_traffic::generate(&Scenario::builtin("ci").unwrap(), 9, 0.3);
    let names = Names::new("shadow-follow");
    names.create_inputs();
    names.create_outputs();
    let first = traffic.requests.first().unwrap().deliver_ms;
    let last = traffic.requests.last().unwrap().deliver_ms;
    let half = first + (last - first) / 2;
    let mut early = traffic.clone();
    early.requests.retain(|r| r.deliver_ms < half);
    early.responses.retain(|r| r.deliver_ms < half);
    let mut late = traffic.clone();
    late.accounts.clear();
    late.requests.retain(|r| r.deliver_ms >= half);
    late.responses.retain(|r| r.deliver_ms >= half);
    write(&early, &names);

    let dir = std::env::temp_dir().join(unique_name("shadow-follow"));
    let candidate = young_accounts_model(&dir);
    let config = names.config_file("shadow", &[]);
    let from = (first + 30 * 60_000).to_string();
    let followed = dir.join("followed.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_distill-watch"));
    cmd.arg("--config")
        .arg(&config)
        .args(["--log", "info", "shadow", "--scoring"])
        .arg(&candidate)
        .args(["--from", &from, "--follow", "--for", "45s", "--json"])
        .arg(&followed)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("follow.log")).unwrap());
    let mut child = cmd.spawn().unwrap();
    // The second half arrives while both models are running.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(dir.join("follow.log"))
        .unwrap_or_default()
        .contains("replay starts here")
    {
        assert!(
            Instant::now() < deadline,
            "the shadow never started reading"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    write(&late, &names);
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(dir.join("follow.log")).unwrap();
    assert!(status.success(), "{log}");
    let followed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&followed).unwrap()).unwrap();
    let cut = followed["models"]["to"].as_str().unwrap().to_string();
    let cut_ms = distill_watch::replay::parse_time(&cut).unwrap();
    assert!(
        cut_ms > half,
        "followed past the first half: compared up to {cut}\n{log}"
    );

    // The same windows as a range, one model after the other.
    let ranged = dir.join("ranged.json");
    command(
        &config,
        "shadow",
        &[
            "--scoring",
            &candidate.display().to_string(),
            "--from",
            &from,
            "--to",
            &cut,
            "--json",
            &ranged.display().to_string(),
        ],
        &[],
    );
    let ranged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ranged).unwrap()).unwrap();
    for field in [
        "accounts",
        "windows",
        "changed",
        "level_changes",
        "new_flags",
        "lost_flags",
    ] {
        assert_eq!(followed[field], ranged[field], "{field}");
    }
    assert!(!ranged["changed"].as_array().unwrap().is_empty());
}
