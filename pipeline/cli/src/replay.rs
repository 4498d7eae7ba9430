//! `distill-watch replay`: score a range of history by event time into a
//! topic or a file, with a progress bar on a terminal. The work is the
//! worker library's (`distill_watch::replay`); this file parses times,
//! picks the output and shows progress.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use distill_watch::config::Config;
use distill_watch::replay::{
    format_ms, format_span, replay, JsonLines, Output, Plan, ReplayProgress, ReplaySummary,
    TopicOutput,
};

use crate::flags::{ReplayArgs, ReplayFormat};

pub async fn run(cfg: Config, args: &ReplayArgs) -> Result<()> {
    let (from, to) = parse_range(&args.from, args.to.as_deref())?;
    let warmup = args
        .warmup
        .as_deref()
        .map(distill_watch::config::parse_duration)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--warmup: {e}"))?;
    let detector = distill_watch::worker::load_detector(&cfg).await?;
    let plan = Plan::new(&cfg, &detector.jobs, from, to, warmup)?;
    if warmup.is_some_and(|w| (w.as_millis() as i64) < default_warmup(&cfg, &detector)) {
        eprintln!(
            "warning: --warmup {} is shorter than the jobs' history ({}): roll-up features of windows near --from may differ from the live scores",
            args.warmup.as_deref().unwrap_or_default(),
            format_span(default_warmup(&cfg, &detector))
        );
    }
    let output: Box<dyn Output> = match (&args.topic, &args.out) {
        (Some(topic), None) => {
            let partitions = partitions_of(&cfg, &cfg.topics.scores).unwrap_or(1);
            Box::new(TopicOutput::new(&cfg, topic, partitions, &plan).await?)
        }
        (None, Some(path)) => match format_of(path, args.format)? {
            ReplayFormat::Jsonl if path.as_os_str() == "-" => Box::new(JsonLines::new(
                Box::new(std::io::stdout()),
                "standard output",
            )),
            ReplayFormat::Jsonl => {
                let f = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                Box::new(JsonLines::new(Box::new(f), path.display().to_string()))
            }
            ReplayFormat::Parquet => Box::new(crate::parquet_out::ParquetOutput::create(path)?),
        },
        _ => bail!("give one of --topic TOPIC or --out FILE"),
    };
    eprintln!(
        "replaying windows from {} to {} into {} (reading from {}: {} of history for the roll-ups)",
        format_ms(plan.from),
        plan.to
            .map_or_else(|| "the end of the topics".to_string(), format_ms),
        output.describe(),
        format_ms(plan.seek_ms),
        format_span(plan.warmup_ms),
    );
    let summary = run_shown(&cfg, &detector, plan, output, "").await?;
    eprintln!("{}", describe(&summary));
    Ok(())
}

/// [`replay`] with progress on standard error (a bar on a terminal, a line
/// every 30 s otherwise), each message prefixed with `label`; stops early
/// on SIGINT or SIGTERM.
pub async fn run_shown(
    cfg: &Config,
    detector: &distill_watch::process::Detector,
    plan: Plan,
    output: Box<dyn Output>,
    label: &str,
) -> Result<ReplaySummary> {
    let progress = ReplayProgress::default();
    let shown = Shown::new(std::io::stderr().is_terminal(), label);
    let shutdown = crate::stop_signal()?;
    let work = replay(cfg, detector, plan, output, &progress, shutdown);
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let summary = loop {
        tokio::select! {
            r = &mut work => break r?,
            _ = tick.tick() => shown.update(&progress, &plan),
        }
    };
    shown.finish();
    Ok(summary)
}

/// The warm-up [`Plan::new`] picks without `--warmup`.
fn default_warmup(cfg: &Config, detector: &distill_watch::process::Detector) -> i64 {
    Plan::new(cfg, &detector.jobs, 0, None, None).map_or(0, |p| p.warmup_ms)
}

/// Progress: a bar on a terminal; a plain line every 30 s otherwise (logs
/// of a batch job), never a bar's control characters.
struct Shown {
    label: String,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: std::sync::Mutex<Instant>,
}

impl Shown {
    fn new(terminal: bool, label: &str) -> Self {
        let bar = terminal.then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {percent:>3}% {human_pos}/{human_len} messages, ETA {eta}",
                )
                .expect("constant template")
                .progress_chars("=> "),
            );
            b
        });
        Shown {
            label: label.to_string(),
            bar,
            started: Instant::now(),
            last_line: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn update(&self, p: &ReplayProgress, plan: &Plan) {
        let (total, read) = (
            p.total.load(Ordering::Relaxed),
            p.read.load(Ordering::Relaxed),
        );
        let at = p.event_time.load(Ordering::Relaxed);
        let phase = if at < plan.from {
            "warming up"
        } else {
            "replaying"
        };
        let msg = format!(
            "{}{phase}, at {}, {} scores written",
            self.label,
            format_ms(at),
            p.written.load(Ordering::Relaxed)
        );
        match &self.bar {
            Some(b) => {
                b.set_length(total.max(read));
                b.set_position(read);
                b.set_message(msg);
            }
            None => {
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= Duration::from_secs(30) {
                    *last = Instant::now();
                    let pct = if total > 0 {
                        100.0 * read as f64 / total as f64
                    } else {
                        0.0
                    };
                    eprintln!(
                        "replay: {pct:.0}% ({read} of about {total} messages) after {:.0} s, {msg}",
                        self.started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn describe(s: &ReplaySummary) -> String {
    let searched = s.seeks.iter().filter(|k| k.searched).count();
    let seek_note = if searched > 0 {
        format!(
            " ({searched} of {} partition starts found by reading: the broker's offsets-for-times answers failed the check)",
            s.seeks.len()
        )
    } else {
        String::new()
    };
    format!(
        "replay done in {:.1} s: {} scores written to {}; read {} requests and {} responses{}; {} windows closed; {} scores outside the range not written; {} input records rejected (counted, not sent to the DLQ again)",
        s.elapsed.as_secs_f64(),
        s.written,
        s.output,
        s.metrics.requests_consumed,
        s.metrics.responses_consumed,
        seek_note,
        s.metrics.windows_closed,
        s.outside,
        s.rejected,
    )
}

fn partitions_of(cfg: &Config, topic: &str) -> Option<i32> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = cfg.client_config().create().ok()?;
    let md = c.fetch_metadata(None, Duration::from_secs(10)).ok()?;
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .filter(|n| *n > 0)
}

fn format_of(path: &Path, given: Option<ReplayFormat>) -> Result<ReplayFormat> {
    if let Some(f) = given {
        return Ok(f);
    }
    if path.as_os_str() == "-" {
        return Ok(ReplayFormat::Jsonl);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "json" | "ndjson") => Ok(ReplayFormat::Jsonl),
        Some("parquet") => Ok(ReplayFormat::Parquet),
        _ => bail!(
            "cannot tell the format of {} from its extension: name it .jsonl or .parquet, or give --format",
            path.display()
        ),
    }
}

/// `--from` and `--to`, parsed.
pub fn parse_range(from: &str, to: Option<&str>) -> Result<(i64, Option<i64>)> {
    let from = parse_time(from).context("--from")?;
    let to = to.map(parse_time).transpose().context("--to")?;
    Ok((from, to))
}

/// An instant in event time, as epoch milliseconds: RFC 3339
/// (`2026-12-01T10:00:00Z`, `2026-12-01T11:00:00+01:00`, fractions of a
/// second allowed), a date and time without a zone (UTC; `T` or a space
/// between), a date (midnight UTC), or epoch milliseconds.
pub fn parse_time(text: &str) -> Result<i64> {
    let t = text.trim();
    let bad = || {
        anyhow::anyhow!(
            "{text:?} is not a time: use RFC 3339 (2026-12-01T10:00:00Z), a date (2026-12-01) or epoch milliseconds"
        )
    };
    if !t.is_empty()
        && t.trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return t.parse().map_err(|_| bad());
    }
    let num = |s: &str, len: usize| -> Result<i64> {
        if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (date, rest) = t.split_at(t.len().min(10));
    let mut parts = date.split('-');
    let (y, m, d) = match (parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d)) => (num(y, 4)?, num(m, 2)?, num(d, 2)?),
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    if rest.is_empty() {
        return Ok(ms);
    }
    let rest = rest
        .strip_prefix('T')
        .or_else(|| rest.strip_prefix('t'))
        .or_else(|| rest.strip_prefix(' '))
        .ok_or_else(bad)?;
    // The zone: Z, or ±HH:MM at the end; none means UTC.
    let (clock, offset_ms) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if rest.len() > 6 && matches!(rest.as_bytes()[rest.len() - 6], b'+' | b'-') {
        let (c, z) = rest.split_at(rest.len() - 6);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = z[1..].split_once(':').ok_or_else(bad)?;
        (c, sign * (num(zh, 2)? * 3_600_000 + num(zm, 2)? * 60_000))
    } else {
        (rest, 0)
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut f = hms.split(':');
    let h = num(f.next().ok_or_else(bad)?, 2)?;
    let min = num(f.next().ok_or_else(bad)?, 2)?;
    let s = f.next().map(|s| num(s, 2)).transpose()?.unwrap_or(0);
    if f.next().is_some() || h > 23 || min > 59 || s > 60 {
        return Err(bad());
    }
    let milli = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        format!("{:0<3}", &frac[..frac.len().min(3)])
            .parse::<i64>()
            .map_err(|_| bad())?
    };
    ms += h * 3_600_000 + min * 60_000 + s * 1000 + milli;
    Ok(ms - offset_ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// days_from_civil; the inverse of `cluster::keys::civil_date`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form_and_round_trip_through_format_ms() {
        let at = 1_764_583_200_000; // 2025-12-01T10:00:00Z
        for text in [
            "2025-12-01T10:00:00Z",
            "2025-12-01T10:00Z",
            "2025-12-01 10:00:00",
            "2025-12-01T11:00:00+01:00",
            "2025-12-01T05:30:00-04:30",
            "1764583200000",
        ] {
            assert_eq!(parse_time(text).unwrap(), at, "{text}");
        }
        assert_eq!(parse_time("2025-12-01T10:00:00.25Z").unwrap(), at + 250);
        assert_eq!(parse_time("2025-12-01").unwrap(), at - 10 * 3_600_000);
        assert_eq!(parse_time("1970-01-01").unwrap(), 0);
        assert_eq!(parse_time("2024-02-29").unwrap(), 1_709_164_800_000);
        for ms in [0, at, at + 250, 951_782_400_000, -86_400_000] {
            assert_eq!(parse_time(&format_ms(ms)).unwrap(), ms);
        }
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-02-30",
            "2023-02-29",
            "2025-12-01T25:00Z",
            "2025-12-01T10",
            "2025-12-01X10:00",
            "2025-12-1",
            "12/01/2025",
        ] {
            let e = parse_time(bad).unwrap_err().to_string();
            assert!(e.contains("is not a time"), "{bad}: {e}");
        }
    }
}
