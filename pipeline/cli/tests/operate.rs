//! What an operator sees of a running worker: the metrics and health
//! endpoint, and that configured secrets never show, on the real broker with
//! `distill-watch run` as a real process.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use distill_watch_traffic::Scenario;

/// `GET path` over HTTP/1.0: (status, body); `None` while nothing listens.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The endpoint's address, from the line the worker prints when it binds.
fn metrics_address(worker: &Worker) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(&worker.log).unwrap_or_default();
        if let Some(rest) = log.split("metrics and health on http://").nth(1) {
            return rest.split('/').next().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no metrics address in the log:\n{}",
            worker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Samples of a scrape, parsed by an independent Prometheus text parser:
/// (name, labels) → value; a histogram as its `_count`.
fn scrape(addr: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let (status, body) = get(addr, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text format: {e}\n{body}"));
    assert!(!parsed.samples.is_empty(), "{body}");
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            };
            let labels: BTreeMap<String, String> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            ((s.metric, labels), v)
        })
        .collect()
}

/// Sum of `name`'s samples over all labels (`label=value` filters).
fn total(
    samples: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    filter: Option<(&str, &str)>,
) -> f64 {
    samples
        .iter()
        .filter(|((n, l), _)| {
            n == name && filter.is_none_or(|(k, v)| l.get(k).map(String::as_str) == Some(v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// `key=<number>` in the worker's final summary line.
fn summary_number(summary: &str, key: &str) -> f64 {
    let at = summary
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in {summary}"));
    summary[at + key.len() + 1..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn metrics_parse_match_the_workers_totals_and_readyz_waits_for_assignment_and_catch_up() {
    let traffic = distill_watch_traffic::generate(&Scenario::builtin("ci").unwrap(), 11, 0.3);
    let names = Names::new("metrics");
    names.create_inputs();
    names.create_outputs();
    write(&traffic, &names);
    let produced = (traffic.requests.len() + traffic.responses.len()) as f64;
    let config = names.config_file_with("w", &[], "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let mut worker = Worker::spawn(&names, "w", &config, "info", &[], &[]);
    let addr = metrics_address(&worker);

    // Not ready while the detector loads and the group forms; ready once
    // every partition was read to its end.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut statuses = Vec::new();
    loop {
        if let Some((status, _)) = get(&addr, "/readyz") {
            if statuses.last() != Some(&status) {
                statuses.push(status);
            }
            if status == 200 {
                break;
            }
        }
        assert!(worker.exited().is_none(), "{}", worker.log_tail());
        assert!(
            Instant::now() < deadline,
            "never ready: {statuses:?}\n{}",
            worker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(statuses, [503, 200], "readiness went {statuses:?}");
    let at_ready = scrape(&addr);
    assert_eq!(
        total(&at_ready, "distill_watch_events_consumed_total", None),
        produced,
        "ready means caught up: everything produced was read"
    );
    assert_eq!(
        total(
            &at_ready,
            "distill_watch_assigned_partitions",
            Some(("stage", "accounts"))
        ),
        2.0 * PARTITIONS as f64,
        "both event topics' partitions"
    );
    assert!(total(&at_ready, "distill_watch_rebalances_total", None) >= 1.0);
    assert_eq!(total(&at_ready, "distill_watch_ready", None), 1.0);
    assert_eq!(get(&addr, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(get(&addr, "/nope").map(|r| r.0), Some(404));

    // Once the worker has nothing left to do (two scrapes a couple of
    // seconds apart agree), stop it and compare with its own totals.
    let counters = |s: &BTreeMap<(String, BTreeMap<String, String>), f64>| {
        s.iter()
            .filter(|((n, _), _)| n.ends_with("_total") || n.ends_with("_seconds"))
            .map(|(k, v)| (k.clone(), *v))
            .collect::<Vec<_>>()
    };
    let mut last = scrape(&addr);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = scrape(&addr);
        if counters(&now) == counters(&last) {
            break;
        }
        last = now;
        assert!(Instant::now() < deadline, "{}", worker.log_tail());
    }
    assert!(
        total(&last, "distill_watch_close_to_ack_seconds", None) > 0.0,
        "windows closed by watermarks have latency samples"
    );
    for lag in last
        .iter()
        .filter(|((n, _), _)| n == "distill_watch_consumer_lag")
    {
        assert_eq!(*lag.1, 0.0, "{lag:?}");
    }
    worker.signal("TERM");
    let out = worker.out.clone();
    worker.finish(Duration::from_secs(60));
    let summary = std::fs::read_to_string(out).unwrap();
    let summary = summary.lines().next().unwrap_or_default();
    let pairs = [
        (
            "consumed requests",
            "distill_watch_events_consumed_total",
            Some(("topic", names.requests.as_str())),
        ),
        (
            "responses",
            "distill_watch_events_consumed_total",
            Some(("topic", names.responses.as_str())),
        ),
        ("windows closed", "distill_watch_windows_closed_total", None),
        ("scores", "distill_watch_scores_emitted_total", None),
        ("revised scores", "distill_watch_scores_revised_total", None),
        ("dlq", "distill_watch_dlq_records_total", None),
    ];
    for (key, metric, filter) in pairs {
        assert_eq!(
            total(&last, metric, filter),
            summary_number(summary, key),
            "{metric} {filter:?} against {key}= in: {summary}"
        );
    }
    for level in ["low", "elevated", "high", "critical"] {
        let scraped = total(
            &last,
            "distill_watch_scores_emitted_total",
            Some(("level", level)),
        );
        let printed = if summary.contains(&format!("{level}=")) {
            summary_number(summary, level)
        } else {
            0.0
        };
        assert_eq!(scraped, printed, "{level} in: {summary}");
    }
    // And with what reached the topics.
    assert_eq!(
        total(&last, "distill_watch_dlq_records_total", None),
        committed_records(&names.dlq).len() as f64
    );
    assert!(summary_number(summary, "scores") > 0.0, "{summary}");
}

#[test]
fn no_configured_secret_in_config_output_errors_or_the_workers_log() {
    const ENV_SECRET: &str = "env-Sasl-Passw0rd-7f3a";
    const FILE_SECRET: &str = "file-Key-Passw0rd-91c2";
    let cli = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_distill-watch"));
        c.env("DISTILL_WATCH_LIBRDKAFKA_SASL_PASSWORD", ENV_SECRET);
        c
    };
    let out = cli().arg("config").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\"sasl.password\" = \"[redacted]\"") && !stdout.contains(ENV_SECRET),
        "{stdout}"
    );

    // A configuration error must not quote the line holding a secret.
    let broken = std::env::temp_dir().join(format!("dw-secret-{}.toml", std::process::id()));
    std::fs::write(
        &broken,
        format!("[librdkafka]\n\"ssl.key.password\" = \"{FILE_SECRET}\" oops\n"),
    )
    .unwrap();
    let out = cli()
        .arg("--config")
        .arg(&broken)
        .arg("config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 2") && !stderr.contains(FILE_SECRET),
        "{stderr}"
    );

    // A worker's whole run at debug level, librdkafka's configuration dump
    // and security debugging included.
    let names = Names::new("secrets");
    names.create_inputs();
    names.create_outputs();
    let traffic = distill_watch_traffic::generate(&Scenario::builtin("ci").unwrap(), 3, 0.05);
    write(&traffic, &names);
    let config = names.config_file_with(
        "w",
        &[],
        &format!(
            "[librdkafka]\n\"sasl.username\" = \"worker\"\n\"debug\" = \"conf,security,broker\"\n[producer]\n\"sasl.password\" = \"{FILE_SECRET}\"\n"
        ),
    );
    let worker = Worker::spawn(
        &names,
        "w",
        &config,
        "debug",
        &["--exit-at-eof"],
        &[("DISTILL_WATCH_LIBRDKAFKA_SASL_PASSWORD", ENV_SECRET)],
    );
    let (log, out) = (worker.log.clone(), worker.out.clone());
    worker.finish(Duration::from_secs(300));
    let log = std::fs::read_to_string(log).unwrap() + &std::fs::read_to_string(out).unwrap();
    assert!(
        log.contains("sasl.password") && log.contains("windows closed="),
        "the log shows the configuration and the run"
    );
    for secret in [ENV_SECRET, FILE_SECRET] {
        assert!(!log.contains(secret), "{secret} in the worker's output");
    }
}
