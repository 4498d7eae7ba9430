//! Metrics and health over HTTP, for Prometheus and Kubernetes probes:
//! `GET /metrics` (Prometheus text format, rendered by
//! `metrics-exporter-prometheus`), `GET /healthz` (alive: the loops are
//! stepping) and `GET /readyz` (assigned and caught up). Off unless
//! `[metrics] listen` names an address.
//!
//! Every metric name is defined here, in one place; the loops only call the
//! functions below. Counters are set to the loops' own totals
//! ([`crate::metrics::Metrics`], the cluster stage's `StageMetrics`) rather
//! than incremented beside them, so a scrape can never disagree with the
//! summary a worker prints when it stops. Without a listener nothing is
//! installed and every call is a no-op of the `metrics` facade.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::metrics::Metrics;
use crate::source::TopicPartition;
use crate::window::Side;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("[metrics] listen: {0:?} is not an address (host:port, e.g. 0.0.0.0:9898)")]
    Address(String),
    #[error("cannot listen on {addr} for /metrics: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
}

pub const EVENTS_CONSUMED: &str = "distill_watch_events_consumed_total";
pub const CONSUMER_LAG: &str = "distill_watch_consumer_lag";
pub const DLQ_RECORDS: &str = "distill_watch_dlq_records_total";
pub const SCORES_EMITTED: &str = "distill_watch_scores_emitted_total";
pub const SCORES_REVISED: &str = "distill_watch_scores_revised_total";
pub const CLUSTER_RECORDS: &str = "distill_watch_cluster_records_emitted_total";
pub const WINDOWS_CLOSED: &str = "distill_watch_windows_closed_total";
pub const OPEN_WINDOWS: &str = "distill_watch_open_windows";
pub const BUFFERED_ROWS: &str = "distill_watch_buffered_rows";
pub const BUFFERED_BYTES: &str = "distill_watch_buffered_bytes";
pub const CLOSE_TO_ACK: &str = "distill_watch_close_to_ack_seconds";
pub const TRANSACTION_ABORTS: &str = "distill_watch_transaction_aborts_total";
pub const REBALANCES: &str = "distill_watch_rebalances_total";
pub const COMMITS: &str = "distill_watch_commits_total";
pub const ASSIGNED_PARTITIONS: &str = "distill_watch_assigned_partitions";
pub const READY: &str = "distill_watch_ready";
pub const RELOADS: &str = "distill_watch_reloads_total";

/// Close → ack buckets (seconds): the target is a p99 under a second.
const CLOSE_TO_ACK_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A loop that has not finished a step for this long is reported dead
/// (`/healthz` 503), so that Kubernetes restarts a stuck worker. Far above
/// any step: a step waits at most `batch_max_wait` and scores for at most a
/// second before it polls again; a commit waits at most `produce_timeout`.
pub const STALL: Duration = Duration::from_secs(120);

/// What the probes answer: the liveness beats and readiness of the loops of
/// this process (one per stage). Process-wide, like the metrics recorder.
pub struct Health {
    started: Instant,
    /// Milliseconds after `started` of the last finished step; 0: none yet.
    last_step_ms: AtomicU64,
    ready: Mutex<BTreeMap<&'static str, bool>>,
}

static HEALTH: LazyLock<Health> = LazyLock::new(|| Health {
    started: Instant::now(),
    last_step_ms: AtomicU64::new(0),
    ready: Mutex::new(BTreeMap::new()),
});

pub fn health() -> &'static Health {
    &HEALTH
}

impl Health {
    /// A loop finished a step.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_step_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// Alive: no loop has started stepping yet (still loading, joining), or
    /// one finished a step within [`STALL`].
    pub fn alive(&self) -> bool {
        match self.last_step_ms.load(Ordering::Relaxed) {
            0 => true,
            ms => {
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms))
                    < STALL
            }
        }
    }

    /// Record whether `stage` ("accounts", "clusters") is ready.
    pub fn set_ready(&self, stage: &'static str, ready: bool) {
        let mut stages = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        if stages.insert(stage, ready) != Some(ready) {
            tracing::info!(stage, ready, "readiness changed");
        }
        let all = !stages.is_empty() && stages.values().all(|r| *r);
        gauge!(READY).set(if all { 1.0 } else { 0.0 });
    }

    /// Ready: every stage this process runs has its partitions assigned and
    /// has caught up with them.
    pub fn ready(&self) -> bool {
        let stages = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        !stages.is_empty() && stages.values().all(|r| *r)
    }
}

/// Start serving `/metrics`, `/healthz` and `/readyz` on `listen`, with the
/// Prometheus recorder installed for the whole process. Returns the bound
/// address (`listen` may ask for port 0). An empty `listen`: nothing.
pub async fn serve(listen: &str) -> Result<Option<SocketAddr>, TelemetryError> {
    if listen.trim().is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = listen
        .trim()
        .parse()
        .map_err(|_| TelemetryError::Address(listen.to_string()))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(CLOSE_TO_ACK.into()), &CLOSE_TO_ACK_BUCKETS)
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?
        // Lag gauges of partitions this worker no longer holds must not
        // linger beside the new owner's.
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(Duration::from_secs(60)),
        )
        .install_recorder()
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?;
    describe();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(accept(listener, handle));
    Ok(Some(bound))
}

async fn accept(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(route(&req, &handle)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "metrics endpoint: connection ended");
            }
        });
    }
}

fn route<B>(req: &Request<B>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String, content_type: &'static str| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into(), PLAIN);
    }
    let probe = |ok: bool, yes: &str, no: &str| {
        if ok {
            text(StatusCode::OK, format!("{yes}\n"), PLAIN)
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{no}\n"), PLAIN)
        }
    };
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            handle.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/healthz" => probe(
            health().alive(),
            "alive",
            "stalled: no step finished recently",
        ),
        "/readyz" => probe(
            health().ready(),
            "ready",
            "not ready: partitions not assigned or not caught up",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n".into(),
            PLAIN,
        ),
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(EVENTS_CONSUMED, "Event messages consumed, by topic");
    describe_gauge!(
        CONSUMER_LAG,
        "Messages between the worker's position and the partition's end, as of the last fetch"
    );
    describe_counter!(
        DLQ_RECORDS,
        "Records sent to the dead-letter queue, by reason"
    );
    describe_counter!(SCORES_EMITTED, "Account scores emitted, by level");
    describe_counter!(
        SCORES_REVISED,
        "Of the scores emitted, revisions of an earlier window's"
    );
    describe_counter!(
        CLUSTER_RECORDS,
        "Cluster risk records emitted by the cluster stage"
    );
    describe_counter!(WINDOWS_CLOSED, "Base windows closed and scored");
    describe_gauge!(OPEN_WINDOWS, "Base windows open now, all partition pairs");
    describe_gauge!(BUFFERED_ROWS, "Rows held in open base windows");
    describe_gauge!(
        BUFFERED_BYTES,
        Unit::Bytes,
        "Bytes held: open base windows and roll-ups' held rows"
    );
    describe_histogram!(
        CLOSE_TO_ACK,
        Unit::Seconds,
        "From the step whose input closed a window to the acknowledgement of its scores"
    );
    describe_counter!(TRANSACTION_ABORTS, "Kafka transactions aborted");
    describe_counter!(
        RELOADS,
        "Changed jobs or scoring models seen, by outcome (applied, refused)"
    );
    describe_counter!(REBALANCES, "Partition assignments and revocations received");
    describe_counter!(
        COMMITS,
        "Cycles committed (one transaction each with exactly-once)"
    );
    describe_gauge!(
        ASSIGNED_PARTITIONS,
        "Input partitions assigned to this worker, by stage"
    );
    describe_gauge!(
        READY,
        "1 when every stage of this process is assigned and caught up"
    );
}

/// The account stage's gauges of one step.
pub struct WorkerGauges<'a> {
    pub open_windows: usize,
    pub buffered_rows: usize,
    pub buffered_bytes: usize,
    pub assignment: &'a BTreeSet<TopicPartition>,
    /// Per assigned partition: its topic's name and lag, where known.
    pub lag: Vec<(&'a str, i32, i64)>,
}

/// The account stage's counters and gauges after a step.
pub fn publish_worker(m: &Metrics, g: &WorkerGauges<'_>, topics: [&str; 2]) {
    for (side, n) in [
        (Side::Requests, m.requests_consumed),
        (Side::Responses, m.responses_consumed),
    ] {
        counter!(EVENTS_CONSUMED, "topic" => topics[side.idx()].to_string()).absolute(n);
    }
    for (kind, n) in &m.rejected {
        counter!(DLQ_RECORDS, "kind" => kind.as_str()).absolute(*n);
    }
    for (level, n) in &m.scores_by_level {
        counter!(SCORES_EMITTED, "level" => *level).absolute(*n);
    }
    counter!(SCORES_REVISED).absolute(m.scores_revised);
    counter!(WINDOWS_CLOSED).absolute(m.windows_closed);
    counter!(COMMITS, "stage" => "accounts").absolute(m.commits);
    gauge!(OPEN_WINDOWS).set(g.open_windows as f64);
    gauge!(BUFFERED_ROWS).set(g.buffered_rows as f64);
    gauge!(BUFFERED_BYTES).set(g.buffered_bytes as f64);
    gauge!(ASSIGNED_PARTITIONS, "stage" => "accounts").set(g.assignment.len() as f64);
    for &(topic, partition, lag) in &g.lag {
        gauge!(CONSUMER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string())
            .set(lag as f64);
    }
}

/// The cluster stage's counters after a step.
pub fn publish_clusters(clusters_emitted: u64, commits: u64, assigned: usize) {
    counter!(CLUSTER_RECORDS).absolute(clusters_emitted);
    counter!(COMMITS, "stage" => "clusters").absolute(commits);
    gauge!(ASSIGNED_PARTITIONS, "stage" => "clusters").set(assigned as f64);
}

pub fn close_to_ack(d: Duration) {
    histogram!(CLOSE_TO_ACK).record(d.as_secs_f64());
}

pub fn transaction_aborted() {
    counter!(TRANSACTION_ABORTS).increment(1);
}

pub fn reload(outcome: &'static str) {
    counter!(RELOADS, "outcome" => outcome).increment(1);
}

pub fn rebalance(stage: &'static str) {
    counter!(REBALANCES, "stage" => stage).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_stage_is() {
        let h = Health {
            started: Instant::now(),
            last_step_ms: AtomicU64::new(0),
            ready: Mutex::new(BTreeMap::new()),
        };
        assert!(!h.ready(), "no stage yet");
        assert!(h.alive(), "alive before the first step");
        h.set_ready("accounts", true);
        assert!(h.ready());
        h.set_ready("clusters", false);
        assert!(!h.ready());
        h.set_ready("clusters", true);
        assert!(h.ready());
        h.beat();
        assert!(h.alive());
    }
}
