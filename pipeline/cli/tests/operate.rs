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

/// `distill-watch --config CONFIG ARGS` with `envs`, killed after `limit`:
/// its output and how long it ran.
fn cli_within(
    config: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
    limit: Duration,
) -> (std::process::Output, Duration) {
    // Output to files, not pipes: a child writing more than a pipe holds
    // would block on it while this loop only waits for it to exit.
    let out = std::env::temp_dir().join(integration_tests::unique_name("cli-out"));
    let err = out.with_extension("err");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_distill-watch"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::process::Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    };
    let _ = std::fs::remove_file(out);
    let _ = std::fs::remove_file(err);
    (output, started.elapsed())
}

#[test]
fn over_tls_with_sasl_the_cli_scores_and_a_wrong_password_or_an_untrusted_ca_fails_fast() {
    let secure = integration_tests::secure::secure_broker();
    let names = Names::new("secure");
    let settings: String = secure
        .client_settings(integration_tests::secure::PASSWORD, &secure.ca)
        .iter()
        .map(|(k, v)| format!("{k:?} = {v:?}\n"))
        .collect();
    let config = names.config_file_with("w", &[], &format!("[librdkafka]\n{settings}"));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(integration_tests::broker(), &secure.bootstrap);
    std::fs::write(&config, text).unwrap();
    let ok = |args: &[&str], limit: u64| {
        let (out, took) = cli_within(&config, args, &[], Duration::from_secs(limit));
        assert!(
            out.status.success(),
            "{args:?} failed after {took:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["topics", "create", "--partitions", "2"], 120);
    let truth = std::env::temp_dir().join(format!("{}-truth.csv", names.group));
    ok(
        &[
            "gen",
            "--scenario",
            "ci",
            "--scale",
            "0.05",
            "--seed",
            "3",
            "--truth",
            truth.to_str().unwrap(),
        ],
        300,
    );
    let summary = ok(&["run", "--exit-at-eof"], 600);
    assert!(summary_number(&summary, "scores") > 0.0, "{summary}");

    // A wrong password and a CA that did not sign the broker's certificate
    // each end the command within seconds, saying which, with no secret.
    let wrong = "Not-The-Passw0rd-9d1e";
    let cases = [
        (
            ("DISTILL_WATCH_LIBRDKAFKA_SASL_PASSWORD", wrong),
            "authentication with",
        ),
        (
            (
                "DISTILL_WATCH_LIBRDKAFKA_SSL_CA_LOCATION",
                secure.rogue_ca.to_str().unwrap(),
            ),
            "TLS with",
        ),
    ];
    let truth = std::env::temp_dir().join(format!("{}-refused.csv", names.group));
    let gen = [
        "gen",
        "--scenario",
        "ci",
        "--truth",
        truth.to_str().unwrap(),
    ];
    for (env, expected) in cases {
        for args in [&["run"][..], &gen[..]] {
            let (out, took) = cli_within(&config, args, &[env], Duration::from_secs(60));
            let stderr = String::from_utf8_lossy(&out.stderr);
            eprintln!("{args:?} with {env:?}: failed in {took:?}: {stderr}");
            assert!(!out.status.success(), "{args:?} with {env:?} succeeded");
            // Well inside the 30 s an unreachable broker gets (the bound
            // of a retry storm): a rogue CA 0.6 s, a wrong password (three
            // clients refused) 2.5-5.6 s on an idle machine. 28 s once, in
            // CI, when the check read one queued log line per round.
            assert!(
                took < Duration::from_secs(15),
                "{args:?} with {env:?} took {took:?} to fail:\n{stderr}"
            );
            assert!(
                stderr.contains(expected),
                "{args:?} with {env:?}:\n{stderr}"
            );
            for secret in [wrong, integration_tests::secure::PASSWORD] {
                assert!(!stderr.contains(secret), "{secret} shown:\n{stderr}");
            }
        }
    }
    assert!(!truth.exists(), "a refused gen generated nothing");
}

/// A schemas directory like `schemas/` listing `versions` of ApiRequest.
fn schemas_dir(name: &str, versions: &[(u32, serde_json::Value)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(integration_tests::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ids = std::fs::read_to_string(repo().join("schemas/ids.toml")).unwrap();
    ids.push_str("\n[versions.ApiRequest]\n");
    for (id, json) in versions {
        let file = format!("ApiRequest.{id}.avsc");
        std::fs::write(dir.join(&file), json.to_string()).unwrap();
        ids.push_str(&format!("{id} = \"{file}\"\n"));
    }
    std::fs::write(dir.join("ids.toml"), ids).unwrap();
    dir
}

#[test]
fn a_producer_on_a_newer_compatible_schema_is_scored_the_same_and_an_incompatible_one_is_refused() {
    use apache_avro::types::Value;
    let set = distill_watch::schemas::SchemaSet::builtin();
    let current = &set.request;
    let mut json: serde_json::Value = serde_json::from_str(current.json).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "client_region", "type": ["null", "string"], "default": null,
            "doc": "A field this worker does not know yet"
        }));
    let newer = apache_avro::Schema::parse(&json).unwrap();
    let dir = schemas_dir("schemas-newer", &[(1101, json.clone())]);

    // The same traffic twice: as generated, and with every request written
    // by a producer on the newer version.
    let traffic = distill_watch_traffic::generate(&Scenario::builtin("ci").unwrap(), 4, 0.05);
    let mut rewritten = traffic.clone();
    let mut moved = 0;
    for r in &mut rewritten.requests {
        let Some((id, mut body)) = distill_watch::schemas::unframe(&r.value) else {
            continue;
        };
        if id != current.id {
            continue;
        }
        let Ok(Value::Record(mut fields)) =
            apache_avro::from_avro_datum(&current.avro, &mut body, None)
        else {
            continue;
        };
        fields.push((
            "client_region".into(),
            Value::Union(1, Box::new(Value::String("eu-west".into()))),
        ));
        let body = apache_avro::to_avro_datum(&newer, Value::Record(fields)).unwrap();
        r.value = distill_watch::schemas::frame(1101, &body);
        moved += 1;
    }
    assert!(moved > 1000, "{moved} requests rewritten");
    let mut outputs = Vec::new();
    for (name, traffic) in [("as-generated", &traffic), ("newer", &rewritten)] {
        let names = Names::new(name);
        names.create_inputs();
        names.create_outputs();
        write(traffic, &names);
        let config = names.config_file_with(
            "w",
            &[],
            &format!("[schemas]\ndir = {:?}\n", dir.display().to_string()),
        );
        Worker::spawn(&names, "w", &config, "info", &["--exit-at-eof"], &[])
            .finish(Duration::from_secs(300));
        outputs.push((
            committed_records(&names.scores),
            committed_records(&names.dlq),
        ));
    }
    assert!(!outputs[0].0.is_empty());
    assert!(
        outputs[0].0 == outputs[1].0,
        "scores differ: {} as generated, {} from the newer producer",
        outputs[0].0.len(),
        outputs[1].0.len()
    );
    // DLQ records carry the original bytes, which differ; their reasons and
    // origins do not.
    let reasons = |dlq: &[Rec]| {
        let mut v: Vec<_> = dlq.iter().map(|(k, _, h)| (k.clone(), h.clone())).collect();
        v.sort();
        v
    };
    assert_eq!(reasons(&outputs[0].1), reasons(&outputs[1].1));

    // A version that changes a field's type is refused before anything runs.
    json["fields"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .filter(|f| f["name"] == "prompt_tokens")
        .for_each(|f| {
            f["type"] = serde_json::json!("string");
            f["default"] = serde_json::json!("0");
        });
    let bad = schemas_dir("schemas-incompatible", &[(1102, json)]);
    let names = Names::new("incompatible");
    let config = names.config_file_with(
        "w",
        &[],
        &format!("[schemas]\ndir = {:?}\n", bad.display().to_string()),
    );
    let (out, took) = cli_within(&config, &["run"], &[], Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && took < Duration::from_secs(10),
        "{stderr}"
    );
    assert!(
        stderr.contains("ApiRequest version 1102 (ApiRequest.1102.avsc) cannot be read as the current ApiRequest"),
        "{stderr}"
    );
}
