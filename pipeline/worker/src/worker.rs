//! The worker loop: poll → decode → window → (on close) join, enrich, jobs,
//! score → commit.
//!
//! Each partition pair commits on its own: the scores of the windows it
//! closed, the DLQ records of its rejected or late input, its checkpoints and
//! its input offsets, as one [`Cycle`] (one Kafka transaction with exactly-once
//! delivery). Offsets never pass a message an open window still holds, and
//! the checkpoint says how far windows were emitted and how to rebuild the
//! watermark, so whoever reads the partition next, after a crash, a
//! rebalance or a restart, emits exactly the records an uninterrupted run
//! would have, each once.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::Int32Type;

use crate::checkpoint::Checkpoints;
use crate::config::{Config, Delivery};
use crate::decode::{RawMessage, RecordDecoder, Reject, RejectKind, PARTITION_COL};
use crate::enrich::AccountTable;
use crate::io::{Accounts, Sink, Source};
use crate::metrics::{Metrics, StageTimes};
use crate::process::{BoundaryState, Detector, ProcessError, WindowResult};
use crate::rollup::Rollups;
use crate::schemas::SchemaSet;
use crate::sink::{Cycle, DlqRecord, KafkaSink, SinkError};
use crate::source::{AccountsSource, Change, EventSource, SourceError, TopicPartition};
use crate::telemetry;
use crate::topics::{create_topics, TopicSpec};
use crate::window::{PartitionWindows, Side, WindowSpec};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Connect(#[from] crate::connect::ConnectError),
    #[error(transparent)]
    ClusterModel(#[from] crate::cluster::model::ClusterModelError),
    #[error(transparent)]
    ClusterStage(#[from] crate::cluster::stage::StageError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("decoder: {0}")]
    Decode(#[from] crate::decode::DecodeError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Topics(#[from] crate::topics::TopicError),
    #[error("the group did not finish its input within {timeout:?}: partitions {partitions:?} are not scored and committed to their end (held by another member, or a dead one whose session has not expired)")]
    GroupNotDone {
        timeout: Duration,
        partitions: Vec<TopicPartition>,
    },
}

/// What a finished run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub metrics: Metrics,
    /// The cluster stage's counters, when this process ran it.
    pub clusters: Option<crate::cluster::stage::StageMetrics>,
}

/// Live counters a caller can watch while a run works (progress bars).
#[derive(Debug, Default)]
pub struct Progress {
    /// Event messages consumed (both topics).
    pub consumed: AtomicU64,
    pub windows_closed: AtomicU64,
    pub scores_emitted: AtomicU64,
    /// Per committed base window: from the step whose input moved the
    /// watermarks past its end to the acknowledgement of the transaction
    /// holding its scores. Windows a bounded run flushes at its end are
    /// not closed by a watermark and have no sample. At most
    /// [`LATENCY_SAMPLES`], the earliest.
    pub close_to_ack: std::sync::Mutex<Vec<Duration>>,
    /// Time spent per stage of the loop so far.
    pub times: std::sync::Mutex<StageTimes>,
}

/// Samples [`Progress::close_to_ack`] keeps.
pub const LATENCY_SAMPLES: usize = 1 << 20;

/// Run until `shutdown` resolves or, with `worker.exit_at_eof`, until the
/// group's whole input was scored and committed.
pub async fn run(
    cfg: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, WorkerError> {
    run_with_progress(cfg, shutdown, &Progress::default()).await
}

/// Jobs and model from the configuration, checked against the windows.
pub async fn load_detector(cfg: &Config) -> Result<Detector, WorkerError> {
    let delay_ms = cfg.window.max_response_delay.as_millis() as i64;
    let detector = Detector::load(&cfg.jobs.dir, &cfg.jobs.scoring, delay_ms).await?;
    if delay_ms > detector.jobs.window_ms {
        return Err(WorkerError::Config(format!(
            "[window] max_response_delay ({delay_ms} ms) exceeds the jobs' window ({} ms)",
            detector.jobs.window_ms
        )));
    }
    Ok(detector)
}

/// [`run`], updating `progress` as it goes: the stages `[clusters] stage`
/// names. Both in one process: one after the other in a bounded run (the
/// cluster stage then knows its input is complete), side by side live.
pub async fn run_with_progress(
    cfg: &Config,
    shutdown: impl Future<Output = ()>,
    progress: &Progress,
) -> Result<RunSummary, WorkerError> {
    use crate::cluster::stage::{run_clusters, StageOptions};
    use crate::config::Stage;
    use futures::FutureExt;
    crate::connect::check_async(cfg, crate::connect::TIMEOUT).await?;
    let stage = if cfg.clusters.enabled {
        cfg.clusters.stage
    } else {
        Stage::Accounts
    };
    let model = if stage == Stage::Accounts {
        None
    } else {
        Some(crate::cluster::ClusterModel::load(&cfg.clusters.model)?)
    };
    let options = |upstream_done| StageOptions {
        exit_at_eof: cfg.worker.exit_at_eof,
        upstream_done,
    };
    match (stage, model) {
        (Stage::Clusters, Some(model)) => {
            ensure_stage_topics(cfg, None).await?;
            let clusters = run_clusters(cfg, &model, options(false), shutdown).await?;
            Ok(RunSummary {
                metrics: Metrics::default(),
                clusters: Some(clusters),
            })
        }
        (Stage::Both, Some(model)) if cfg.worker.exit_at_eof => {
            let shutdown = shutdown.shared();
            let metrics = run_accounts(cfg, shutdown.clone(), progress).await?;
            let clusters = run_clusters(cfg, &model, options(true), shutdown).await?;
            Ok(RunSummary {
                metrics,
                clusters: Some(clusters),
            })
        }
        (Stage::Both, Some(model)) => {
            let shutdown = shutdown.shared();
            let (metrics, clusters) = tokio::join!(
                run_accounts(cfg, shutdown.clone(), progress),
                run_clusters(cfg, &model, options(false), shutdown)
            );
            Ok(RunSummary {
                metrics: metrics?,
                clusters: Some(clusters?),
            })
        }
        _ => Ok(RunSummary {
            metrics: run_accounts(cfg, shutdown, progress).await?,
            clusters: None,
        }),
    }
}

/// The internal topics of the stages, created when missing (as Kafka
/// Streams creates its internal topics): the checkpoint topic (compacted)
/// and, with clusters on, the features and clusters topics, each with as
/// many partitions as the input. Returns the checkpoint topic's partitions.
async fn ensure_stage_topics(cfg: &Config, inputs: Option<usize>) -> Result<usize, WorkerError> {
    // A consumer outside any group, for metadata only: one that subscribed
    // would join (and rebalance) the workers' group.
    let probe: rdkafka::consumer::BaseConsumer = cfg.client_config().create()?;
    let md = tokio::task::block_in_place(|| {
        rdkafka::consumer::Consumer::fetch_metadata(&probe, None, Duration::from_secs(10))
    })?;
    let count = |topic: &str| crate::topics::partition_count(&md, topic);
    let inputs = inputs.unwrap_or_else(|| count(&cfg.topics.requests)).max(1);
    let mut specs = Vec::new();
    let mut cp_partitions = count(&cfg.topics.checkpoints);
    if cp_partitions == 0 {
        tracing::info!(topic = %cfg.topics.checkpoints, partitions = inputs, "creating the checkpoint topic");
        specs.push(TopicSpec::new(&cfg.topics.checkpoints, inputs as i32).compacted());
        cp_partitions = inputs;
    }
    if cfg.clusters.enabled {
        for topic in [&cfg.topics.features, &cfg.topics.clusters] {
            if count(topic) == 0 {
                tracing::info!(topic = %topic, partitions = inputs, "creating topic");
                specs.push(TopicSpec::new(topic, inputs as i32));
            }
        }
    }
    if !specs.is_empty() {
        create_topics(&cfg.client_config(), &specs).await?;
    }
    Ok(cp_partitions)
}

/// The account stage: the worker loop over Kafka.
pub async fn run_accounts(
    cfg: &Config,
    shutdown: impl Future<Output = ()>,
    progress: &Progress,
) -> Result<Metrics, WorkerError> {
    let started = Instant::now();
    let mut detector = load_detector(cfg).await?;
    detector.publish_members =
        cfg.clusters.enabled && cfg.clusters.stage != crate::config::Stage::Clusters;
    tracing::info!(
        jobs = detector.jobs.jobs.len(),
        window_ms = detector.jobs.window_ms,
        model = %detector.model_version,
        delivery = ?cfg.worker.delivery,
        "detector loaded"
    );
    let source = EventSource::new(cfg, cfg.worker.exit_at_eof)?;
    let inputs = source.partitions();
    let cp_partitions = ensure_stage_topics(cfg, Some(inputs)).await?;
    if cfg.worker.delivery == Delivery::ExactlyOnce && cp_partitions < inputs {
        return Err(crate::checkpoint::CheckpointError::TooFewPartitions {
            topic: cfg.topics.checkpoints.clone(),
            have: cp_partitions,
            need: inputs,
        }
        .into());
    }
    let sink = KafkaSink::new(cfg, Checkpoints::new(cfg, cp_partitions));
    let accounts = AccountsSource::start(cfg, Duration::from_secs(120)).await?;
    let mut worker = WorkerLoop::new(cfg, &detector, source, sink, accounts)?
        .with_reloads(crate::reload::Reloads::watch(cfg, &detector));
    tokio::pin!(shutdown);
    loop {
        // Checked between steps only: a step is never cut in the middle
        // of a commit. A step waits at most `batch_max_wait` for input.
        if futures::poll!(&mut shutdown).is_ready() {
            tracing::info!("shutdown requested");
            break;
        }
        if worker.step(progress).await? == Step::Done {
            break;
        }
    }
    let metrics = worker.stop().await?;
    tracing::info!(
        elapsed_s = started.elapsed().as_secs_f64(),
        "worker stopped: {metrics}"
    );
    Ok(metrics)
}

/// What one [`WorkerLoop::step`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// With `exit_at_eof`: the group's whole input is scored and committed.
    Done,
}

/// Where the loop reads the time: the wall clock, or a simulation's.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The worker: one loop over a [`Source`], a [`Sink`] and [`Accounts`],
/// the same for Kafka and for the in-memory simulation. Each
/// [`step`](Self::step) polls once, places what came in windows, scores the
/// windows that closed and commits the partition pairs that are due.
pub struct WorkerLoop<'a, S: Source, K: Sink, A: Accounts> {
    cfg: &'a Config,
    detector: &'a Detector,
    source: S,
    sink: K,
    accounts: A,
    decoders: [RecordDecoder; 2],
    state: State<K::Pair>,
    clock: Clock,
    last_report: Instant,
    /// With exit_at_eof: when this worker's own input was done, and when
    /// the group's was last probed.
    own_done_at: Option<Instant>,
    last_probe: Option<Instant>,
    /// Changed jobs or model, validated (see `reload`).
    reloads: Option<crate::reload::Reloads>,
    /// The detector after the switches every pair has passed.
    current: Option<Arc<Detector>>,
    /// Pending switches: windows ending after the boundary are scored with
    /// the detector, until every pair has passed it.
    switches: Vec<(i64, Arc<Detector>)>,
}

/// Which detector scores a boundary: the current one, or a newer one for
/// boundaries after its switch.
pub(crate) struct Models<'d> {
    current: &'d Detector,
    switches: &'d [(i64, Arc<Detector>)],
}

impl Models<'_> {
    fn at(&self, end: i64) -> &Detector {
        self.switches
            .iter()
            .rev()
            .find(|(t, _)| end > *t)
            .map_or(self.current, |(_, d)| d)
    }

    fn newest(&self) -> &Detector {
        self.switches.last().map_or(self.current, |(_, d)| d)
    }
}

impl<'a, S: Source, K: Sink, A: Accounts> WorkerLoop<'a, S, K, A> {
    pub fn new(
        cfg: &'a Config,
        detector: &'a Detector,
        source: S,
        sink: K,
        accounts: A,
    ) -> Result<Self, WorkerError> {
        let set = SchemaSet::builtin();
        let skew = cfg.window.max_future_skew.as_millis() as i64;
        let max = cfg.worker.batch_max_messages;
        let spec = WindowSpec {
            size_ms: detector.jobs.window_ms,
            lateness_ms: detector.jobs.max_lateness_ms(),
            out_of_orderness_ms: cfg.window.out_of_orderness.as_millis() as i64,
            max_response_delay_ms: detector.max_response_delay_ms,
        };
        let clock: Clock = Arc::new(Instant::now);
        Ok(WorkerLoop {
            cfg,
            detector,
            source,
            sink,
            accounts,
            decoders: [
                RecordDecoder::new(&set.request, max, skew)?,
                RecordDecoder::new(&set.response, max, skew)?,
            ],
            state: State {
                spec,
                pairs: BTreeMap::new(),
                assignment: BTreeSet::new(),
                joined: false,
                caught_up: false,
                published_at: None,
                at_end: BTreeSet::new(),
                positions: BTreeMap::new(),
                paused: BTreeSet::new(),
                metrics: Metrics::default(),
                times: StageTimes::default(),
                close_to_ack: Vec::new(),
            },
            last_report: clock(),
            clock,
            own_done_at: None,
            last_probe: None,
            reloads: None,
            current: None,
            switches: Vec::new(),
        })
    }

    /// Read the time from `clock` instead of the wall clock (it decides when
    /// DLQ records are committed without a window and when the group is
    /// probed; never what a record contains).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.last_report = clock();
        self.clock = clock;
        self
    }

    /// Switch to changed jobs or model as `reloads` validates them.
    pub fn with_reloads(mut self, reloads: Option<crate::reload::Reloads>) -> Self {
        self.reloads = reloads;
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Time spent per stage so far.
    pub fn stage_times(&self) -> StageTimes {
        self.state.times
    }

    /// Rows (requests and responses) held now in open base windows.
    pub fn held_rows(&self) -> usize {
        self.state.buffered_rows()
    }

    /// Bytes held now: rows of open base windows, and roll-ups' held rows
    /// (for the memory benchmark).
    pub fn held_bytes(&self) -> (usize, usize) {
        let pairs = self.state.pairs.values();
        (
            pairs.clone().map(|p| p.windows.buffered_bytes()).sum(),
            pairs.map(|p| p.boundary.rollups.held_bytes()).sum(),
        )
    }

    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// The event-time watermark of `side` of partition pair `partition`
    /// (`None` before the pair is owned; `i64::MIN` before its first row).
    pub fn watermark(&self, side: Side, partition: i32) -> Option<i64> {
        self.state
            .pairs
            .get(&partition)
            .map(|p| p.windows.watermark(side))
    }

    /// Poll once and act on what came: windows, scores, commits.
    pub async fn step(&mut self, progress: &Progress) -> Result<Step, WorkerError> {
        let cfg = self.cfg;
        let polled = self
            .source
            .poll(cfg.worker.batch_max_messages, cfg.worker.batch_max_wait)
            .await?;
        let state = &mut self.state;
        let (requests, responses): (Vec<_>, Vec<_>) = polled
            .messages
            .into_iter()
            .partition(|(s, _)| *s == Side::Requests);
        let by_side = [requests, responses]
            .map(|v| v.into_iter().map(|(_, m)| m).collect::<Vec<RawMessage>>());
        let now = (self.clock)();
        for (i, (side, msgs)) in Side::BOTH.into_iter().zip(by_side).enumerate() {
            if !msgs.is_empty() {
                state.ingest(
                    side,
                    msgs,
                    &mut self.decoders[i],
                    self.source.topic(side),
                    now,
                )?;
            }
        }
        for p in polled.eofs {
            for side in Side::BOTH {
                let tp = (side, p);
                if !state.assignment.contains(&tp) {
                    continue;
                }
                // The EOF event names the partition, not the topic; whichever
                // side's position reached its fetched end is the one at it.
                if let Some((low, high)) = self.source.watermarks(side, p) {
                    let pos = state.positions.get(&tp).copied().unwrap_or(low);
                    if pos >= high {
                        state.at_end.insert(tp);
                    }
                }
            }
        }
        for change in polled.changes {
            state
                .apply_change(change, &mut self.sink, &self.source)
                .await?;
            self.own_done_at = None;
        }
        let m = &state.metrics;
        progress.consumed.store(
            m.requests_consumed + m.responses_consumed,
            Ordering::Relaxed,
        );
        let flush =
            cfg.worker.exit_at_eof && state.joined && state.assignment.is_subset(&state.at_end);
        for pair in state.pairs.values_mut() {
            if let Some(limit) = pair.windows.closable_until() {
                if pair.closable_seen.back().is_none_or(|(l, _)| limit > *l) {
                    // Bounded even if nothing is committed for long: the
                    // oldest entries only serve windows long emitted.
                    if pair.closable_seen.len() >= 4096 {
                        pair.closable_seen.pop_front();
                    }
                    pair.closable_seen.push_back((limit, now));
                }
            }
        }
        if let Some(d) = self.reloads.as_mut().and_then(|r| r.try_next()) {
            // The boundary the pair furthest ahead stands at: every window
            // ending after it is still to be scored, by any pair.
            let at = state
                .pairs
                .values()
                .map(|p| p.windows.emitted_until())
                .max()
                .unwrap_or(i64::MIN);
            tracing::info!(
                model = %d.model_version,
                boundary = at,
                "switching jobs and model: windows ending after the boundary are scored with them"
            );
            telemetry::reload("applied");
            self.switches.push((at, d));
        }
        let models = Models {
            current: self.current.as_deref().unwrap_or(self.detector),
            switches: &self.switches,
        };
        state
            .close_windows(&models, &self.accounts, flush, &self.clock)
            .await?;
        // Switches every pair has passed become the current detector.
        let slowest = state
            .pairs
            .values()
            .map(|p| p.windows.emitted_until())
            .min();
        while let (Some((t, _)), Some(slowest)) = (self.switches.first(), slowest) {
            if slowest < *t {
                break;
            }
            self.current = Some(self.switches.remove(0).1);
        }
        state
            .commit_due(
                &self.sink,
                &self.source,
                cfg.worker.commit_interval,
                now,
                flush,
                false,
            )
            .await?;
        state.balance(&mut self.source, cfg.worker.max_buffered_rows)?;
        let m = &state.metrics;
        progress
            .windows_closed
            .store(m.windows_closed, Ordering::Relaxed);
        progress
            .scores_emitted
            .store(m.scores_emitted, Ordering::Relaxed);
        *progress.times.lock().unwrap_or_else(|e| e.into_inner()) = state.times;
        if !state.close_to_ack.is_empty() {
            let mut v = progress
                .close_to_ack
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let room = LATENCY_SAMPLES.saturating_sub(v.len());
            v.extend(state.close_to_ack.drain(..).take(room));
        }
        // Once a second: the gauges walk every held batch.
        if state
            .published_at
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            state.published_at = Some(now);
            publish(state, &self.source);
        }
        if state.joined && !state.caught_up {
            // Checked every step: under load a partition's end is reached
            // only now and then.
            state.caught_up = state.assignment.iter().all(|&(side, p)| {
                self.source.watermarks(side, p).is_some_and(|(low, high)| {
                    state.positions.get(&(side, p)).copied().unwrap_or(low) >= high
                })
            });
            if state.caught_up {
                // The counters first: a scrape that sees the worker ready
                // sees everything it read to get there.
                publish(state, &self.source);
            }
        }
        telemetry::health().beat();
        if now.duration_since(self.last_report) >= Duration::from_secs(5) {
            self.last_report = now;
            let table = self.accounts.snapshot();
            state.metrics.accounts_in_table = table.len() as u64;
            state.metrics.account_versions = table.versions() as u64;
            tracing::info!(
                open_windows = state.open_windows(),
                buffered_rows = state.buffered_rows(),
                rollup_rows = state.rollup_rows(),
                "{}",
                state.metrics
            );
        }
        if !flush || state.open_windows() > 0 || state.rollups_held() > 0 || state.keeps_windows() {
            return Ok(Step::Continue);
        }
        let done_at = *self.own_done_at.get_or_insert_with(|| {
            tracing::info!(partitions = ?state.assignment, "assigned partitions read to their end, windows emitted and committed");
            now
        });
        if self
            .last_probe
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(2))
        {
            return Ok(Step::Continue);
        }
        self.last_probe = Some(now);
        let unfinished = self.source.unfinished(&state.assignment)?;
        if unfinished.is_empty() {
            tracing::info!("the group's whole input is scored and committed");
            return Ok(Step::Done);
        }
        if now.duration_since(done_at) >= cfg.worker.group_done_timeout {
            return Err(WorkerError::GroupNotDone {
                timeout: cfg.worker.group_done_timeout,
                partitions: unfinished,
            });
        }
        let theirs: Vec<_> = unfinished
            .iter()
            .filter(|tp| !state.assignment.contains(tp))
            .copied()
            .collect();
        tracing::info!(unfinished = ?unfinished, held_by_others = ?theirs, "waiting for the rest of the group's input");
        Ok(Step::Continue)
    }

    /// Stop: nothing partial. Open windows stay open (the next owner
    /// re-reads them); DLQ records already decided are committed with their
    /// offsets. Returns the counters.
    pub async fn stop(mut self) -> Result<Metrics, WorkerError> {
        let now = (self.clock)();
        let interval = self.cfg.worker.commit_interval;
        self.state
            .commit_due(&self.sink, &self.source, interval, now, false, true)
            .await?;
        let table = self.accounts.snapshot();
        self.state.metrics.accounts_in_table = table.len() as u64;
        self.state.metrics.account_versions = table.versions() as u64;
        publish(&self.state, &self.source);
        Ok(self.state.metrics)
    }
}

/// One owned partition pair: its windows, its output side, and what it has
/// decided to emit but not yet committed.
struct Pair<P> {
    windows: PartitionWindows,
    /// Roll-ups' held rows and the newest outputs of windows within their
    /// lateness, carried from boundary to boundary.
    boundary: BoundaryState,
    sink: P,
    pending: Cycle,
    /// When the oldest uncommitted DLQ record was decided.
    dlq_since: Option<Instant>,
    /// Offsets last committed per side (from the checkpoint at first).
    committed: [Option<i64>; 2],
    /// A final progress mark went to the cluster stage (bounded runs).
    final_marked: bool,
    /// When the watermarks first allowed closing up to each boundary, for
    /// the close → ack latency; dropped once committed past.
    closable_seen: std::collections::VecDeque<(i64, Instant)>,
    /// Ends of the base windows in `pending`.
    pending_ends: Vec<i64>,
}

impl<P> Pair<P> {
    /// Read to its end with nothing open, held or kept: a bounded run's
    /// last cycle of this pair.
    fn drained(&self, flush: bool) -> bool {
        flush
            && self.windows.open_windows() == 0
            && self.boundary.rollups.held_entries() == 0
            && !self.windows.keeps_windows()
    }

    /// Commit now? Closed windows always; DLQ records after
    /// `commit_interval`; at the end of input, anything not yet committed;
    /// when stopping, DLQ records (windows stay open).
    fn due(&self, commit_interval: Duration, now: Instant, flush: bool, stopping: bool) -> bool {
        let moved = Side::BOTH
            .iter()
            .any(|s| self.windows.commit_offset(*s) != self.committed[s.idx()]);
        !self.pending.scores.is_empty()
            || !self.pending.rollups.is_empty()
            || !self.pending.members.is_empty()
            || (self.drained(flush) && !self.final_marked)
            || ((flush || stopping) && (!self.pending.dlq.is_empty() || moved))
            || self
                .dlq_since
                .is_some_and(|t| now.duration_since(t) >= commit_interval)
    }
}

struct State<P> {
    spec: WindowSpec,
    pairs: BTreeMap<i32, Pair<P>>,
    assignment: BTreeSet<TopicPartition>,
    /// Received an assignment (possibly empty) from the group.
    joined: bool,
    /// Every assigned partition was read up to its end (as of a fetch)
    /// since the last rebalance: `/readyz`.
    caught_up: bool,
    published_at: Option<Instant>,
    at_end: BTreeSet<TopicPartition>,
    /// Next offset to read per partition, as far as this worker knows.
    positions: BTreeMap<TopicPartition, i64>,
    /// Partitions paused for the memory budget.
    paused: BTreeSet<TopicPartition>,
    metrics: Metrics,
    times: StageTimes,
    /// Close → ack samples not yet handed to the caller's [`Progress`].
    close_to_ack: Vec<Duration>,
}

/// Windows a partition pair scores in one step at most, and the time a step may spend
/// scoring, so polling (which the group takes as the member's liveness,
/// `max.poll.interval.ms`) goes on while a backlog of windows is scored.
/// Neither changes what a window holds, only when it is emitted.
const MAX_WINDOWS_PER_STEP: usize = 16;
const MAX_SCORING_PER_STEP: Duration = Duration::from_secs(1);

impl<P> State<P> {
    /// Keep buffered rows under `budget`: over it, pause per pair the side
    /// ahead in event time (the other one is what holds its windows open);
    /// resume all below 80%. A side whose partner is at its end is never
    /// left paused, or the end of input would never come.
    fn balance<S: Source>(&mut self, source: &mut S, budget: usize) -> Result<(), SourceError> {
        let rows = self.buffered_rows();
        let delay = self.spec.max_response_delay_ms;
        if rows > budget {
            // Per pair, only the side ahead may stay paused: once the other
            // one overtakes it, it holds the windows open and must run.
            let (mut pause, mut resume) = (Vec::new(), Vec::new());
            for (&p, pair) in &self.pairs {
                let req = pair.windows.watermark(Side::Requests);
                let resp = pair
                    .windows
                    .watermark(Side::Responses)
                    .saturating_sub(delay);
                let ahead = match req.cmp(&resp) {
                    std::cmp::Ordering::Greater => Some(Side::Requests),
                    std::cmp::Ordering::Less => Some(Side::Responses),
                    std::cmp::Ordering::Equal => None,
                }
                .filter(|a| !self.at_end.contains(&(a.other(), p)));
                for side in Side::BOTH {
                    let tp = (side, p);
                    let paused = self.paused.contains(&tp);
                    if Some(side) == ahead && !paused && self.assignment.contains(&tp) {
                        pause.push(tp);
                    } else if Some(side) != ahead && paused {
                        resume.push(tp);
                    }
                }
            }
            if !resume.is_empty() {
                source.resume(&resume)?;
                for tp in &resume {
                    self.paused.remove(tp);
                }
            }
            if !pause.is_empty() {
                tracing::info!(buffered_rows = rows, budget, partitions = ?pause, "over the memory budget: pausing the sides ahead");
                source.pause(&pause)?;
                self.paused.extend(pause);
                self.metrics.pauses += 1;
            }
        } else if rows <= budget / 10 * 8 && !self.paused.is_empty() {
            let all: Vec<TopicPartition> = std::mem::take(&mut self.paused).into_iter().collect();
            tracing::info!(buffered_rows = rows, partitions = ?all, "under the memory budget: resuming");
            source.resume(&all)?;
        }
        let stuck: Vec<TopicPartition> = self
            .paused
            .iter()
            .filter(|tp| self.at_end.contains(&(tp.0.other(), tp.1)))
            .copied()
            .collect();
        if !stuck.is_empty() {
            source.resume(&stuck)?;
            for tp in &stuck {
                self.paused.remove(tp);
            }
        }
        Ok(())
    }

    fn open_windows(&self) -> usize {
        self.pairs.values().map(|t| t.windows.open_windows()).sum()
    }

    /// Held roll-up entries: at the end of input, boundaries are processed
    /// until none is left.
    fn rollups_held(&self) -> usize {
        self.pairs
            .values()
            .map(|t| t.boundary.rollups.held_entries())
            .sum()
    }

    /// Whether emitted windows are still kept within their lateness.
    fn keeps_windows(&self) -> bool {
        self.pairs.values().any(|t| t.windows.keeps_windows())
    }

    fn rollup_rows(&self) -> usize {
        self.pairs
            .values()
            .map(|t| t.boundary.rollups.held_rows())
            .sum()
    }

    fn buffered_rows(&self) -> usize {
        self.pairs.values().map(|t| t.windows.buffered_rows()).sum()
    }

    /// Decode one side's messages, place them in windows and queue what is
    /// rejected or late for the DLQ.
    fn ingest(
        &mut self,
        side: Side,
        mut msgs: Vec<RawMessage>,
        decoder: &mut RecordDecoder,
        topic: &str,
        now: Instant,
    ) -> Result<(), WorkerError> {
        match side {
            Side::Requests => self.metrics.requests_consumed += msgs.len() as u64,
            Side::Responses => self.metrics.responses_consumed += msgs.len() as u64,
        }
        // A message delivered again within an assignment (a client refetch)
        // was placed already.
        let before = msgs.len();
        msgs.retain(|m| {
            self.positions
                .get(&(side, m.partition))
                .is_none_or(|&next| m.offset >= next)
        });
        self.metrics.already_handled += (before - msgs.len()) as u64;
        if msgs.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let decoded = decoder.decode(&msgs)?;
        self.times.decode += t.elapsed();
        let t = Instant::now();
        for r in &decoded.rejects {
            let m = &msgs[r.msg_index];
            // Not ours (revoked during this poll): its new owner reads it.
            let Some(pair) = self.pairs.get_mut(&m.partition) else {
                continue;
            };
            if pair.windows.previously_read(side, m.offset) {
                // The previous owner sent it to the DLQ already.
                self.metrics.already_handled += 1;
                continue;
            }
            self.metrics.reject(r.kind);
            pair.pending.dlq.push(DlqRecord::new(topic, m, r));
            pair.dlq_since.get_or_insert(now);
        }
        for (partition, rows) in split_by_partition(&decoded.batch)? {
            let Some(pair) = self.pairs.get_mut(&partition) else {
                continue;
            };
            let placed = pair.windows.ingest(side, &rows)?;
            self.metrics.already_handled += placed.already_handled as u64;
            self.metrics.late_revising += placed.revising as u64;
            match side {
                Side::Requests => self.metrics.out_of_order_requests += placed.out_of_order as u64,
                Side::Responses => {
                    self.metrics.out_of_order_responses += placed.out_of_order as u64
                }
            }
            for (i, wm) in placed.late.into_iter().zip(placed.late_watermark) {
                self.metrics.reject(RejectKind::LateEvent);
                let reject = Reject {
                    msg_index: i as usize,
                    kind: RejectKind::LateEvent,
                    detail: format!(
                        "event time is behind the partition's watermark ({wm} ms) by more than its window allows; its window was or would have been emitted"
                    ),
                };
                pair.pending
                    .dlq
                    .push(DlqRecord::new(topic, &msgs[i as usize], &reject));
                pair.dlq_since.get_or_insert(now);
            }
        }
        self.times.window += t.elapsed();
        for m in &msgs {
            let tp = (side, m.partition);
            if !self.assignment.contains(&tp) {
                continue;
            }
            let next = m.offset + 1;
            let pos = self.positions.entry(tp).or_insert(next);
            *pos = (*pos).max(next);
            self.at_end.remove(&tp);
            if let Some(pair) = self.pairs.get_mut(&m.partition) {
                pair.windows.advance_position(side, next);
            }
        }
        Ok(())
    }

    async fn apply_change<K: Sink<Pair = P>, S: Source>(
        &mut self,
        change: Change,
        sink: &mut K,
        source: &S,
    ) -> Result<(), WorkerError> {
        telemetry::rebalance("accounts");
        self.caught_up = false;
        telemetry::health().set_ready("accounts", false);
        match change {
            Change::Revoked(parts) => {
                // Eager rebalancing revokes everything and the next owner (maybe
                // this worker again) restarts from the committed offsets, so
                // state of a revoked partition is dropped, never carried over.
                // Every cycle was committed before this poll; what is pending
                // (DLQ records) is decided again by whoever reads next.
                for tp in parts {
                    self.assignment.remove(&tp);
                    self.paused.remove(&tp);
                    self.at_end.remove(&tp);
                    self.positions.remove(&tp);
                    if let Some(t) = self.pairs.remove(&tp.1) {
                        tracing::info!(
                            partition = tp.1,
                            open_windows = t.windows.open_windows(),
                            "dropping state of revoked partition"
                        );
                    }
                }
            }
            Change::Assigned(parts) => {
                self.joined = true;
                let new: Vec<i32> = parts
                    .iter()
                    .map(|tp| tp.1)
                    .filter(|p| !self.pairs.contains_key(p))
                    .collect::<BTreeSet<i32>>()
                    .into_iter()
                    .collect();
                for opened in sink.open(&new).await? {
                    let p = opened.partition;
                    let mut windows = PartitionWindows::new(p, self.spec);
                    let held = opened.rollups.len();
                    let rollups = Rollups::restore(opened.rollups);
                    if held > 0 {
                        tracing::info!(
                            partition = p,
                            entries = held,
                            rows = rollups.held_rows(),
                            "restored roll-up rows"
                        );
                    }
                    let mut committed = [None, None];
                    for (side, r) in opened.resumes {
                        tracing::info!(side = ?side, partition = p, emitted_until = r.emitted_until, offset = ?r.offset, read_to = r.read_to, "resuming partition");
                        windows.resume(side, r);
                        committed[side.idx()] = r.offset;
                    }
                    self.pairs.insert(
                        p,
                        Pair {
                            windows,
                            boundary: BoundaryState {
                                rollups,
                                ..Default::default()
                            },
                            sink: opened.pair,
                            pending: Cycle::default(),
                            dlq_since: None,
                            committed,
                            final_marked: false,
                            closable_seen: Default::default(),
                            pending_ends: Vec::new(),
                        },
                    );
                }
                // Where reading starts, for end-of-input detection: the
                // checkpoint's offset, else the group's committed offset.
                let unknown: Vec<TopicPartition> = parts
                    .iter()
                    .copied()
                    .filter(|tp| {
                        self.pairs
                            .get(&tp.1)
                            .is_none_or(|pair| pair.committed[tp.0.idx()].is_none())
                    })
                    .collect();
                let committed = if unknown.is_empty() {
                    BTreeMap::new()
                } else {
                    source.committed(&unknown)?
                };
                for tp in parts {
                    self.assignment.insert(tp);
                    let from_checkpoint =
                        self.pairs.get(&tp.1).and_then(|p| p.committed[tp.0.idx()]);
                    if let Some(o) = from_checkpoint.or(committed.get(&tp).copied().flatten()) {
                        self.positions.insert(tp, o);
                    }
                }
            }
        }
        Ok(())
    }

    /// Close ready windows and score them; their scores wait in the pair's
    /// pending cycle. Partition pairs share nothing while scoring, so on a
    /// multi-threaded runtime each scores on a thread of its own (the
    /// worker then uses every core it has); what each emits is the same
    /// either way, and it is counted in partition order.
    async fn close_windows<A: Accounts>(
        &mut self,
        models: &Models<'_>,
        accounts: &A,
        flush: bool,
        clock: &Clock,
    ) -> Result<(), WorkerError>
    where
        P: Send,
    {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let started = clock();
        let wall = Instant::now();
        let table = accounts.snapshot();
        let parallel = self.pairs.len() > 1
            && Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
        let outcomes: Vec<Result<Vec<WindowResult>, WorkerError>> = if parallel {
            let handle = Handle::current();
            tokio::task::block_in_place(|| {
                std::thread::scope(|s| {
                    let threads: Vec<_> = self
                        .pairs
                        .values_mut()
                        .map(|pair| {
                            let (handle, table) = (handle.clone(), &table);
                            s.spawn(move || {
                                handle.block_on(score_pair(
                                    pair, models, table, flush, clock, started,
                                ))
                            })
                        })
                        .collect();
                    threads
                        .into_iter()
                        .map(|t| {
                            t.join().unwrap_or_else(|_| {
                                Err(WorkerError::Config(
                                    "a partition pair's scoring thread panicked".into(),
                                ))
                            })
                        })
                        .collect()
                })
            })
        } else {
            let mut v = Vec::new();
            for pair in self.pairs.values_mut() {
                v.push(score_pair(pair, models, &table, flush, clock, started).await);
            }
            v
        };
        for (pair, results) in self.pairs.values_mut().zip(outcomes) {
            for mut result in results? {
                self.metrics.count_window(&result);
                self.times += result.times;
                pair.pending.scores.append(&mut result.scores);
                pair.pending.rollups.append(&mut result.rollup_records);
                pair.pending.members.append(&mut result.members);
            }
        }
        self.times.closing_wall += wall.elapsed();
        Ok(())
    }

    /// Commit the pairs that are due, each as one cycle.
    async fn commit_due<K: Sink<Pair = P>, S: Source>(
        &mut self,
        sink: &K,
        source: &S,
        interval: Duration,
        now: Instant,
        flush: bool,
        stopping: bool,
    ) -> Result<(), WorkerError> {
        for (&p, pair) in self.pairs.iter_mut() {
            if !pair.due(interval, now, flush, stopping) {
                continue;
            }
            let mut offsets = Vec::new();
            let mut cycle = std::mem::take(&mut pair.pending);
            let drained = pair.drained(flush);
            if pair.windows.emitted_until() != i64::MIN {
                cycle.mark = Some((pair.windows.emitted_until(), drained));
            }
            for side in Side::BOTH {
                let tp = (side, p);
                if !self.assignment.contains(&tp) {
                    continue;
                }
                if let (Some(offset), Some(mut resume)) = (
                    pair.windows.commit_offset(side),
                    pair.windows.checkpoint(side),
                ) {
                    resume.rollups = pair.boundary.rollups.held_entries() as u64;
                    offsets.push((tp, offset));
                    cycle
                        .checkpoints
                        .push((source.topic(side).to_string(), resume));
                }
            }
            let t = Instant::now();
            sink.commit(&mut pair.sink, &cycle, &offsets, source)
                .await?;
            self.times.sink += t.elapsed();
            let acked = Instant::now();
            for &((side, _), o) in &offsets {
                pair.committed[side.idx()] = Some(o);
            }
            for end in pair.pending_ends.drain(..) {
                if let Some((_, at)) = pair.closable_seen.iter().find(|(l, _)| *l >= end) {
                    let d = acked.saturating_duration_since(*at);
                    telemetry::close_to_ack(d);
                    self.close_to_ack.push(d);
                }
                while pair.closable_seen.front().is_some_and(|(l, _)| *l <= end) {
                    pair.closable_seen.pop_front();
                }
            }
            pair.dlq_since = None;
            pair.final_marked = drained;
            self.metrics.commits += 1;
            tracing::debug!(
                partition = p,
                ?offsets,
                scores = cycle.scores.len(),
                dlq = cycle.dlq.len(),
                "committed"
            );
        }
        Ok(())
    }
}

/// Counters, gauges, liveness and readiness for `/metrics` and the probes
/// (see [`telemetry`]).
fn publish<P, S: Source>(state: &State<P>, source: &S) {
    let lag = state
        .assignment
        .iter()
        .filter_map(|&(side, p)| {
            let (low, high) = source.watermarks(side, p)?;
            let pos = state.positions.get(&(side, p)).copied().unwrap_or(low);
            Some((source.topic(side), p, (high - pos).max(0)))
        })
        .collect();
    let buffered_bytes = state
        .pairs
        .values()
        .map(|p| p.windows.buffered_bytes() + p.boundary.rollups.held_bytes())
        .sum();
    telemetry::publish_worker(
        &state.metrics,
        &telemetry::WorkerGauges {
            open_windows: state.open_windows(),
            buffered_rows: state.buffered_rows(),
            buffered_bytes,
            assignment: &state.assignment,
            lag,
        },
        [source.topic(Side::Requests), source.topic(Side::Responses)],
    );
    telemetry::health().set_ready("accounts", state.caught_up);
}

/// Close and score one pair's ready windows, in order, within the step's
/// budget (windows and time). Returns their results, scores not yet moved
/// to the pending cycle.
async fn score_pair<P>(
    pair: &mut Pair<P>,
    models: &Models<'_>,
    table: &Arc<AccountTable>,
    flush: bool,
    clock: &Clock,
    started: Instant,
) -> Result<Vec<WindowResult>, WorkerError> {
    // The base window never changes on a reload (see `reload`).
    let base = models.current.jobs.window_ms;
    let mut out = Vec::new();
    while out.len() < MAX_WINDOWS_PER_STEP && clock().duration_since(started) < MAX_SCORING_PER_STEP
    {
        let windows = &mut pair.windows;
        // Boundaries are processed in order, each once: the base window
        // ending there (if it had rows), the revisions due there and every
        // roll-up window closing there. Boundaries without a base window
        // matter only while roll-ups hold rows or emitted windows are kept
        // for revisions.
        let processed = windows.emitted_until();
        let pane_end = windows.first_pane_end();
        let limit = if flush {
            windows
                .flush_until()
                .max(
                    pair.boundary
                        .rollups
                        .last_needed_boundary(&models.newest().jobs),
                )
                .max(windows.last_revision_boundary())
        } else {
            windows.closable_until()
        };
        let empty = (processed != i64::MIN)
            .then_some(processed + base)
            .filter(|e| pane_end.is_none_or(|pe| *e < pe));
        let (window, end) = match (empty, limit) {
            (Some(e), Some(l)) if e <= l => {
                if pair.boundary.rollups.held_entries() == 0 && !windows.keeps_windows() {
                    // Nothing to evaluate before the next base window, or
                    // as far as the watermarks allow.
                    windows.advance_emitted(pane_end.map_or(l, |pe| (pe - base).min(l)));
                    continue;
                }
                (None, e)
            }
            (Some(_), _) => break,
            (None, _) => match windows.close_next(flush) {
                Some(w) => {
                    let end = w.end;
                    (Some(w), end)
                }
                None => break,
            },
        };
        let partition = windows.partition;
        if window.is_some() {
            pair.pending_ends.push(end);
        }
        let mut result = models
            .at(end)
            .score_boundary(window, end, windows, &mut pair.boundary, table)
            .await?;
        windows.advance_emitted(end);
        windows.expire(end);
        windows.note_matched(end, std::mem::take(&mut result.matched_next));
        tracing::debug!(
            partition,
            boundary = end,
            scores = result.scores.len(),
            "window emitted"
        );
        out.push(result);
    }
    Ok(out)
}

/// Rows of `batch` grouped by `_partition`, each group in original order.
fn split_by_partition(
    batch: &RecordBatch,
) -> Result<Vec<(i32, RecordBatch)>, arrow::error::ArrowError> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let parts = batch
        .column_by_name(PARTITION_COL)
        .ok_or_else(|| arrow::error::ArrowError::SchemaError("batch lacks _partition".into()))?
        .as_primitive::<Int32Type>();
    let mut groups: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for (i, p) in parts.values().iter().enumerate() {
        groups.entry(*p).or_default().push(i as u32);
    }
    if groups.len() == 1 {
        let (p, _) = groups.into_iter().next().expect("one group");
        return Ok(vec![(p, batch.clone())]);
    }
    groups
        .into_iter()
        .map(|(p, rows)| Ok((p, take_record_batch(batch, &UInt32Array::from(rows))?)))
        .collect()
}
