//! The worker loop: poll → decode → window → (on close) join, enrich, jobs,
//! score → produce → commit.
//!
//! Offsets are committed only after every score and DLQ record that depends
//! on the messages before them was acknowledged, and never past a message an
//! open window still holds. A checkpoint written before each commit records
//! how far windows were emitted, so whoever reads the partition next skips
//! what was already handled instead of emitting a partial window again.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::Int32Type;
use rdkafka::producer::FutureProducer;

use crate::checkpoint::Checkpoints;
use crate::config::Config;
use crate::decode::{RawMessage, RecordDecoder, Reject, RejectKind, PARTITION_COL};
use crate::metrics::Metrics;
use crate::process::{Detector, ProcessError};
use crate::schemas::SchemaSet;
use crate::sink::{Sink, SinkError};
use crate::source::{AccountsSource, Change, EventSource, SourceError, TopicPartition};
use crate::window::{PartitionWindows, Side, WindowSpec};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
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
}

/// What a finished run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub metrics: Metrics,
}

/// The producer used for scores and the DLQ.
pub fn producer(cfg: &Config) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    let mut cc = cfg.client_config();
    cc.set(
        "message.timeout.ms",
        cfg.worker.produce_timeout.as_millis().to_string(),
    );
    if !cfg.librdkafka.contains_key("linger.ms") {
        cc.set("linger.ms", "5");
    }
    cc.create()
}

const SIDES: [Side; 2] = [Side::Requests, Side::Responses];

/// Live counters a caller can watch while a run works (progress bars).
#[derive(Debug, Default)]
pub struct Progress {
    /// Event messages consumed (both topics).
    pub consumed: AtomicU64,
    pub windows_closed: AtomicU64,
    pub scores_emitted: AtomicU64,
}

/// Run until `shutdown` resolves or, with `worker.exit_at_eof`, until every
/// assigned partition was read to its end and all windows were emitted.
pub async fn run(
    cfg: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, WorkerError> {
    run_with_progress(cfg, shutdown, &Progress::default()).await
}

/// [`run`], updating `progress` as it goes.
pub async fn run_with_progress(
    cfg: &Config,
    shutdown: impl Future<Output = ()>,
    progress: &Progress,
) -> Result<RunSummary, WorkerError> {
    let started = Instant::now();
    let delay_ms = cfg.window.max_response_delay.as_millis() as i64;
    let detector = Detector::load(&cfg.jobs.dir, &cfg.jobs.scoring, delay_ms).await?;
    if delay_ms > detector.jobs.window_ms {
        return Err(WorkerError::Config(format!(
            "[window] max_response_delay ({delay_ms} ms) exceeds the jobs' window ({} ms)",
            detector.jobs.window_ms
        )));
    }
    let spec = WindowSpec {
        size_ms: detector.jobs.window_ms,
        out_of_orderness_ms: cfg.window.out_of_orderness.as_millis() as i64,
        max_response_delay_ms: delay_ms,
        idle_timeout: cfg.window.idle_timeout,
    };
    tracing::info!(
        jobs = detector.jobs.jobs.len(),
        window_ms = spec.size_ms,
        model = %detector.model_version,
        "detector loaded"
    );
    let accounts = AccountsSource::start(cfg, Duration::from_secs(120)).await?;
    let producer = producer(cfg)?;
    let checkpoints = Checkpoints::new(cfg, producer.clone());
    let mut sink = Sink::new(
        producer,
        cfg.topics.scores.clone(),
        cfg.topics.dlq.clone(),
        cfg.worker.produce_timeout,
    );
    let exit_at_eof = cfg.worker.exit_at_eof;
    let mut source = EventSource::new(cfg, exit_at_eof)?;
    let set = SchemaSet::builtin();
    let skew = cfg.window.max_future_skew.as_millis() as i64;
    let max = cfg.worker.batch_max_messages;
    let mut decoders = [
        RecordDecoder::new(&set.request, max, skew)?,
        RecordDecoder::new(&set.response, max, skew)?,
    ];

    let mut state = State {
        spec,
        tasks: BTreeMap::new(),
        assignment: BTreeSet::new(),
        at_end: BTreeSet::new(),
        positions: BTreeMap::new(),
        metrics: Metrics::default(),
    };
    let mut last_report = Instant::now();
    tokio::pin!(shutdown);
    loop {
        let polled = tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutdown requested");
                break;
            }
            p = source.poll(max, cfg.worker.batch_max_wait) => p?,
        };
        let now = Instant::now();
        let mut dirty = false;
        let (requests, responses): (Vec<_>, Vec<_>) = polled
            .messages
            .into_iter()
            .partition(|(s, _)| *s == Side::Requests);
        let by_side = [requests, responses]
            .map(|v| v.into_iter().map(|(_, m)| m).collect::<Vec<RawMessage>>());
        for (i, (side, msgs)) in SIDES.into_iter().zip(by_side).enumerate() {
            if msgs.is_empty() {
                continue;
            }
            dirty |= state
                .ingest(
                    side,
                    &msgs,
                    &mut decoders[i],
                    &mut sink,
                    source.topic(side),
                    now,
                )
                .await?;
        }
        for p in polled.eofs {
            for side in SIDES {
                let tp = (side, p);
                if !state.assignment.contains(&tp) {
                    continue;
                }
                // librdkafka's EOF event names the partition, not the topic;
                // whichever side's position reached its fetched high
                // watermark is the one at its end.
                if let Some((low, high)) = source.cached_watermarks(side, p) {
                    let pos = state.positions.get(&tp).copied().unwrap_or(low);
                    if pos >= high {
                        state.at_end.insert(tp);
                    }
                }
            }
        }
        for change in polled.changes {
            state.apply_change(change, &source, &checkpoints, now)?;
        }
        state.mark_caught_up(&source);
        let m = &state.metrics;
        progress.consumed.store(
            m.requests_consumed + m.responses_consumed,
            Ordering::Relaxed,
        );
        progress
            .windows_closed
            .store(m.windows_closed, Ordering::Relaxed);
        progress
            .scores_emitted
            .store(m.scores_emitted, Ordering::Relaxed);
        let flush = exit_at_eof
            && !state.assignment.is_empty()
            && state.assignment.is_subset(&state.at_end);
        let closed = state
            .close_windows(&detector, &accounts, &sink, now, flush)
            .await?;
        if closed || dirty {
            sink.flush_dlq().await?;
            state.commit(&source, &checkpoints).await?;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let table = accounts.snapshot();
            state.metrics.accounts_in_table = table.len() as u64;
            state.metrics.account_versions = table.versions() as u64;
            tracing::info!(
                open_windows = state.open_windows(),
                buffered_rows = state.buffered_rows(),
                "{}",
                state.metrics
            );
        }
        if flush {
            tracing::info!("all assigned partitions read to their end; windows emitted");
            break;
        }
    }
    sink.flush_dlq().await?;
    state.commit(&source, &checkpoints).await?;
    let table = accounts.snapshot();
    state.metrics.accounts_in_table = table.len() as u64;
    state.metrics.account_versions = table.versions() as u64;
    tracing::info!(
        elapsed_s = started.elapsed().as_secs_f64(),
        "worker stopped: {}",
        state.metrics
    );
    Ok(RunSummary {
        metrics: state.metrics,
    })
}

struct State {
    spec: WindowSpec,
    tasks: BTreeMap<i32, PartitionWindows>,
    assignment: BTreeSet<TopicPartition>,
    at_end: BTreeSet<TopicPartition>,
    /// Next offset to read per partition, as far as this worker knows.
    positions: BTreeMap<TopicPartition, i64>,
    metrics: Metrics,
}

impl State {
    fn open_windows(&self) -> usize {
        self.tasks.values().map(|t| t.open_windows()).sum()
    }

    fn buffered_rows(&self) -> usize {
        self.tasks.values().map(|t| t.buffered_rows()).sum()
    }

    /// Decode one side's messages and place them in windows. Returns whether
    /// anything went to the DLQ (so offsets may move without a window close).
    async fn ingest(
        &mut self,
        side: Side,
        msgs: &[RawMessage],
        decoder: &mut RecordDecoder,
        sink: &mut Sink,
        topic: &str,
        now: Instant,
    ) -> Result<bool, WorkerError> {
        match side {
            Side::Requests => self.metrics.requests_consumed += msgs.len() as u64,
            Side::Responses => self.metrics.responses_consumed += msgs.len() as u64,
        }
        let decoded = decoder.decode(msgs)?;
        let mut dlq = !decoded.rejects.is_empty();
        for r in &decoded.rejects {
            self.metrics.reject(r.kind);
            sink.send_dlq(topic, &msgs[r.msg_index], r).await?;
        }
        for (partition, rows) in split_by_partition(&decoded.batch)? {
            let Some(task) = self.tasks.get_mut(&partition) else {
                // Not ours (revoked during this poll): it will be read again
                // by its new owner from the committed offset.
                continue;
            };
            let placed = task.ingest(side, &rows)?;
            self.metrics.already_handled += placed.already_handled as u64;
            match side {
                Side::Requests => self.metrics.out_of_order_requests += placed.out_of_order as u64,
                Side::Responses => {
                    self.metrics.out_of_order_responses += placed.out_of_order as u64
                }
            }
            for idx in placed.late {
                let m = &msgs[idx as usize];
                self.metrics.reject(RejectKind::LateEvent);
                dlq = true;
                let reject = Reject {
                    msg_index: idx as usize,
                    kind: RejectKind::LateEvent,
                    detail: format!(
                        "event time is behind the partition's watermark ({} ms) by more than its window allows; its window was or would have been emitted",
                        task.watermark(side)
                    ),
                };
                sink.send_dlq(topic, m, &reject).await?;
            }
        }
        for m in msgs {
            let tp = (side, m.partition);
            if !self.assignment.contains(&tp) {
                continue;
            }
            let next = m.offset + 1;
            let pos = self.positions.entry(tp).or_insert(next);
            *pos = (*pos).max(next);
            self.at_end.remove(&tp);
            if let Some(task) = self.tasks.get_mut(&m.partition) {
                task.advance_position(side, next, now);
            }
        }
        Ok(dlq)
    }

    fn apply_change(
        &mut self,
        change: Change,
        source: &EventSource,
        checkpoints: &Checkpoints,
        now: Instant,
    ) -> Result<(), WorkerError> {
        match change {
            Change::Revoked(parts) => {
                // Eager rebalancing revokes everything and the next owner (maybe
                // this worker again) restarts from the committed offsets, so
                // state of a revoked partition is dropped, never carried over.
                for tp in parts {
                    self.assignment.remove(&tp);
                    self.at_end.remove(&tp);
                    self.positions.remove(&tp);
                    if let Some(t) = self.tasks.remove(&tp.1) {
                        tracing::info!(
                            partition = tp.1,
                            open_windows = t.open_windows(),
                            "dropping state of revoked partition"
                        );
                    }
                }
            }
            Change::Assigned(parts) => {
                let committed = source.committed(&parts)?;
                let topics = [source.topic(Side::Requests), source.topic(Side::Responses)];
                let resumes = tokio::task::block_in_place(|| checkpoints.read(&topics))?;
                for tp in parts {
                    self.assignment.insert(tp);
                    let task = self
                        .tasks
                        .entry(tp.1)
                        .or_insert_with(|| PartitionWindows::new(tp.1, self.spec, now));
                    if let Some(Some(o)) = committed.get(&tp) {
                        self.positions.insert(tp, *o);
                    }
                    if let Some(r) = resumes.get(&(source.topic(tp.0).to_string(), tp.1)) {
                        tracing::info!(side = ?tp.0, partition = tp.1, emitted_until = r.emitted_until, read_to = r.read_to, "resuming partition");
                        task.resume(tp.0, *r);
                    }
                }
            }
        }
        Ok(())
    }

    /// Tell each partition pair which of its sides were read up to the high
    /// watermark of the last fetch (only those may count as idle).
    fn mark_caught_up(&mut self, source: &EventSource) {
        for task in self.tasks.values_mut() {
            for side in SIDES {
                let tp = (side, task.partition);
                let caught_up =
                    source
                        .cached_watermarks(side, task.partition)
                        .is_some_and(|(low, high)| {
                            self.positions.get(&tp).copied().unwrap_or(low) >= high
                        });
                task.set_caught_up(side, caught_up);
            }
        }
    }

    /// Close ready windows, score them and wait for the scores to be
    /// acknowledged. Returns whether any window closed.
    async fn close_windows(
        &mut self,
        detector: &Detector,
        accounts: &AccountsSource,
        sink: &Sink,
        now: Instant,
        flush: bool,
    ) -> Result<bool, WorkerError> {
        let mut any = false;
        for task in self.tasks.values_mut() {
            while let Some(w) = task.close_next(now, flush) {
                any = true;
                let (partition, start, end) = (w.partition, w.start, w.end);
                let mut result = detector.score_window(w, &accounts.snapshot()).await?;
                task.note_matched(end, std::mem::take(&mut result.matched_next));
                let sent = sink.send_scores(&result.scores).await?;
                self.metrics.count_window(&result);
                tracing::debug!(
                    partition,
                    window_start = start,
                    scores = sent,
                    "window emitted"
                );
            }
        }
        Ok(any)
    }

    /// Checkpoint, then commit, every owned partition. Callers have already
    /// waited for the scores and DLQ records behind these offsets.
    async fn commit(
        &mut self,
        source: &EventSource,
        checkpoints: &Checkpoints,
    ) -> Result<(), WorkerError> {
        let mut offsets = Vec::new();
        let mut entries = Vec::new();
        for task in self.tasks.values() {
            for side in SIDES {
                let tp = (side, task.partition);
                if !self.assignment.contains(&tp) {
                    continue;
                }
                if let (Some(offset), Some(resume)) =
                    (task.commit_offset(side), task.checkpoint(side))
                {
                    offsets.push((tp, offset));
                    entries.push((source.topic(side), task.partition, resume));
                }
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        checkpoints.write(&entries).await?;
        source.commit(&offsets)?;
        self.metrics.commits += 1;
        tracing::debug!(?offsets, "committed");
        Ok(())
    }
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
