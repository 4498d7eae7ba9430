//! The cluster stage's loop over Kafka: its own consumer group
//! (`<group_id>.clusters`) on the features topic, one transactional
//! producer per features partition.
//!
//! Windows close on the account stage's progress marks, not on anything
//! this stage sees of time: the cluster window `[s, e)` of a partition
//! closes once every upstream input partition has marked `through >= e`.
//! An upstream partition writes its member rows and then its marks in one
//! transaction, and Kafka keeps one producer's records in order within a
//! partition, so every row of the window has been read by then: a cluster
//! record is a function of the rows, whatever the timing.
//!
//! Restart: each cycle commits, in one transaction, the cluster records,
//! the member scores, a checkpoint (`dwc1;closed=..;of=..;marks=..`: which
//! windows were emitted and the marks seen) and the offset of the oldest
//! row an open window holds. A new owner re-reads from that offset, skips
//! rows of windows already emitted and carries on with the marks, so no
//! window is lost, repeated or emitted partial.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::agg::ClusterWindows;
use super::model::{ClusterModel, ClusterRisk};
use super::repeats::Repeats;
use super::wire::{cluster_key, decode_feature, encode_cluster};
use crate::checkpoint::{CheckpointError, Checkpoints};
use crate::config::Config;
use crate::partition::partition_of;
use crate::score::{Level, RiskScore};
use crate::sink::{encode_score, score_key};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("encoding: {0}")]
    Encode(#[from] apache_avro::Error),
    #[error("transaction of features partition {partition}: {source}")]
    Transaction {
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("the consumer has no group metadata to commit offsets with (not in a group yet?)")]
    NoGroupMetadata,
    #[error("cluster stage: no usable metadata from {bootstrap} within {waited:.0?}: {reason}")]
    Metadata {
        bootstrap: String,
        waited: Duration,
        reason: String,
    },
    #[error("cluster stage: no partition of {topic} assigned to this member for {waited:.0?} while the group's input is not done (partitions {unfinished:?})")]
    NothingAssigned {
        topic: String,
        waited: Duration,
        unfinished: Vec<i32>,
    },
    #[error("cluster stage: asking whether the group's input is done: {0}")]
    Probe(String),
    #[error("producing to {topic}: {source}")]
    Produce {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

/// What the cluster stage counted.
#[derive(Debug, Default, Clone)]
pub struct StageMetrics {
    pub member_rows: u64,
    pub marks: u64,
    /// Rows of windows this stage had already emitted (re-read after a
    /// restart, or an upstream revision): skipped.
    pub rows_after_close: u64,
    /// Rows read twice (a broker showing a dead worker's unfinished
    /// transaction, see `repeats`): skipped.
    pub repeated_rows: u64,
    /// Rows of another account-stage group sharing the topic: skipped.
    pub foreign_rows: u64,
    pub undecodable: u64,
    pub clusters_emitted: u64,
    pub clusters_high: u64,
    pub broad_keys: u64,
    pub member_scores: u64,
    pub commits: u64,
}

impl fmt::Display for StageMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "member rows {}, marks {}, rows after close {}, repeated rows {}, foreign rows {}, undecodable {}, clusters {} (high or above {}, broad {}), member scores {}, commits {}",
            self.member_rows,
            self.marks,
            self.rows_after_close,
            self.repeated_rows,
            self.foreign_rows,
            self.undecodable,
            self.clusters_emitted,
            self.clusters_high,
            self.broad_keys,
            self.member_scores,
            self.commits
        )
    }
}

/// The cluster stage's consumer group.
pub fn stage_group(cfg: &Config) -> String {
    if cfg.clusters.group.is_empty() {
        format!("{}.clusters", cfg.kafka.group_id)
    } else {
        cfg.clusters.group.clone()
    }
}

#[derive(Debug)]
enum Change {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

struct StageContext {
    changes: Mutex<Vec<Change>>,
}

impl ClientContext for StageContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::error!(error = %error, reason, "kafka client error (cluster stage)");
        }
    }
}

impl ConsumerContext for StageContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = tpl.elements().iter().map(|e| e.partition()).collect();
            self.changes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Change::Revoked(parts));
        }
    }
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts = tpl.elements().iter().map(|e| e.partition()).collect();
            self.changes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Change::Assigned(parts));
        }
    }
}

/// Checkpoint of one features partition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageCheckpoint {
    /// Every cluster window ending at or before this was emitted.
    pub closed: i64,
    pub upstreams: Option<i32>,
    /// Upstream partition → (through, final).
    pub marks: BTreeMap<i32, (i64, bool)>,
}

impl StageCheckpoint {
    const PREFIX: &'static str = "dwc1;";

    pub fn encode(&self) -> String {
        let marks: Vec<String> = self
            .marks
            .iter()
            .map(|(u, (t, f))| format!("{u}:{t}:{}", u8::from(*f)))
            .collect();
        format!(
            "{}closed={};of={};marks={}",
            Self::PREFIX,
            self.closed,
            self.upstreams.map_or("none".into(), |n| n.to_string()),
            marks.join(",")
        )
    }

    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(Self::PREFIX)?;
        let mut c = StageCheckpoint {
            closed: i64::MIN,
            ..Default::default()
        };
        for part in rest.split(';') {
            match part.split_once('=')? {
                ("closed", v) => c.closed = v.parse().ok()?,
                ("of", "none") => c.upstreams = None,
                ("of", v) => c.upstreams = Some(v.parse().ok()?),
                ("marks", "") => {}
                ("marks", v) => {
                    for m in v.split(',') {
                        let mut it = m.split(':');
                        let u = it.next()?.parse().ok()?;
                        let t = it.next()?.parse().ok()?;
                        let f = it.next()? == "1";
                        c.marks.insert(u, (t, f));
                    }
                }
                _ => {}
            }
        }
        Some(c)
    }

    /// How far every upstream partition has published, when all have.
    pub fn through(&self) -> Option<i64> {
        let n = self.upstreams?;
        (0..n)
            .map(|u| self.marks.get(&u).map(|m| m.0))
            .collect::<Option<Vec<i64>>>()?
            .into_iter()
            .min()
    }

    /// Every upstream partition finished a bounded run.
    pub fn all_final(&self) -> bool {
        self.upstreams
            .is_some_and(|n| (0..n).all(|u| self.marks.get(&u).is_some_and(|m| m.1)))
    }
}

struct Part {
    producer: FutureProducer,
    windows: ClusterWindows,
    /// Starts empty on a new owner too: see `repeats`.
    repeats: Repeats,
    state: StageCheckpoint,
    /// Next offset to read, once something was read.
    position: Option<i64>,
    committed: Option<i64>,
    at_eof: bool,
}

/// Options of one run of the stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageOptions {
    /// Stop once every assigned partition is read to its end and emitted
    /// (with `upstream_done` or final marks from every upstream).
    pub exit_at_eof: bool,
    /// The account stage is known to have finished (the demo runs the
    /// stages one after the other): flush at the end of the features topic
    /// even without final marks.
    pub upstream_done: bool,
}

/// Run the cluster stage until `shutdown` (or, with `exit_at_eof`, until
/// its input is done).
pub async fn run_clusters(
    cfg: &Config,
    model: &ClusterModel,
    options: StageOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<StageMetrics, StageError> {
    let started = Instant::now();
    let group = stage_group(cfg);
    let mut own = cfg.clone();
    own.kafka.group_id = group.clone();
    let mut cc = own.consumer_config();
    cc.set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true");
    let consumer: StreamConsumer<StageContext> = cc.create_with_context(StageContext {
        changes: Mutex::new(Vec::new()),
    })?;
    consumer.subscribe(&[cfg.topics.features.as_str()])?;
    let md = stage_metadata(&consumer, cfg).await?;
    let partitions_of = |topic: &str| crate::topics::partitions(&md, topic);
    let cp_partitions = partitions_of(&cfg.topics.checkpoints).unwrap_or(1) as usize;
    let mut stage = Stage {
        cfg,
        own,
        model,
        checkpoints: Checkpoints::new(&cfg_with_group(cfg, &group), cp_partitions),
        scores_partitions: partitions_of(&cfg.topics.scores),
        clusters_partitions: partitions_of(&cfg.topics.clusters),
        parts: BTreeMap::new(),
        joined: false,
        caught_up: false,
        metrics: StageMetrics::default(),
        options,
    };
    tracing::info!(group, topic = %cfg.topics.features, model = %model.scoring.model_version, "cluster stage started");
    tokio::pin!(shutdown);
    let mut last_report = Instant::now();
    let mut idle_since: Option<Instant> = None;
    let mut probe: Option<Probe> = None;
    loop {
        if futures::poll!(&mut shutdown).is_ready() {
            tracing::info!("cluster stage: shutdown requested");
            break;
        }
        let deadline = tokio::time::Instant::now() + cfg.worker.batch_max_wait;
        let mut batch = 0;
        while batch < cfg.worker.batch_max_messages {
            let received = match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_) => break,
                Ok(r) => r,
            };
            for c in take_changes(&consumer) {
                stage.apply(c).await?;
            }
            match received {
                Ok(m) => {
                    batch += 1;
                    stage.place(m.partition(), m.offset(), m.payload());
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    if let Some(part) = stage.parts.get_mut(&p) {
                        part.at_eof = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cluster stage: consumer error"),
            }
        }
        for c in take_changes(&consumer) {
            stage.apply(c).await?;
        }
        stage.close_and_commit(&consumer).await?;
        stage.publish();
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            tracing::info!("cluster stage: {}", stage.metrics);
        }
        if options.exit_at_eof && stage.done() {
            break;
        }
        if options.exit_at_eof && stage.joined && stage.parts.is_empty() {
            // A member given nothing (more members than partitions, or an
            // assignment made while the topic's metadata was missing; nisshi
            // hands a first empty one out now and then) is done once the
            // group's input is, or is given partitions by a later
            // rebalance; never "done" because it holds nothing.
            let since = *idle_since.get_or_insert_with(Instant::now);
            if let Some(unfinished) = probe.as_mut().and_then(|p| p.take_if_done()) {
                let unfinished = unfinished.map_err(|e| StageError::Probe(e.to_string()))?;
                // Input committed to its end means done only once the
                // account stage is: before, an empty features topic would
                // look finished too. (A member with partitions knows from
                // the upstream's final marks; one without has none.)
                if unfinished.is_empty() && options.upstream_done {
                    tracing::info!(
                        "cluster stage: no partitions here, and the group's input is done"
                    );
                    break;
                }
                if since.elapsed() >= cfg.worker.group_done_timeout {
                    return Err(StageError::NothingAssigned {
                        topic: cfg.topics.features.clone(),
                        waited: since.elapsed(),
                        unfinished,
                    });
                }
                tracing::info!(unfinished = ?unfinished, "cluster stage: no partitions assigned here; waiting for a rebalance or the group's input");
            }
            let ask = probe.as_ref().is_none_or(Probe::due);
            if ask && since.elapsed() >= Duration::from_secs(2) {
                // A full metadata answer lets librdkafka see a subscribed
                // topic the assignment missed and rejoin; without one it
                // waits for its periodic refresh, five minutes by default.
                // Nothing happens when the subscription did not change.
                if let Err(e) = tokio::task::block_in_place(|| {
                    consumer.fetch_metadata(None, Duration::from_secs(1))
                }) {
                    tracing::warn!(error = %e, "cluster stage: metadata refresh failed");
                }
                // Off this loop: it takes seconds on a slow broker, and the
                // consumer must keep polling within max.poll.interval.ms.
                let (own, group, topic) = (
                    stage.own.clone(),
                    group.clone(),
                    cfg.topics.features.clone(),
                );
                probe = Some(Probe::spawn(move || {
                    crate::source::unfinished_in(
                        &own,
                        &group,
                        &topic,
                        &BTreeSet::new(),
                        Duration::from_secs(5),
                    )
                }));
            }
        } else {
            idle_since = None;
            probe = None;
        }
    }
    stage.publish();
    tracing::info!(
        elapsed_s = started.elapsed().as_secs_f64(),
        "cluster stage stopped: {}",
        stage.metrics
    );
    Ok(stage.metrics)
}

/// The cluster's metadata, once it names the features and checkpoints
/// topics: their partition counts place every checkpoint key and output
/// record, so a failed or partial answer (a broker refusing a connection
/// for a moment) is asked again, not taken as "one partition". Waits up to
/// `worker.read_timeout`.
async fn stage_metadata(
    consumer: &StreamConsumer<StageContext>,
    cfg: &Config,
) -> Result<rdkafka::metadata::Metadata, StageError> {
    let started = Instant::now();
    let needed = [
        cfg.topics.features.as_str(),
        cfg.topics.checkpoints.as_str(),
    ];
    loop {
        let last = match tokio::task::block_in_place(|| {
            consumer.fetch_metadata(None, Duration::from_secs(10))
        }) {
            Ok(md) => {
                let missing: Vec<&str> = needed
                    .iter()
                    .copied()
                    .filter(|t| crate::topics::partition_count(&md, t) == 0)
                    .collect();
                if missing.is_empty() {
                    return Ok(md);
                }
                format!("no partitions listed for {missing:?}")
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= cfg.worker.read_timeout {
            return Err(StageError::Metadata {
                bootstrap: cfg.kafka.bootstrap_servers.clone(),
                waited: started.elapsed(),
                reason: last,
            });
        }
        tracing::warn!(reason = %last, "cluster stage: metadata incomplete; asking again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The end-of-group question in the [`Background`]; the loop looks for
/// the answer each turn and asks again two seconds after it came.
///
/// [`Background`]: crate::source::Background
struct Probe {
    pending: Option<crate::source::Background<Vec<i32>>>,
    answered: Option<Instant>,
}

impl Probe {
    fn spawn(
        f: impl FnOnce() -> Result<Vec<i32>, crate::source::SourceError> + Send + 'static,
    ) -> Self {
        Probe {
            pending: Some(crate::source::Background::spawn(f)),
            answered: None,
        }
    }

    /// Answered two seconds ago or more: time to ask again.
    fn due(&self) -> bool {
        self.pending.is_none()
            && self
                .answered
                .is_some_and(|t| t.elapsed() >= Duration::from_secs(2))
    }

    /// The answer, once, when it has come.
    fn take_if_done(&mut self) -> Option<Result<Vec<i32>, crate::source::SourceError>> {
        let answer = self.pending.as_ref()?.within(Duration::ZERO)?;
        self.pending = None;
        self.answered = Some(Instant::now());
        Some(answer)
    }
}

/// Rebalances recorded by the consumer's callbacks since the last call.
fn take_changes(consumer: &StreamConsumer<StageContext>) -> Vec<Change> {
    std::mem::take(
        &mut *consumer
            .context()
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    )
}

fn cfg_with_group(cfg: &Config, group: &str) -> Config {
    let mut c = cfg.clone();
    c.kafka.group_id = group.to_string();
    c
}

struct Stage<'a> {
    cfg: &'a Config,
    own: Config,
    model: &'a ClusterModel,
    checkpoints: Checkpoints,
    scores_partitions: Option<i32>,
    clusters_partitions: Option<i32>,
    parts: BTreeMap<i32, Part>,
    joined: bool,
    /// Every assigned partition was read to its end since the last
    /// rebalance: `/readyz`.
    caught_up: bool,
    metrics: StageMetrics,
    options: StageOptions,
}

impl Stage<'_> {
    /// Counters, liveness and readiness for `/metrics` and the probes.
    fn publish(&mut self) {
        self.caught_up |= self.joined && self.parts.values().all(|p| p.at_eof);
        crate::telemetry::publish_clusters(
            self.metrics.clusters_emitted,
            self.metrics.commits,
            self.parts.len(),
        );
        let health = crate::telemetry::health();
        health.set_ready("clusters", self.caught_up);
        health.beat();
    }

    async fn apply(&mut self, change: Change) -> Result<(), StageError> {
        crate::telemetry::rebalance("clusters");
        self.caught_up = false;
        match change {
            Change::Revoked(ps) => {
                tracing::info!(partitions = ?ps, "cluster stage: partitions revoked");
                for p in ps {
                    // Uncommitted work is redone by the next owner.
                    self.parts.remove(&p);
                }
            }
            Change::Assigned(ps) => {
                tracing::info!(partitions = ?ps, "cluster stage: partitions assigned");
                self.joined = true;
                let keys: BTreeMap<String, i32> = ps
                    .iter()
                    .map(|&p| (self.checkpoints.stage_key(&self.cfg.topics.features, p), p))
                    .collect();
                for &p in &ps {
                    let producer = self.producer(p)?;
                    self.parts.insert(
                        p,
                        Part {
                            producer,
                            windows: ClusterWindows::default(),
                            repeats: Repeats::default(),
                            state: StageCheckpoint {
                                closed: i64::MIN,
                                ..Default::default()
                            },
                            position: None,
                            committed: None,
                            at_eof: false,
                        },
                    );
                }
                // After the producers: initialising one aborts what the
                // previous owner left open, which would hide its checkpoint.
                let found = tokio::task::block_in_place(|| {
                    self.checkpoints
                        .read_values(&keys, self.cfg.worker.read_timeout)
                })?;
                for (k, p) in keys {
                    let Some(v) = found.get(&k) else { continue };
                    match std::str::from_utf8(v).ok().and_then(StageCheckpoint::parse) {
                        Some(c) => {
                            if let Some(part) = self.parts.get_mut(&p) {
                                part.state = c;
                            }
                        }
                        None => {
                            tracing::warn!(partition = p, "unreadable cluster checkpoint ignored")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn producer(&self, p: i32) -> Result<FutureProducer, StageError> {
        let mut cc = self.own.producer_config();
        cc.set(
            "message.timeout.ms",
            self.cfg.worker.produce_timeout.as_millis().to_string(),
        )
        .set(
            "transactional.id",
            format!(
                "{}.{}.{}",
                self.own.kafka.group_id, self.cfg.topics.features, p
            ),
        );
        let producer: FutureProducer = cc.create()?;
        tokio::task::block_in_place(|| producer.init_transactions(self.cfg.worker.produce_timeout))
            .map_err(|source| StageError::Transaction {
                partition: p,
                source,
            })?;
        Ok(producer)
    }

    fn place(&mut self, p: i32, offset: i64, payload: Option<&[u8]>) {
        let limits = self.model.limits;
        let Some(part) = self.parts.get_mut(&p) else {
            return;
        };
        part.position = Some(offset + 1);
        part.at_eof = false;
        let record = match payload.map(decode_feature) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                self.metrics.undecodable += 1;
                tracing::warn!(partition = p, offset, error = %e, "undecodable features record skipped");
                return;
            }
            None => {
                self.metrics.undecodable += 1;
                return;
            }
        };
        if record.group != self.cfg.kafka.group_id {
            self.metrics.foreign_rows += 1;
            return;
        }
        match record.member {
            None => {
                self.metrics.marks += 1;
                part.state.upstreams = Some(record.upstream_partitions);
                let m = part
                    .state
                    .marks
                    .entry(record.upstream_partition)
                    .or_insert((i64::MIN, false));
                if record.through >= m.0 {
                    *m = (record.through, record.final_);
                }
                part.repeats.mark(record.upstream_partition, record.through);
            }
            Some(row) => {
                let closed = part.state.closed;
                // The latest window holding the row's pane: if it was
                // emitted, all were.
                if limits.pane_of(row.window_start) + limits.window_ms <= closed {
                    self.metrics.rows_after_close += 1;
                    return;
                }
                if part.repeats.is_repeat(record.upstream_partition, &row) {
                    self.metrics.repeated_rows += 1;
                    return;
                }
                self.metrics.member_rows += 1;
                part.windows.add(&limits, &row, offset, closed);
            }
        }
    }

    /// May a partition emit everything it holds? At the end of a bounded
    /// run, once the account stage is done.
    fn flushing(&self, part: &Part) -> bool {
        self.options.exit_at_eof
            && part.at_eof
            && (self.options.upstream_done || part.state.all_final())
    }

    fn done(&self) -> bool {
        self.joined
            && !self.parts.is_empty()
            && self
                .parts
                .values()
                .all(|part| self.flushing(part) && part.windows.is_empty())
    }

    async fn close_and_commit(
        &mut self,
        consumer: &StreamConsumer<StageContext>,
    ) -> Result<(), StageError> {
        let limits = self.model.limits;
        let ps: Vec<i32> = self.parts.keys().copied().collect();
        for p in ps {
            let flush = self.flushing(&self.parts[&p]);
            let part = self.parts.get_mut(&p).expect("listed");
            let starts = if flush {
                part.windows.starts(&limits, part.state.closed)
            } else {
                match part.state.through() {
                    Some(t) => part.windows.closable(&limits, t, part.state.closed),
                    None => Vec::new(),
                }
            };
            let mut risks = Vec::new();
            let mut members = Vec::new();
            for start in &starts {
                for c in part.windows.close(&limits, *start, self.model.min_members) {
                    let risk = self.model.score(c);
                    members.extend(self.model.member_scores(&risk));
                    risks.push(risk);
                }
                part.state.closed = part.state.closed.max(start + limits.window_ms);
            }
            let offset = part.windows.oldest_offset().or(part.position);
            let moved = offset.is_some() && offset != part.committed;
            if starts.is_empty() && !moved {
                continue;
            }
            // Only when windows closed, or at the end: committing every
            // poll's progress would be a transaction per batch.
            if starts.is_empty() && !flush {
                continue;
            }
            let Some(offset) = offset else { continue };
            self.metrics.clusters_emitted += risks.len() as u64;
            self.metrics.clusters_high +=
                risks.iter().filter(|r| r.level >= Level::High).count() as u64;
            self.metrics.broad_keys += risks.iter().filter(|r| r.cluster.broad).count() as u64;
            self.metrics.member_scores += members.len() as u64;
            let part = &self.parts[&p];
            commit(
                self.cfg,
                &self.checkpoints,
                self.clusters_partitions,
                self.scores_partitions,
                p,
                part,
                &risks,
                &members,
                offset,
                consumer,
            )
            .await?;
            self.metrics.commits += 1;
            self.parts.get_mut(&p).expect("listed").committed = Some(offset);
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn commit(
    cfg: &Config,
    checkpoints: &Checkpoints,
    clusters_partitions: Option<i32>,
    scores_partitions: Option<i32>,
    p: i32,
    part: &Part,
    risks: &[ClusterRisk],
    members: &[RiskScore],
    offset: i64,
    consumer: &StreamConsumer<StageContext>,
) -> Result<(), StageError> {
    let txn = |source| StageError::Transaction {
        partition: p,
        source,
    };
    let producer = &part.producer;
    let timeout = cfg.worker.produce_timeout;
    producer.begin_transaction().map_err(txn)?;
    let sent = async {
        let mut deliveries = Vec::new();
        for r in risks {
            let key = cluster_key(r);
            let payload = encode_cluster(r)?;
            let id = r.cluster_id();
            let mut rec = FutureRecord::to(&cfg.topics.clusters)
                .key(key.as_str())
                .payload(payload.as_slice());
            if let Some(n) = clusters_partitions {
                rec = rec.partition(partition_of(id.as_bytes(), n));
            }
            deliveries.push((&cfg.topics.clusters, send(producer, rec).await?));
        }
        for s in members {
            let key = score_key(s);
            let payload = encode_score(s)?;
            let mut rec = FutureRecord::to(&cfg.topics.scores)
                .key(key.as_str())
                .payload(payload.as_slice());
            if let Some(n) = scores_partitions {
                rec = rec.partition(partition_of(s.account_id.as_bytes(), n));
            }
            deliveries.push((&cfg.topics.scores, send(producer, rec).await?));
        }
        for (topic, d) in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((source, _))) => {
                    return Err(StageError::Produce {
                        topic: topic.clone(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(StageError::Produce {
                        topic: topic.clone(),
                        source: KafkaError::Canceled,
                    })
                }
            }
        }
        // The checkpoint after the records it vouches for.
        let key = checkpoints.stage_key(&cfg.topics.features, p);
        let value = part.state.encode();
        let rec = FutureRecord::to(&checkpoints.topic)
            .partition(checkpoints.partition_for(p))
            .key(key.as_str())
            .payload(value.as_bytes());
        match send(producer, rec).await?.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((source, _))) => Err(StageError::Produce {
                topic: checkpoints.topic.clone(),
                source,
            }),
            Err(_) => Err(StageError::Produce {
                topic: checkpoints.topic.clone(),
                source: KafkaError::Canceled,
            }),
        }
    }
    .await;
    let finished = sent.and_then(|()| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&cfg.topics.features, p, Offset::Offset(offset))?;
        let group = consumer
            .group_metadata()
            .ok_or(StageError::NoGroupMetadata)?;
        tokio::task::block_in_place(|| {
            producer.send_offsets_to_transaction(&tpl, &group, timeout)?;
            producer.commit_transaction(timeout)
        })
        .map_err(txn)
    });
    if let Err(e) = finished {
        let _ = tokio::task::block_in_place(|| producer.abort_transaction(timeout));
        crate::telemetry::transaction_aborted();
        return Err(e);
    }
    Ok(())
}

/// Queue one record, waiting for room when librdkafka's queue is full.
async fn send<'a>(
    producer: &FutureProducer,
    record: FutureRecord<'a, str, [u8]>,
) -> Result<rdkafka::producer::DeliveryFuture, StageError> {
    let mut record = record;
    loop {
        match producer.send_result(record) {
            Ok(d) => return Ok(d),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((source, r)) => {
                return Err(StageError::Produce {
                    topic: r.topic.to_string(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_waits_for_every_upstream() {
        let mut c = StageCheckpoint {
            closed: 3_600_000,
            upstreams: Some(3),
            marks: BTreeMap::new(),
        };
        c.marks.insert(0, (7_200_000, false));
        c.marks.insert(2, (4_200_000, true));
        assert_eq!(StageCheckpoint::parse(&c.encode()), Some(c.clone()));
        assert_eq!(c.through(), None, "upstream 1 has not marked yet");
        c.marks.insert(1, (6_000_000, true));
        assert_eq!(c.through(), Some(4_200_000));
        assert!(!c.all_final());
        c.marks.insert(0, (7_200_000, true));
        assert!(c.all_final());
        let empty = StageCheckpoint {
            closed: i64::MIN,
            ..Default::default()
        };
        assert_eq!(StageCheckpoint::parse(&empty.encode()), Some(empty));
    }
}
