//! Memory with long windows: what a 24-hour hopping roll-up adds to the
//! worker, on inputs of two sizes with the same accounts.
//!
//! `cargo bench -p distill-watch-worker --bench window_memory`
//!
//! Each configuration runs in its own child process (this binary, re-run),
//! so its peak RSS is its own: the shipped jobs, with and without a
//! `hop 1d slide 1h` roll-up over `volume`, on 30 hours of steady traffic
//! from the same 200 accounts at two rates (4x the events). The worker loop
//! is the real one, on the in-memory broker. Printed per run: raw events,
//! the most bytes held at once by open base windows and by roll-ups
//! (Arrow buffers, counted by the worker) and the process's peak RSS; then
//! what the hopping job adds at each size. Holding partial aggregates per
//! 10-minute window, it adds at most one row per account per window of the
//! day, however many events those accounts send: the added bytes should
//! stay flat while the events grow 4x.

use std::path::{Path, PathBuf};
use std::process::Command;

use distill_watch::process::Detector;
use distill_watch::simulate::score_stream;
use distill_watch_traffic::Scenario;

const ACCOUNTS: u32 = 200;
const RATES: [f64; 2] = [0.25, 1.0];

fn scenario(rate: f64) -> Scenario {
    let text = format!(
        r#"
name = "bench-memory"
description = "30 hours of steady app traffic from {ACCOUNTS} accounts"
seed = 11
start = "2026-11-02T00:00:00Z"
duration = "30h"

[realism]
enabled = false

[[benign]]
kind = "app_backend"
accounts = {ACCOUNTS}
requests_per_minute_median = {rate}
requests_per_minute_sigma = 0.05
"#
    );
    Scenario::parse(&text, "window_memory bench").expect("bench scenario parses")
}

fn jobs_dir(hop: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::temp_dir().join(format!("dw-bench-mem-{hop}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(root.join("jobs")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    if hop {
        std::fs::write(
            dir.join("rolling_day.sql"),
            "-- name: rolling_day\n-- input: job:volume\n-- key: account_id\n-- window: hop 1d slide 1h\n\
             SELECT account_id, sum(requests) AS requests_24h, sum(output_tokens) AS output_tokens_24h, \
             max(requests) AS busiest_window_24h FROM volume GROUP BY account_id\n",
        )
        .unwrap();
    }
    dir
}

/// One configuration, in this (child) process; prints one line of figures.
fn child(rate: f64, hop: bool) {
    let scenario = scenario(rate);
    let t = distill_watch_traffic::generate(&scenario, 11, 1.0);
    let input = t.sim_input();
    let dir = jobs_dir(hop);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let d = Detector::load(&dir, &dir.join("scoring.toml"), 120_000)
            .await
            .unwrap();
        score_stream(&d, &input, 30_000).await.unwrap()
    });
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "FIGURES {} {} {} {} {}",
        t.requests.len(),
        out.peak_window_bytes,
        out.peak_rollup_bytes,
        peak_rss_bytes(),
        out.scores.len()
    );
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

struct Run {
    requests: u64,
    window_bytes: u64,
    rollup_bytes: u64,
    rss: u64,
    scores: u64,
}

fn run(rate: f64, hop: bool) -> Run {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("DW_BENCH_CHILD", format!("{rate} {hop}"))
        .output()
        .expect("re-running the bench binary");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("FIGURES "))
        .unwrap_or_else(|| {
            panic!(
                "child failed:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    Run {
        requests: v[0],
        window_bytes: v[1],
        rollup_bytes: v[2],
        rss: v[3],
        scores: v[4],
    }
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / 1_048_576.0)
}

fn main() {
    if let Ok(spec) = std::env::var("DW_BENCH_CHILD") {
        let (rate, hop) = spec.split_once(' ').unwrap();
        child(rate.parse().unwrap(), hop == "true");
        return;
    }
    println!("window memory: the shipped jobs with and without a 24-hour hopping roll-up (hop 1d slide 1h over volume)");
    println!("{ACCOUNTS} accounts, 30 h of steady traffic, the worker loop on the in-memory broker; one child process per run\n");
    println!(
        "{:>10} {:>5} {:>16} {:>16} {:>14} {:>9}",
        "requests", "hop", "base windows", "roll-up rows", "peak RSS", "scores"
    );
    let mut added = Vec::new();
    for rate in RATES {
        let off = run(rate, false);
        let on = run(rate, true);
        for (hop, r) in [("off", &off), ("on", &on)] {
            println!(
                "{:>10} {:>5} {:>16} {:>16} {:>14} {:>9}",
                r.requests,
                hop,
                mib(r.window_bytes),
                mib(r.rollup_bytes),
                mib(r.rss),
                r.scores
            );
        }
        added.push((
            off.requests,
            on.rollup_bytes as i64 - off.rollup_bytes as i64,
            on.rss as i64 - off.rss as i64,
        ));
    }
    println!();
    for (requests, held, rss) in &added {
        println!(
            "{requests:>10} requests: the 24-hour hopping job adds {:.2} MiB of held roll-up rows (peak RSS {:+.2} MiB)",
            *held as f64 / 1_048_576.0,
            *rss as f64 / 1_048_576.0
        );
    }
    let (small, large) = (&added[0], &added[1]);
    println!(
        "\nevents x{:.1}, held bytes the hopping job adds x{:.2} (flat = independent of the number of raw events)",
        large.0 as f64 / small.0 as f64,
        large.1 as f64 / small.1.max(1) as f64
    );
}
