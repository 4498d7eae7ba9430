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
    let plan = Plan {
        max_rate: args.max_rate,
        ..Plan::new(&cfg, &detector.jobs, from, to, warmup)?
    };
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
    let shown = std::io::stderr().is_terminal();
    let summary = run_shown(
        &cfg,
        &detector,
        plan,
        output,
        "",
        shown,
        crate::stop_signal()?,
    )
    .await?;
    eprintln!("{}", describe(&summary));
    Ok(())
}

/// [`replay`] with progress on standard error (a bar when `bar`, else a
/// line every 30 s), each message prefixed with `label`; stops early when
/// `shutdown` resolves.
pub async fn run_shown(
    cfg: &Config,
    detector: &distill_watch::process::Detector,
    plan: Plan,
    output: Box<dyn Output>,
    label: &str,
    bar: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<ReplaySummary> {
    let progress = ReplayProgress::default();
    let shown = Shown::new(bar, label);
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
            // Drawn once the replay knows what it will read (after the
            // seeks): a bar of nothing would say 100%.
            let b = ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::hidden());
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
                if total == 0 && read == 0 {
                    return;
                }
                if b.is_hidden() {
                    b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                }
                b.set_length(total.max(read));
                b.set_position(read);
                b.set_message(msg);
            }
            None => {
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= Duration::from_secs(30) {
                    *last = Instant::now();
                    let secs = self.started.elapsed().as_secs_f64();
                    if plan.follow || total == 0 {
                        eprintln!("replay: {read} messages after {secs:.0} s, {msg}");
                    } else {
                        let pct = 100.0 * read.min(total) as f64 / total as f64;
                        eprintln!(
                            "replay: {pct:.0}% ({read} of about {total} messages) after {secs:.0} s, {msg}"
                        );
                    }
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
    distill_watch::topics::partitions(&md, topic)
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

/// An instant in event time (see [`distill_watch::replay::parse_time`]).
pub fn parse_time(text: &str) -> Result<i64> {
    distill_watch::replay::parse_time(text).map_err(anyhow::Error::msg)
}
