//! The command line as users call it.

use std::collections::BTreeSet;
use std::process::{Command, Output};

/// The command's stdout, after checking it exited with success (its stderr
/// says why not).
fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn config_file_from_distill_watch_config_is_read_and_cli_variables_are_not_config_keys() {
    let file = std::env::temp_dir().join(format!("dw-cli-{}.toml", std::process::id()));
    std::fs::write(&file, "[kafka]\ngroup_id = \"from-the-file\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_distill-watch"))
        .arg("config")
        .env("DISTILL_WATCH_CONFIG", &file)
        .env("DISTILL_WATCH_DEMO_BROKER", "127.0.0.1:1")
        .env("DISTILL_WATCH_CACHE", "/nonexistent")
        .env("DISTILL_WATCH_NISSHI", "/nonexistent")
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    assert!(stdout.contains("group_id = \"from-the-file\""), "{stdout}");
    // A misspelt configuration variable is still an error.
    let out = Command::new(env!("CARGO_BIN_EXE_distill-watch"))
        .arg("config")
        .env("DISTILL_WATCH_KAFKA_GROUP", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DISTILL_WATCH_KAFKA_GROUP"));
}

#[test]
fn bench_prints_rates_stages_memory_broker_figures_and_latency_as_json() {
    let json = std::env::temp_dir().join(format!("dw-bench-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_distill-watch"))
        .args(["bench", "--scenario", "ci", "--scale", "0.2", "--json"])
        .arg(&json)
        .args(["--broker", integration_tests::broker()])
        .args(["--latency-seconds", "10"])
        // The shipped jobs and models, as from a checkout's root.
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    for line in [
        "decode floor",
        "in-process pipeline",
        "raw jobs",
        "bytes per event",
        "bare consumer",
        "pipeline, two workers",
        "scores acknowledged",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).ok();
    let num = |p: &str| v.pointer(p).and_then(|x| x.as_f64()).unwrap_or(-1.0);
    assert!(num("/input/exchanges") > 0.0, "{v}");
    assert!(num("/scores") > 0.0, "{v}");
    assert!(num("/memory/rows_at_peak") > 0.0, "{v}");
    // The pipeline decodes too, so it can never beat the decoder alone.
    assert!(
        num("/in_process/per_core") > 0.0
            && num("/in_process/per_core") < num("/decode_floor/per_core"),
        "{v}"
    );
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 9);
    let seconds: f64 = stages.iter().map(|s| s["seconds"].as_f64().unwrap()).sum();
    assert!(seconds > 0.0 && seconds <= num("/in_process/wall_s"), "{v}");
    // Every shipped job ran, each base window once at least; costliest
    // first, and their time is part of the stages' time.
    let jobs = v["jobs"].as_array().unwrap();
    let names: BTreeSet<&str> = jobs.iter().map(|j| j["job"].as_str().unwrap()).collect();
    for job in ["volume", "harvest", "clock", "model_pivot"] {
        assert!(names.contains(job), "{job} not in {names:?}");
    }
    assert!(jobs.iter().all(|j| j["runs"].as_f64().unwrap() >= 1.0));
    let job_s: Vec<f64> = jobs
        .iter()
        .map(|j| j["seconds"].as_f64().unwrap())
        .collect();
    assert!(job_s.windows(2).all(|w| w[0] >= w[1]), "{job_s:?}");
    assert!(job_s.iter().sum::<f64>() <= seconds, "{v}");
    assert!(stdout.contains("the costliest:"), "{stdout}");
    for rate in ["bare_consumer", "one_worker", "two_workers"] {
        assert!(num(&format!("/broker/{rate}/per_wall_s")) > 0.0, "{v}");
    }
    // Windows closed by the watermarks during the live run, each with a
    // sample; percentiles in order.
    assert!(num("/broker/latency/windows") > 0.0, "{v}");
    let (p50, p99) = (num("/broker/latency/p50_ms"), num("/broker/latency/p99_ms"));
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= num("/broker/latency/max_ms"),
        "{v}"
    );
}
