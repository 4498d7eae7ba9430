//! What `demo`, `eval` and `gen` share: a broker (ours or theirs), topics,
//! generated traffic written like a gateway would, a scoring run, and the
//! scores read back like any consumer would — each step with progress.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use apache_avro::types::Value;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;

use distill_watch::config::Config;
use distill_watch::metrics::Metrics;
use distill_watch::schemas::{unframe, SchemaSet};
use distill_watch::source::read_to_end;
use distill_watch::topics::{create_topics, TopicSpec};
use distill_watch::worker::Progress;
use distill_watch_traffic::{Scenario, Traffic};
use local_broker::{ensure_installed, LocalBroker};

use crate::eval::metrics::ScoreRow;
use crate::flags::TrafficArgs;

/// Partitions of the event and score topics in demo and eval runs.
pub const PARTITIONS: i32 = 4;

pub fn topic_specs(cfg: &Config, partitions: i32) -> Vec<TopicSpec> {
    let t = &cfg.topics;
    vec![
        TopicSpec::new(&t.requests, partitions),
        TopicSpec::new(&t.responses, partitions),
        TopicSpec::new(&t.accounts, partitions).compacted(),
        TopicSpec::new(&t.scores, partitions),
        TopicSpec::new(&t.dlq, 1),
        TopicSpec::new(&t.checkpoints, partitions).compacted(),
        TopicSpec::new(&t.features, partitions),
        TopicSpec::new(&t.clusters, partitions),
    ]
}

/// Seconds since the epoch, to make topic and group names unique per run.
pub fn run_suffix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Give every topic (or only the output topics) and the group a suffix, so
/// that runs on a shared broker never read each other's records.
pub fn suffix_topics(cfg: &mut Config, suffix: &str, inputs_too: bool) {
    let t = &mut cfg.topics;
    let mut names = vec![&mut t.scores, &mut t.dlq, &mut t.checkpoints];
    if inputs_too {
        names.extend([&mut t.requests, &mut t.responses, &mut t.accounts]);
    }
    for name in names {
        *name = format!("{name}.{suffix}");
    }
    cfg.kafka.group_id = format!("{}-{suffix}", cfg.kafka.group_id);
}

/// Start the local broker and point `cfg` at it.
pub fn local_broker(cfg: &mut Config) -> Result<LocalBroker> {
    let bin = ensure_installed().context("installing the local broker")?;
    let b = LocalBroker::start(&bin, None).context("starting the local broker")?;
    cfg.kafka.bootstrap_servers = b.bootstrap.clone();
    Ok(b)
}

pub async fn create(cfg: &Config, specs: &[TopicSpec]) -> Result<()> {
    distill_watch::connect::check_async(cfg, distill_watch::connect::TIMEOUT).await?;
    create_topics(&cfg.client_config(), specs)
        .await
        .with_context(|| format!("creating topics on {}", cfg.kafka.bootstrap_servers))
}

/// The scenario named by `args` (or `default`), with the seed to use.
pub fn scenario(args: &TrafficArgs, default: &str) -> Result<(Scenario, u64)> {
    let name = args.scenario.as_deref().unwrap_or(default);
    let s = Scenario::load(name)?;
    let seed = args.seed.unwrap_or(s.seed);
    anyhow::ensure!(
        args.scale.is_finite() && args.scale > 0.0,
        "--scale must be a positive number, not {}",
        args.scale
    );
    Ok((s, seed))
}

/// Generate a scenario, with a spinner (generation is pure CPU).
pub fn generate(s: &Scenario, seed: u64, scale: f64) -> Traffic {
    let bar = spinner(format!(
        "generating scenario {} (seed {seed}, scale {scale})",
        s.name
    ));
    let t0 = Instant::now();
    let traffic = distill_watch_traffic::generate(s, seed, scale);
    bar.finish_and_clear();
    eprintln!(
        "      {} accounts ({} campaign), {} requests, {} responses, {} account records in {:.1}s",
        traffic.truth.len(),
        traffic.campaign_accounts().count(),
        traffic.requests.len(),
        traffic.responses.len(),
        traffic.accounts.len(),
        t0.elapsed().as_secs_f64()
    );
    traffic
}

/// Producer for generated traffic. Not idempotent on purpose: the local
/// broker misreports high watermarks after an idempotent producer wrote, and
/// end-of-input detection reads them. `murmur2_random` is the Java client's
/// partitioner, so keys land where any other producer would put them (and
/// where `distill_watch_traffic::partition` says).
pub fn traffic_producer(cfg: &Config) -> Result<FutureProducer> {
    let mut cc = cfg.producer_config();
    cc.set("partitioner", "murmur2_random")
        .set("enable.idempotence", "false")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000");
    Ok(cc.create()?)
}

/// Write generated traffic to the configured topics, with a progress bar.
pub async fn write(cfg: &Config, traffic: &Traffic) -> Result<()> {
    let producer = traffic_producer(cfg)?;
    let started = Instant::now();
    let topics = distill_watch_traffic::Topics {
        requests: cfg.topics.requests.clone(),
        responses: cfg.topics.responses.clone(),
        accounts: cfg.topics.accounts.clone(),
    };
    let total = traffic.accounts.len() + traffic.requests.len() + traffic.responses.len();
    let bar = bar(total as u64, "writing to the broker");
    let stats =
        distill_watch_traffic::write::write_to_kafka_with(traffic, &producer, &topics, |n| {
            bar.set_position(n as u64)
        })
        .await?;
    bar.finish_and_clear();
    let n = stats.accounts + stats.requests + stats.responses;
    eprintln!(
        "      wrote {} account records, {} requests, {} responses in {:.1}s ({:.0} msg/s)",
        stats.accounts,
        stats.requests,
        stats.responses,
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// Run a worker until every event was read and every window emitted, with
/// a progress bar over `expected` event messages when known.
pub async fn score(cfg: &Config, expected: Option<u64>) -> Result<Metrics> {
    score_watched(cfg, expected, Arc::new(Progress::default())).await
}

/// [`score`], with the worker's live counters and timings in `progress`.
pub async fn score_watched(
    cfg: &Config,
    expected: Option<u64>,
    progress: Arc<Progress>,
) -> Result<Metrics> {
    let bar = match expected {
        Some(n) => bar(n, "scoring"),
        None => spinner("scoring".into()),
    };
    let watcher = {
        let (progress, bar) = (progress.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                let consumed = progress.consumed.load(Ordering::Relaxed);
                bar.set_position(consumed);
                bar.set_message(format!(
                    "scoring: {} windows emitted, {} scores",
                    progress.windows_closed.load(Ordering::Relaxed),
                    progress.scores_emitted.load(Ordering::Relaxed)
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut cfg = cfg.clone();
    cfg.worker.exit_at_eof = true;
    let started = Instant::now();
    let result =
        distill_watch::worker::run_with_progress(&cfg, std::future::pending(), &progress).await;
    watcher.abort();
    bar.finish_and_clear();
    let summary = result?;
    let m = summary.metrics;
    eprintln!(
        "      {} windows, {} scores in {:.1}s ({:.0} events/s)",
        m.windows_closed,
        m.scores_emitted,
        started.elapsed().as_secs_f64(),
        (m.requests_consumed + m.responses_consumed) as f64
            / started.elapsed().as_secs_f64().max(1e-9)
    );
    Ok(m)
}

/// Read the whole scores topic and decode it with apache-avro and the
/// published schema, as any consumer of the topic would. Also returns the
/// model versions seen.
pub fn read_scores(cfg: &Config, topic: &str) -> Result<(Vec<ScoreRow>, Vec<String>)> {
    read_scores_dumping(cfg, topic, None)
}

/// [`read_scores`], also writing every account score's features to `dump`
/// (see `eval --features`).
pub fn read_scores_dumping(
    cfg: &Config,
    topic: &str,
    mut dump: Option<&mut dyn std::io::Write>,
) -> Result<(Vec<ScoreRow>, Vec<String>)> {
    let bar = spinner(format!("reading {topic}"));
    let mut cc = cfg.consumer_config();
    cc.set(
        "group.id",
        format!("{}-reader-{}", cfg.kafka.group_id, run_suffix()),
    );
    let schema = &SchemaSet::builtin().risk_score;
    let messages = read_to_end(&cc, topic, Duration::from_secs(600))
        .with_context(|| format!("reading {topic}"))?;
    bar.set_message(format!("decoding {} scores", messages.len()));
    let mut versions = std::collections::BTreeSet::new();
    let rows = messages
        .iter()
        .map(|msg| {
            let payload = msg.payload().unwrap_or_default();
            let (id, mut body) = unframe(payload).context("score without Confluent header")?;
            anyhow::ensure!(
                id == schema.id,
                "{topic} holds a record with schema id {id}, expected RiskScore ({})",
                schema.id
            );
            let value = apache_avro::from_avro_datum(&schema.avro, &mut body, None)?;
            if let Some(out) = dump.as_deref_mut() {
                write_features(out, &value)?;
            }
            let (row, version) = score_row(value)?;
            versions.insert(version);
            Ok(row)
        })
        .collect::<Result<Vec<_>>>()?;
    bar.finish_and_clear();
    Ok((rows, versions.into_iter().collect()))
}

/// One line of `eval --features`: account, window end, score and the
/// non-NULL features of an account score, or `cluster=ID` for a member
/// score.
fn write_features(out: &mut dyn std::io::Write, v: &Value) -> Result<()> {
    let Value::Record(fields) = v else {
        anyhow::bail!("score is not a record")
    };
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let (
        Some(Value::String(account)),
        Some(Value::TimestampMillis(end)),
        Some(Value::Double(score)),
    ) = (get("account_id"), get("window_end"), get("score"))
    else {
        anyhow::bail!("score without account_id, window_end or score")
    };
    write!(out, "{account}\t{end}\t{score}")?;
    if let Some(Value::Union(1, cluster)) = get("cluster_id") {
        if let Value::String(c) = cluster.as_ref() {
            writeln!(out, "\tcluster={c}")?;
        }
        return Ok(());
    }
    if let Some(Value::Array(items)) = get("features") {
        for item in items {
            let Value::Record(f) = item else { continue };
            if let (Some((_, Value::String(name))), Some((_, Value::Union(_, value)))) =
                (f.first(), f.get(1))
            {
                if let Value::Double(x) = value.as_ref() {
                    write!(out, "\t{name}={x}")?;
                }
            }
        }
    }
    writeln!(out)?;
    Ok(())
}

fn score_row(v: Value) -> Result<(ScoreRow, String)> {
    let Value::Record(fields) = v else {
        anyhow::bail!("score is not a record")
    };
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let string = |v: Option<&Value>| match v {
        Some(Value::String(s)) | Some(Value::Enum(_, s)) => s.clone(),
        _ => String::new(),
    };
    let time = |v: Option<&Value>| match v {
        Some(Value::TimestampMillis(t)) | Some(Value::Long(t)) => *t,
        _ => 0,
    };
    let reasons = match get("reasons") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|r| match r {
                Value::Record(f) => {
                    let find = |n: &str| f.iter().find(|(k, _)| k == n).map(|(_, v)| v);
                    let d = |n: &str| match find(n) {
                        Some(Value::Double(x)) => *x,
                        _ => 0.0,
                    };
                    Some((string(find("feature")), d("value"), d("contribution")))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let row = ScoreRow {
        account_id: string(get("account_id")),
        window_start: time(get("window_start")),
        window_end: time(get("window_end")),
        score: match get("score") {
            Some(Value::Double(s)) => *s,
            _ => 0.0,
        },
        level: string(get("level")),
        reasons,
        event_count: match get("event_count") {
            Some(Value::Long(n)) => *n,
            _ => 0,
        },
        member: matches!(get("cluster_id"), Some(Value::Union(1, _))),
    };
    Ok((row, string(get("model_version"))))
}

pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(
            "      {msg:<48} [{bar:30}] {percent:>3}% {human_pos}/{human_len} ETA {eta}",
        )
        .expect("constant template")
        .progress_chars("=> "),
    );
    b.set_message(msg.to_string());
    b
}

pub fn spinner(msg: String) -> ProgressBar {
    let b = ProgressBar::new_spinner();
    b.set_style(
        ProgressStyle::with_template("      {spinner} {msg} ({elapsed})")
            .expect("constant template"),
    );
    b.set_message(msg);
    b.enable_steady_tick(Duration::from_millis(120));
    b
}

/// Worker counters as (name, value) rows for reports.
pub fn counter_rows(m: &Metrics) -> Vec<(String, u64)> {
    let mut rows = vec![
        ("requests consumed", m.requests_consumed),
        ("responses consumed", m.responses_consumed),
        ("requests out of order", m.out_of_order_requests),
        ("responses out of order", m.out_of_order_responses),
        ("account versions read", m.account_versions),
        ("windows emitted", m.windows_closed),
        ("scores emitted", m.scores_emitted),
        ("requests scored", m.requests_scored),
        ("requests without response", m.requests_without_response),
        ("requests of unknown accounts", m.events_unknown_account),
        ("duplicate requests dropped", m.duplicate_requests),
        ("duplicate responses dropped", m.duplicate_responses),
        ("responses matching no request", m.unmatched_responses),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect::<Vec<_>>();
    for (kind, n) in &m.rejected {
        rows.push((format!("DLQ {}", kind.as_str()), *n));
    }
    rows
}

/// One `ClusterRisk` record, as eval reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterRow {
    pub cluster_id: String,
    pub window_start: i64,
    pub window_end: i64,
    pub score: f64,
    pub level: String,
    pub member_count: i64,
    pub broad: bool,
    pub members: Vec<String>,
    pub features: Vec<(String, Option<f64>)>,
    pub reasons: Vec<(String, f64, f64)>,
}

/// Read and decode the whole clusters topic.
pub fn read_clusters(cfg: &Config, topic: &str) -> Result<Vec<ClusterRow>> {
    let mut cc = cfg.consumer_config();
    cc.set(
        "group.id",
        format!("{}-cluster-reader-{}", cfg.kafka.group_id, run_suffix()),
    );
    let schema = &SchemaSet::builtin().cluster_risk;
    let messages = read_to_end(&cc, topic, Duration::from_secs(600))
        .with_context(|| format!("reading {topic}"))?;
    messages
        .iter()
        .map(|msg| {
            let payload = msg.payload().unwrap_or_default();
            let (id, mut body) =
                unframe(payload).context("cluster record without Confluent header")?;
            anyhow::ensure!(
                id == schema.id,
                "{topic} holds schema id {id}, expected ClusterRisk"
            );
            let Value::Record(fields) =
                apache_avro::from_avro_datum(&schema.avro, &mut body, None)?
            else {
                anyhow::bail!("cluster record is not a record")
            };
            let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            let string = |v: Option<&Value>| match v {
                Some(Value::String(s)) | Some(Value::Enum(_, s)) => s.clone(),
                _ => String::new(),
            };
            let long = |v: Option<&Value>| match v {
                Some(Value::TimestampMillis(t)) | Some(Value::Long(t)) => *t,
                _ => 0,
            };
            let double = |v: Option<&Value>| match v {
                Some(Value::Double(x)) => Some(*x),
                Some(Value::Union(_, b)) => match **b {
                    Value::Double(x) => Some(x),
                    _ => None,
                },
                _ => None,
            };
            let records = |name: &str| match get(name) {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|r| match r {
                        Value::Record(f) => Some(f.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Ok(ClusterRow {
                cluster_id: string(get("cluster_id")),
                window_start: long(get("window_start")),
                window_end: long(get("window_end")),
                score: double(get("score")).unwrap_or(0.0),
                level: string(get("level")),
                member_count: long(get("member_count")),
                broad: matches!(get("broad"), Some(Value::Boolean(true))),
                members: match get("members") {
                    Some(Value::Array(a)) => a.iter().map(|v| string(Some(v))).collect(),
                    _ => Vec::new(),
                },
                features: records("features")
                    .into_iter()
                    .map(|f| (string(Some(&f[0].1)), double(Some(&f[1].1))))
                    .collect(),
                reasons: records("reasons")
                    .into_iter()
                    .map(|f| {
                        (
                            string(Some(&f[0].1)),
                            double(Some(&f[1].1)).unwrap_or(0.0),
                            double(Some(&f[2].1)).unwrap_or(0.0),
                        )
                    })
                    .collect(),
            })
        })
        .collect()
}
