//! `distill-watch bench`: how fast the pipeline is, measured in one run.
//!
//! In-process figures: the scenario's records, pre-encoded Avro in memory,
//! go through the production worker loop over the in-memory broker (decode
//! → windows → join → enrich → every shipped job → scoring → score
//! encoding), with no Kafka client in the way. The decode floor is the same
//! messages through the worker's decoder alone. Rates are exchanges
//! (request + response) per second of CPU time of the whole process, so
//! they read "per core" whatever threads DataFusion or tokio use; the wall
//! time is printed too.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use distill_watch::config::Config;
use distill_watch::decode::{RawMessage, RecordDecoder};
use distill_watch::metrics::StageTimes;
use distill_watch::schemas::SchemaSet;
use distill_watch::simulate::SimRun;
use distill_watch_traffic::{Record, Traffic};

use crate::flags::BenchArgs;
use crate::session;

mod broker;

/// The target for the full pipeline, in exchanges/s on one core.
const TARGET_PER_CORE: f64 = 250_000.0;
/// Target ratio of the full pipeline to the decode floor.
const TARGET_FLOOR_RATIO: f64 = 0.5;
/// Target bytes held per event in open windows.
const TARGET_BYTES_PER_EVENT: f64 = 300.0;
/// Target ratio of the pipeline on the broker to a bare consumer.
const TARGET_BROKER_RATIO: f64 = 0.8;
/// Target ratio of two workers to one.
const TARGET_SCALING: f64 = 1.7;
/// Target p99 of window close → scores acknowledged, at half capacity.
const TARGET_P99_MS: f64 = 1000.0;

#[derive(Debug, Serialize)]
struct Input {
    scenario: String,
    seed: u64,
    scale: f64,
    hours: f64,
    /// Exchanges per base window (10 minutes) on average.
    exchanges_per_window: f64,
    exchanges: u64,
    requests: u64,
    responses: u64,
    avro_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Rate {
    wall_s: f64,
    cpu_s: f64,
    /// Exchanges per CPU second.
    per_core: f64,
    /// Exchanges per wall-clock second.
    per_wall_s: f64,
}

impl Rate {
    fn of(exchanges: u64, wall: Duration, cpu: Duration) -> Rate {
        let per = |d: Duration| exchanges as f64 / d.as_secs_f64().max(1e-9);
        Rate {
            wall_s: wall.as_secs_f64(),
            cpu_s: cpu.as_secs_f64(),
            per_core: per(cpu),
            per_wall_s: per(wall),
        }
    }
}

#[derive(Debug, Serialize)]
struct Stage {
    stage: &'static str,
    seconds: f64,
    share: f64,
}

/// One job's runs in the in-process pipeline (raw windows, revisions and
/// roll-ups alike).
#[derive(Debug, Serialize)]
struct JobRow {
    job: String,
    runs: u64,
    rows_in: u64,
    seconds: f64,
    micros_per_run: f64,
}

#[derive(Debug, Serialize)]
struct Memory {
    peak_window_bytes: u64,
    rows_at_peak: u64,
    bytes_per_event: Option<f64>,
    peak_rollup_bytes: u64,
    peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Report {
    input: Input,
    cores: usize,
    decode_floor: Rate,
    in_process: Rate,
    floor_ratio: f64,
    stages: Vec<Stage>,
    jobs: Vec<JobRow>,
    scores: u64,
    windows: u64,
    memory: Memory,
    /// Absent with --in-process-only.
    broker: Option<broker::BrokerReport>,
}

pub async fn run(cfg: Config, args: &BenchArgs) -> Result<()> {
    let (mut scenario, seed) = session::scenario(&args.traffic, "eval")?;
    if let Some(h) = args.hours {
        anyhow::ensure!(
            h.is_finite() && h > 0.0,
            "--hours must be a positive number, not {h}"
        );
        scenario.duration_ms = (h * 3_600_000.0) as i64;
        if let Some(r) = &mut scenario.release {
            r.at_ms = r.at_ms.min(scenario.duration_ms / 2);
        }
    }
    anyhow::ensure!(
        args.latency_seconds.is_finite() && args.latency_seconds >= 0.0,
        "--latency-seconds must be a number >= 0, not {}",
        args.latency_seconds
    );
    eprintln!("[1/3] generating the input");
    let traffic = session::generate(&scenario, seed, args.traffic.scale);
    let input = Input {
        scenario: scenario.name.clone(),
        seed,
        scale: args.traffic.scale,
        hours: scenario.duration_ms as f64 / 3_600_000.0,
        exchanges_per_window: traffic.requests.len() as f64
            / (scenario.duration_ms as f64 / 600_000.0).max(1.0),
        exchanges: traffic.requests.len() as u64,
        requests: traffic.requests.len() as u64,
        responses: traffic.responses.len() as u64,
        avro_bytes: traffic
            .requests
            .iter()
            .chain(&traffic.responses)
            .map(|r| r.value.len() as u64)
            .sum(),
    };

    eprintln!("[2/3] decode floor: the same messages through the worker's decoder only");
    let (wall, cpu) = decode_floor(&cfg, &traffic)?;
    let decode_floor = Rate::of(input.exchanges, wall, cpu);

    eprintln!("[3/3] in-process pipeline: the worker loop over an in-memory broker");
    let mut detector = distill_watch::worker::load_detector(&cfg).await?;
    // Production's account stage computes member rows for the cluster stage.
    detector.publish_members = cfg.clusters.enabled;
    let sim = traffic.sim_input();
    let run =
        SimRun::load(&sim, cfg.window.out_of_orderness.as_millis() as i64)?.without_kept_scores();
    let jobs_before = distill_watch::jobs::job_times();
    let (t0, c0) = (Instant::now(), cpu_time()?);
    let out = run.run(&detector).await?;
    let (wall, cpu) = (t0.elapsed(), cpu_time()? - c0);
    let jobs = job_rows(&jobs_before, &distill_watch::jobs::job_times());
    drop(sim);
    let in_process = Rate::of(input.exchanges, wall, cpu);

    let total = out.times.total().as_secs_f64().max(1e-9);
    let stages = stage_rows(&out.times, total);
    let memory = Memory {
        peak_window_bytes: out.peak_window_bytes as u64,
        rows_at_peak: out.peak_window_rows as u64,
        bytes_per_event: (out.peak_window_rows > 0)
            .then(|| out.peak_window_bytes as f64 / out.peak_window_rows as f64),
        peak_rollup_bytes: out.peak_rollup_bytes as u64,
        peak_rss_bytes: peak_rss(),
    };
    let broker = if args.in_process_only {
        None
    } else {
        eprintln!("on the broker:");
        let b = broker::BrokerArgs {
            bootstrap: args.broker.as_deref(),
            latency_seconds: args.latency_seconds,
        };
        Some(broker::run(&cfg, &traffic, &b).await?)
    };
    let report = Report {
        broker,
        floor_ratio: in_process.per_core / decode_floor.per_core,
        input,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        decode_floor,
        in_process,
        stages,
        jobs,
        scores: out.metrics.scores_emitted,
        windows: out.metrics.windows_closed,
        memory,
    };
    print_report(&report, &mut std::io::stdout().lock())?;
    if let Some(path) = &args.json {
        write_json(&report, path)?;
    }
    Ok(())
}

/// Decode every request and response, in batches of the worker's size.
/// Building the messages is not timed; decoding is.
fn decode_floor(cfg: &Config, traffic: &Traffic) -> Result<(Duration, Duration)> {
    let set = SchemaSet::builtin();
    let batch = cfg.worker.batch_max_messages;
    let skew = cfg.window.max_future_skew.as_millis() as i64;
    let mut wall = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    let mut rows = 0usize;
    for (schema, records) in [
        (&set.request, &traffic.requests),
        (&set.response, &traffic.responses),
    ] {
        let mut decoder = RecordDecoder::new(schema, batch, skew)?;
        for (n, chunk) in records.chunks(batch).enumerate() {
            let msgs = raw_messages(chunk, (n * batch) as i64);
            let (t0, c0) = (Instant::now(), cpu_time()?);
            let decoded = decoder.decode(&msgs)?;
            cpu += cpu_time()? - c0;
            wall += t0.elapsed();
            rows += decoded.batch.num_rows();
        }
    }
    anyhow::ensure!(
        rows == traffic.requests.len() + traffic.responses.len(),
        "the decode floor decoded {rows} rows of {} messages: the generated traffic should decode whole",
        traffic.requests.len() + traffic.responses.len()
    );
    Ok((wall, cpu))
}

fn raw_messages(records: &[Record], first_offset: i64) -> Vec<RawMessage> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| RawMessage {
            partition: 0,
            offset: first_offset + i as i64,
            timestamp_ms: Some(r.deliver_ms),
            key: Some(r.key.clone().into_bytes().into()),
            payload: Some(r.value.clone().into()),
        })
        .collect()
}

fn stage_rows(times: &StageTimes, total: f64) -> Vec<Stage> {
    times
        .stages()
        .into_iter()
        .map(|(stage, d)| Stage {
            stage,
            seconds: d.as_secs_f64(),
            share: d.as_secs_f64() / total,
        })
        .collect()
}

/// CPU time (user + system) of the whole process so far.
fn cpu_time() -> Result<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given and touches nothing else.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    anyhow::ensure!(
        rc == 0,
        "getrusage failed: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: rc == 0, so the struct was written.
    let u = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok(tv(u.ru_utime) + tv(u.ru_stime))
}

/// Peak resident set size of this process (Linux: VmHWM).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISS"
    }
}

/// A table of rates: per CPU second first (`per_core`) or per wall second
/// first, the other in the last column.
fn print_rates(rows: &[(&str, &Rate)], per_core: bool, out: &mut dyn Write) -> Result<()> {
    let other = if per_core {
        "(per wall s)"
    } else {
        "(per CPU s)"
    };
    writeln!(
        out,
        "{:<34} {:>14} {:>10} {:>10} {:>16}",
        "", "exchanges/s", "CPU s", "wall s", other
    )?;
    for (name, rate) in rows {
        let (first, last) = if per_core {
            (rate.per_core, rate.per_wall_s)
        } else {
            (rate.per_wall_s, rate.per_core)
        };
        writeln!(
            out,
            "{:<34} {:>14.0} {:>10.2} {:>10.2} {:>16.0}",
            name, first, rate.cpu_s, rate.wall_s, last
        )?;
    }
    Ok(())
}

/// The jobs' runs between two snapshots, costliest first.
fn job_rows(
    before: &BTreeMap<String, distill_watch::jobs::JobTime>,
    after: &BTreeMap<String, distill_watch::jobs::JobTime>,
) -> Vec<JobRow> {
    let mut rows: Vec<JobRow> = after
        .iter()
        .filter_map(|(job, a)| {
            let b = before.get(job).copied().unwrap_or_default();
            let runs = a.runs - b.runs;
            let seconds = (a.time - b.time).as_secs_f64();
            (runs > 0).then(|| JobRow {
                job: job.clone(),
                runs,
                rows_in: a.rows_in - b.rows_in,
                seconds,
                micros_per_run: 1e6 * seconds / runs as f64,
            })
        })
        .collect();
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.job.cmp(&b.job)));
    rows
}

fn print_jobs(jobs: &[JobRow], out: &mut dyn Write) -> Result<()> {
    let total: f64 = jobs.iter().map(|j| j.seconds).sum();
    writeln!(
        out,
        "\nthe jobs' runs (raw windows, revisions, roll-ups): {total:.2} s in all; the costliest:"
    )?;
    for j in jobs.iter().take(10) {
        writeln!(
            out,
            "  {:<20} {:>7.2} s {:>6} runs {:>8.0} us/run {:>10} rows in",
            j.job, j.seconds, j.runs, j.micros_per_run, j.rows_in
        )?;
    }
    Ok(())
}

fn print_stages(stages: &[Stage], out: &mut dyn Write) -> Result<()> {
    for s in stages {
        writeln!(
            out,
            "  {:<16} {:>9.2} s {:>6.1}%",
            s.stage,
            s.seconds,
            100.0 * s.share
        )?;
    }
    Ok(())
}

fn print_report(r: &Report, out: &mut dyn Write) -> Result<()> {
    let i = &r.input;
    writeln!(
        out,
        "\nbench: scenario {}, seed {}, scale {}, {} hours: {} exchanges, {:.0} per 10-minute window ({} requests, {} responses, {:.1} MiB of Avro), {} cores",
        i.scenario,
        i.seed,
        i.scale,
        i.hours,
        i.exchanges,
        i.exchanges_per_window,
        i.requests,
        i.responses,
        mib(i.avro_bytes),
        r.cores
    )?;
    writeln!(
        out,
        "rates are exchanges per CPU second of the whole process (per core); wall-clock rates in brackets\n"
    )?;
    print_rates(
        &[
            ("decode floor (decoder only)", &r.decode_floor),
            ("in-process pipeline", &r.in_process),
        ],
        true,
        out,
    )?;
    writeln!(out, "\n{} windows, {} scores emitted", r.windows, r.scores)?;
    writeln!(out, "\nwhere the worker loop's time goes (wall clock):")?;
    print_stages(&r.stages, out)?;
    print_jobs(&r.jobs, out)?;
    let m = &r.memory;
    writeln!(out, "\nmemory:")?;
    writeln!(
        out,
        "  open base windows at their peak: {:.1} MiB for {} events{}",
        mib(m.peak_window_bytes),
        m.rows_at_peak,
        m.bytes_per_event
            .map_or(String::new(), |b| format!(" = {b:.0} bytes per event"))
    )?;
    writeln!(
        out,
        "  roll-ups' held rows at their peak: {:.1} MiB",
        mib(m.peak_rollup_bytes)
    )?;
    if let Some(rss) = m.peak_rss_bytes {
        writeln!(
            out,
            "  peak RSS of this process: {:.0} MiB (includes the generated input and the in-memory broker)",
            mib(rss)
        )?;
    }
    if let Some(b) = &r.broker {
        writeln!(
            out,
            "\non the broker at {} ({} partitions per topic; input written at {:.0} msg/s), exchanges per wall second:",
            b.bootstrap, b.partitions, b.write_msgs_per_s
        )?;
        print_rates(
            &[
                ("bare consumer (read only)", &b.bare_consumer),
                ("pipeline, one worker", &b.one_worker),
                ("pipeline, two workers", &b.two_workers),
            ],
            false,
            out,
        )?;
        writeln!(
            out,
            "CPU s are the whole process's, the local broker (another process) not included"
        )?;
        writeln!(
            out,
            "\nwhere one worker's time goes on the broker ({} transactions; join to member rows summed over partition pairs, which score in parallel: `closing (wall)` is their wall time):",
            b.one_worker_commits
        )?;
        print_stages(&b.one_worker_stages, out)?;
        if let Some(l) = &b.latency {
            writeln!(
                out,
                "\nlive at {:.0} exchanges/s ({} exchanges): window close -> scores acknowledged over {} windows: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                l.offered_per_s, l.exchanges, l.windows, l.p50_ms, l.p99_ms, l.max_ms
            )?;
        }
    }
    writeln!(out, "\ntargets (issue 9):")?;
    writeln!(
        out,
        "  in-process >= {:.0} exchanges/s per core: {:.0} (x{:.3}) {}",
        TARGET_PER_CORE,
        r.in_process.per_core,
        r.in_process.per_core / TARGET_PER_CORE,
        verdict(r.in_process.per_core >= TARGET_PER_CORE)
    )?;
    writeln!(
        out,
        "  full pipeline >= {TARGET_FLOOR_RATIO} x decode floor: x{:.3} {}",
        r.floor_ratio,
        verdict(r.floor_ratio >= TARGET_FLOOR_RATIO)
    )?;
    if let Some(b) = m.bytes_per_event {
        writeln!(
            out,
            "  <= {TARGET_BYTES_PER_EVENT:.0} bytes per event held in open windows: {b:.0} {}",
            verdict(b <= TARGET_BYTES_PER_EVENT)
        )?;
    }
    if let Some(b) = &r.broker {
        writeln!(
            out,
            "  pipeline >= {TARGET_BROKER_RATIO} x bare consumer: x{:.3} {}",
            b.pipeline_ratio,
            verdict(b.pipeline_ratio >= TARGET_BROKER_RATIO)
        )?;
        writeln!(
            out,
            "  two workers >= {TARGET_SCALING} x one: x{:.3} {} (on {} cores, the broker on the same machine)",
            b.scaling,
            verdict(b.scaling >= TARGET_SCALING),
            r.cores
        )?;
        if let Some(l) = &b.latency {
            writeln!(
                out,
                "  close -> ack p99 <= {TARGET_P99_MS:.0} ms at half capacity: {:.0} ms {}",
                l.p99_ms,
                verdict(l.p99_ms <= TARGET_P99_MS)
            )?;
        }
    }
    Ok(())
}

fn write_json(r: &Report, path: &PathBuf) -> Result<()> {
    let text = serde_json::to_string_pretty(r)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("report: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_moves_forward_with_work() {
        let before = cpu_time().unwrap();
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_time().unwrap() > before);
    }

    #[test]
    fn rates_are_exchanges_per_second() {
        let r = Rate::of(1000, Duration::from_secs(2), Duration::from_millis(500));
        assert_eq!(r.per_core, 2000.0);
        assert_eq!(r.per_wall_s, 500.0);
    }
}
