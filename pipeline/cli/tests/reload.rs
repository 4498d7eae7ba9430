//! Jobs and model reload in a running `distill-watch run` on the real
//! broker: a broken change is refused while scoring goes on, a valid one is
//! switched to at a window boundary, and no window is lost or scored twice
//! (compared with a run that never reloaded).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use distill_watch::replay::score_json;
use distill_watch_traffic::{Scenario, Traffic};
use integration_tests::unique_name;

/// Until `f` holds, or panic after `timeout` with `what` and the log.
fn await_until(worker: &mut Worker, timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            worker.exited().is_none(),
            "worker exited:\n{}",
            worker.log_tail()
        );
        assert!(
            Instant::now() < deadline,
            "{what} not within {timeout:?}:\n{}",
            worker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Until the topic has records and their count stays put for five seconds.
fn quiet(worker: &mut Worker, topic: &str) -> usize {
    let mut last = (read_records(topic).len(), Instant::now());
    await_until(
        worker,
        Duration::from_secs(300),
        "a quiet scores topic",
        || {
            let n = read_records(topic).len();
            if n != last.0 {
                last = (n, Instant::now());
            }
            n > 0 && last.1.elapsed() >= Duration::from_secs(5)
        },
    );
    last.0
}

/// Events delivered in [from, to) only (and the accounts with the first).
fn slice(traffic: &Traffic, from: i64, to: i64, accounts: bool) -> Traffic {
    let mut t = traffic.clone();
    t.requests
        .retain(|r| r.deliver_ms >= from && r.deliver_ms < to);
    t.responses
        .retain(|r| r.deliver_ms >= from && r.deliver_ms < to);
    if !accounts {
        t.accounts.clear();
    }
    t
}

fn copy_jobs(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(repo().join("jobs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "sql" || x == "toml") {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// (key, revision) of a score record.
type Key = (Vec<u8>, i64);

/// Score records by (key, revision): (model version, window end, bytes),
/// asserting none appears twice.
fn by_key(topic: &str) -> BTreeMap<Key, (String, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for (k, v, _) in committed_records(topic) {
        let j: serde_json::Value = serde_json::from_str(&score_json(&v).unwrap()).unwrap();
        let key = (k, j["revision"].as_i64().unwrap());
        let rec = (
            j["model_version"].as_str().unwrap().to_string(),
            j["window_end"].as_i64().unwrap(),
            v,
        );
        assert!(
            out.insert(key.clone(), rec).is_none(),
            "{key:?} emitted twice"
        );
    }
    out
}

#[test]
fn a_broken_change_is_refused_and_a_valid_one_switches_at_a_boundary_losing_and_repeating_no_window(
) {
    let traffic = distill_watch_traffic::generate(&Scenario::builtin("ci").unwrap(), 8, 0.3);
    let names = Names::new("reload");
    names.create_inputs();
    names.create_outputs();
    let dir: PathBuf = std::env::temp_dir().join(unique_name("reload-jobs"));
    copy_jobs(&dir);
    let scoring = dir.join("scoring.toml");
    let original = std::fs::read_to_string(&scoring).unwrap();
    let (jobs_s, scoring_s) = (dir.display().to_string(), scoring.display().to_string());
    let envs = [
        ("DISTILL_WATCH_JOBS_DIR", jobs_s.as_str()),
        ("DISTILL_WATCH_JOBS_SCORING", scoring_s.as_str()),
        ("DISTILL_WATCH_JOBS_RELOAD_INTERVAL", "200ms"),
        // Account scores only: member scores carry the cluster model's
        // version, which a reload of the account model does not change.
        ("DISTILL_WATCH_CLUSTERS_ENABLED", "false"),
    ];
    let config = names.config_file("w", &[]);
    let mut worker = Worker::spawn(&names, "w", &config, "info", &[], &envs);

    let first = traffic.requests.first().unwrap().deliver_ms;
    let last = traffic.requests.last().unwrap().deliver_ms + 1;
    let third = (last - first) / 3;
    let (cut1, cut2) = (first + third, first + 2 * third);
    write(&slice(&traffic, i64::MIN, cut1, true), &names);
    await_until(
        &mut worker,
        Duration::from_secs(300),
        "scores of the first third",
        || !read_records(&names.scores).is_empty(),
    );

    // Broken: a rule on a feature no job makes. Refused; scoring goes on.
    std::fs::write(
        &scoring,
        original.replacen(
            "feature = \"cot_elicitation_share\"",
            "feature = \"no_such_feature\"",
            1,
        ),
    )
    .unwrap();
    let log_path = worker.log.clone();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    await_until(&mut worker, Duration::from_secs(60), "the refusal", || {
        log().contains("refusing the changed jobs or model")
    });
    assert!(log().contains("no_such_feature"), "{}", worker.log_tail());
    let before = read_records(&names.scores).len();
    write(&slice(&traffic, cut1, cut2, false), &names);
    await_until(
        &mut worker,
        Duration::from_secs(300),
        "scores after the refusal",
        || read_records(&names.scores).len() > before,
    );

    // Valid: young accounts weigh more, under a new model version.
    std::fs::write(
        &scoring,
        original
            .replacen(
                "model_version = \"heuristic-",
                "model_version = \"reloaded-",
                1,
            )
            .replacen("weight = 0.05\nlow = 30.0", "weight = 0.25\nlow = 30.0", 1),
    )
    .unwrap();
    let mut boundary = None;
    await_until(&mut worker, Duration::from_secs(60), "the switch", || {
        boundary = log()
            .lines()
            .find(|l| l.contains("switching jobs and model"))
            .and_then(|l| l.split("boundary=").nth(1))
            .and_then(|b| b.split_whitespace().next()?.parse::<i64>().ok());
        boundary.is_some()
    });
    let boundary = boundary.unwrap();
    write(&slice(&traffic, cut2, i64::MAX, false), &names);
    quiet(&mut worker, &names.scores);
    worker.signal("TERM");
    worker.finish(Duration::from_secs(60));

    // The same traffic, the old model all along.
    let reference = Names::outputs_of(&names, "reload-ref");
    reference.create_outputs();
    let ref_config = reference.config_file("ref", &[]);
    let mut ref_worker = Worker::spawn(
        &reference,
        "ref",
        &ref_config,
        "info",
        &[],
        &[
            ("DISTILL_WATCH_JOBS_RELOAD_INTERVAL", "0s"),
            ("DISTILL_WATCH_CLUSTERS_ENABLED", "false"),
        ],
    );
    quiet(&mut ref_worker, &reference.scores);
    ref_worker.signal("TERM");
    ref_worker.finish(Duration::from_secs(60));

    let got = by_key(&names.scores);
    let want = by_key(&reference.scores);
    assert!(want.len() > 300, "{} reference records", want.len());
    let (got_keys, want_keys): (Vec<_>, Vec<_>) = (got.keys().collect(), want.keys().collect());
    assert!(
        got_keys == want_keys,
        "windows lost or added by the reload: {} records against {}",
        got.len(),
        want.len()
    );
    let (mut old, mut new) = (0, 0);
    for (key, (version, end, bytes)) in &got {
        if version.starts_with("reloaded-") {
            new += 1;
            // A revision of an earlier window is scored when it is emitted,
            // after the boundary; first emissions by their own end.
            assert!(
                *end > boundary || key.1 > 0,
                "{key:?} ends at {end}, before {boundary}"
            );
        } else {
            old += 1;
            assert!(
                *end <= boundary,
                "{key:?} ends at {end}, after {boundary}, with the old model"
            );
            assert_eq!(
                bytes, &want[key].2,
                "{key:?}: the old model's record differs"
            );
        }
    }
    eprintln!("{old} records of the old model, {new} of the reloaded one");
    assert!(old > 50 && new > 50, "old {old}, new {new}");
    std::fs::remove_dir_all(&dir).unwrap();
}
