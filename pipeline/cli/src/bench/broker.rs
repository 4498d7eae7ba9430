//! The bench's figures on a broker: the same generated traffic written to
//! it once, then, in this run, read by a bare consumer (what the broker
//! and client can deliver at all), by one worker, by two workers of one
//! group, and finally produced live at half the one-worker rate to measure
//! how long scores take to be acknowledged after their window closes.
//!
//! Every pipeline run is the account stage (the worker loop with its
//! exactly-once commits, member rows to the features topic included) with
//! its own group and output topics; the cluster stage is a second
//! consumer group in production and is not timed here.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use distill_watch::config::{Config, Stage};
use distill_watch::worker::Progress;
use distill_watch_traffic::write::{delivery_order, Kind};
use distill_watch_traffic::{Record, Traffic};

use super::{cpu_time, Rate};
use crate::session;

#[derive(Debug, Serialize)]
pub struct Latency {
    /// Exchanges per second offered (half the one-worker rate).
    pub offered_per_s: f64,
    pub exchanges: u64,
    /// Base windows with a sample (closed by the watermarks, not flushed).
    pub windows: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct BrokerReport {
    pub bootstrap: String,
    pub partitions: i32,
    /// Writing the input (accounts, requests, responses), messages/s.
    pub write_msgs_per_s: f64,
    pub bare_consumer: Rate,
    pub one_worker: Rate,
    /// Where the one worker's wall time went; the remainder is polling,
    /// waiting for input and the group join.
    pub one_worker_stages: Vec<super::Stage>,
    /// Transactions the one worker committed.
    pub one_worker_commits: u64,
    /// One worker / bare consumer, per wall second.
    pub pipeline_ratio: f64,
    pub two_workers: Rate,
    /// Two workers / one worker, per wall second.
    pub scaling: f64,
    pub latency: Option<Latency>,
}

/// Where the broker runs and for how long the latency run produces.
pub struct BrokerArgs<'a> {
    pub bootstrap: Option<&'a str>,
    pub latency_seconds: f64,
}

pub async fn run(cfg: &Config, traffic: &Traffic, args: &BrokerArgs<'_>) -> Result<BrokerReport> {
    let mut cfg = cfg.clone();
    let _local = match args.bootstrap {
        Some(addr) => {
            cfg.kafka.bootstrap_servers = addr.to_string();
            None
        }
        None => Some(session::local_broker(&mut cfg)?),
    };
    eprintln!("      broker at {}", cfg.kafka.bootstrap_servers);
    // The account stage only, as a production worker group runs it.
    cfg.clusters.stage = Stage::Accounts;
    cfg.worker.exit_at_eof = true;
    let suffix = format!("bench-{}", session::run_suffix());
    let inputs = with_suffix(&cfg, &suffix, true);
    session::create(&inputs, &session::topic_specs(&inputs, session::PARTITIONS)).await?;
    let exchanges = traffic.requests.len() as u64;
    let events = (traffic.requests.len() + traffic.responses.len()) as u64;
    let messages = traffic.accounts.len() + events as usize;
    eprintln!("[b1/5] writing {messages} messages to the broker");
    let t = Instant::now();
    session::write(&inputs, traffic).await?;
    let write_msgs_per_s = messages as f64 / t.elapsed().as_secs_f64().max(1e-9);

    eprintln!("[b2/5] a bare consumer reading the requests and responses");
    let bare_consumer = bare_read(
        &inputs,
        traffic.requests.len() as u64,
        traffic.responses.len() as u64,
    )?;
    let bare_consumer = Rate::of(exchanges, bare_consumer.0, bare_consumer.1);

    eprintln!("[b3/5] one worker scoring the same topics");
    let one = outputs_of(&inputs, &format!("{suffix}-one"));
    session::create(&one, &session::topic_specs(&one, session::PARTITIONS)).await?;
    let (t0, c0) = (Instant::now(), cpu_time()?);
    let progress = Arc::new(Progress::default());
    let m = session::score_watched(&one, Some(events), progress.clone()).await?;
    let one_worker = Rate::of(exchanges, t0.elapsed(), cpu_time()? - c0);
    let times = *progress.times.lock().unwrap_or_else(|e| e.into_inner());
    let mut one_worker_stages = super::stage_rows(&times, one_worker.wall_s);
    // Pairs score in parallel: the closing stages overlap in wall time.
    let busy = (times.decode + times.window + times.closing_wall + times.sink).as_secs_f64();
    let share = |s: f64| s / one_worker.wall_s.max(1e-9);
    one_worker_stages.push(super::Stage {
        stage: "closing (wall)",
        seconds: times.closing_wall.as_secs_f64(),
        share: share(times.closing_wall.as_secs_f64()),
    });
    one_worker_stages.push(super::Stage {
        stage: "poll, wait, join",
        seconds: (one_worker.wall_s - busy).max(0.0),
        share: share((one_worker.wall_s - busy).max(0.0)),
    });
    anyhow::ensure!(
        m.requests_consumed == exchanges,
        "the worker read {} requests of {exchanges}",
        m.requests_consumed
    );

    eprintln!("[b4/5] two workers of one group scoring the same topics");
    let two = outputs_of(&inputs, &format!("{suffix}-two"));
    session::create(&two, &session::topic_specs(&two, session::PARTITIONS)).await?;
    let (t0, c0) = (Instant::now(), cpu_time()?);
    let consumed = two_workers(&two)?;
    let two_workers = Rate::of(exchanges, t0.elapsed(), cpu_time()? - c0);
    // A rebalance re-reads from the last commit: at least every event.
    anyhow::ensure!(
        consumed >= events,
        "the two workers read {consumed} events of {events}"
    );

    let latency = if args.latency_seconds > 0.0 {
        let offered = one_worker.per_wall_s / 2.0;
        eprintln!(
            "[b5/5] live: {offered:.0} exchanges/s (half the one-worker rate) for {:.0} s, close → ack latency",
            args.latency_seconds
        );
        let live = with_suffix(&cfg, &format!("{suffix}-live"), true);
        session::create(&live, &session::topic_specs(&live, session::PARTITIONS)).await?;
        Some(live_latency(&live, traffic, offered, args.latency_seconds).await?)
    } else {
        None
    };
    Ok(BrokerReport {
        bootstrap: cfg.kafka.bootstrap_servers.clone(),
        partitions: session::PARTITIONS,
        write_msgs_per_s,
        pipeline_ratio: one_worker.per_wall_s / bare_consumer.per_wall_s,
        scaling: two_workers.per_wall_s / one_worker.per_wall_s,
        bare_consumer,
        one_worker,
        one_worker_stages,
        one_worker_commits: m.commits,
        two_workers,
        latency,
    })
}

/// `cfg` with its own topics (inputs too, or only outputs) and group.
fn with_suffix(cfg: &Config, suffix: &str, inputs_too: bool) -> Config {
    let mut c = cfg.clone();
    session::suffix_topics(&mut c, suffix, inputs_too);
    c.topics.features = format!("{}.{suffix}", cfg.topics.features);
    c.topics.clusters = format!("{}.{suffix}", cfg.topics.clusters);
    c
}

/// The inputs of `inputs`, with outputs and group of their own.
fn outputs_of(inputs: &Config, suffix: &str) -> Config {
    with_suffix(inputs, suffix, false)
}

/// Read both event topics to the known totals with the worker's consumer
/// settings and a group of its own (so it pays the same group join), and
/// nothing else. Returns (wall, CPU) time.
fn bare_read(cfg: &Config, requests: u64, responses: u64) -> Result<(Duration, Duration)> {
    let (t0, c0) = (Instant::now(), cpu_time()?);
    let mut cc = cfg.consumer_config();
    cc.set("group.id", format!("{}-bare", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range");
    let consumer: BaseConsumer = cc.create()?;
    consumer.subscribe(&[&cfg.topics.requests, &cfg.topics.responses])?;
    let want = BTreeMap::from([
        (cfg.topics.requests.as_str(), requests),
        (cfg.topics.responses.as_str(), responses),
    ]);
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    let mut bytes = 0u64;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while want
        .iter()
        .any(|(t, n)| got.get(*t).copied().unwrap_or(0) < *n)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the bare consumer read {got:?} of {want:?} in 30 minutes"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                // Touch the bytes as a decoder would have to.
                bytes += m.payload().map_or(0, |p| p.len() as u64);
                *got.entry(m.topic().to_string()).or_default() += 1;
            }
            Some(Err(e)) => anyhow::bail!("bare consumer: {e}"),
            None => {}
        }
    }
    std::hint::black_box(bytes);
    Ok((t0.elapsed(), cpu_time()? - c0))
}

/// Two workers in one group, each on its own thread and runtime as two
/// processes would be; both run until the group's input is scored.
/// Returns the events they consumed together.
fn two_workers(cfg: &Config) -> Result<u64> {
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name(format!("bench-worker-{i}"))
                .spawn(move || -> Result<u64> {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .enable_all()
                        .build()?;
                    let progress = Progress::default();
                    let summary = rt.block_on(distill_watch::worker::run_with_progress(
                        &cfg,
                        std::future::pending(),
                        &progress,
                    ))?;
                    let m = summary.metrics;
                    Ok(m.requests_consumed + m.responses_consumed)
                })
                .context("starting a worker thread")
        })
        .collect::<Result<_>>()?;
    let mut consumed = 0;
    for t in threads {
        consumed += t
            .join()
            .map_err(|_| anyhow::anyhow!("a bench worker panicked"))??;
    }
    Ok(consumed)
}

/// Event time the live run covers at least.
const MIN_LIVE_EVENT_TIME_MS: i64 = 3_600_000;

/// Produce the traffic's first `seconds × offered` exchanges (or its first
/// [`MIN_LIVE_EVENT_TIME_MS`] of event time, if more; in delivery
/// order, accounts first) at `offered` exchanges/s while one worker scores
/// them live; stop it once it has read them all and emitted what the
/// watermarks closed. Returns the close → ack percentiles.
async fn live_latency(
    cfg: &Config,
    traffic: &Traffic,
    offered: f64,
    seconds: f64,
) -> Result<Latency> {
    // At least the first hours of event time, whatever the rate: windows
    // must close during the run for there to be anything to measure.
    let first_ms = traffic.requests.first().map_or(0, |r| r.deliver_ms);
    let span = traffic
        .requests
        .partition_point(|r| r.deliver_ms < first_ms + MIN_LIVE_EVENT_TIME_MS);
    let n = ((offered * seconds) as usize)
        .max(span)
        .clamp(1, traffic.requests.len());
    let last_ms = traffic.requests[n - 1].deliver_ms;
    let requests = &traffic.requests[..n];
    let responses = &traffic.responses[..traffic
        .responses
        .partition_point(|r| r.deliver_ms <= last_ms)];
    let events = (requests.len() + responses.len()) as u64;
    let producer = session::traffic_producer(cfg)?;
    for a in &traffic.accounts {
        send(&producer, &cfg.topics.accounts, a).await?;
    }
    producer.flush(Duration::from_secs(60))?;

    let mut live = cfg.clone();
    live.worker.exit_at_eof = false;
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let (live, progress) = (live.clone(), progress.clone());
        tokio::spawn(async move {
            distill_watch::worker::run_with_progress(
                &live,
                async {
                    let _ = stop_rx.await;
                },
                &progress,
            )
            .await
        })
    };
    // Offered in delivery order, requests and responses merged as the
    // gateway would hand them over, paced per exchange.
    let started = Instant::now();
    let mut sent_exchanges = 0u64;
    for (kind, record) in delivery_order(requests, responses) {
        if kind == Kind::Response {
            send(&producer, &cfg.topics.responses, record).await?;
            continue;
        }
        send(&producer, &cfg.topics.requests, record).await?;
        sent_exchanges += 1;
        if sent_exchanges.is_multiple_of(64) {
            let due = Duration::from_secs_f64(sent_exchanges as f64 / offered);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let offered_for = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while progress.consumed.load(Ordering::Relaxed) < events {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the live worker read {} of {events} events",
            progress.consumed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What the watermarks closed is committed within the step that read
    // the last input; one more poll interval settles it.
    tokio::time::sleep(live.worker.batch_max_wait * 2).await;
    let _ = stop_tx.send(());
    worker.await??;
    let mut samples = progress
        .close_to_ack
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    anyhow::ensure!(
        !samples.is_empty(),
        "no window closed during the live run ({n} exchanges): run it longer (--latency-seconds)"
    );
    samples.sort();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    Ok(Latency {
        offered_per_s: sent_exchanges as f64 / offered_for.as_secs_f64().max(1e-9),
        exchanges: sent_exchanges,
        windows: samples.len(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    })
}

async fn send(producer: &FutureProducer, topic: &str, r: &Record) -> Result<()> {
    loop {
        let rec = FutureRecord::to(topic)
            .key(r.key.as_bytes())
            .payload(&r.value)
            .timestamp(r.deliver_ms);
        match producer.send_result(rec) {
            // Delivery is checked by the worker reading every event.
            Ok(_) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                _,
            )) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e).with_context(|| format!("producing to {topic}")),
        }
    }
}
