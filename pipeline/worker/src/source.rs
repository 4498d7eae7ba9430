//! Kafka consumption: the event topics through a consumer group, and the
//! whole accounts topic as a table that follows updates.
//!
//! Standard Kafka APIs only. Co-partitioning of requests and responses relies
//! on the `range` assignor, which gives a member the same partition numbers of
//! every subscribed topic with the same partition count.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::client::Client;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::config::Config;
use crate::decode::{RawMessage, RecordDecoder};
use crate::enrich::AccountTable;
use crate::io::{Accounts, Membership, Source};
use crate::schemas::SchemaSet;
use crate::window::Side;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The (in-memory) broker refused a request.
    #[error("refused: {0}")]
    Rejected(String),
    #[error("cannot read metadata of topic {topic} from {bootstrap} (is the broker up? see [kafka] bootstrap_servers)")]
    Metadata {
        bootstrap: String,
        topic: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("[librdkafka] {key} = {value:?} is not allowed: {why}")]
    Forbidden {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error("topics {requests} ({req} partitions) and {responses} ({resp} partitions) must have the same partition count: requests and responses of an account are joined within one partition number")]
    NotCoPartitioned {
        requests: String,
        responses: String,
        req: usize,
        resp: usize,
    },
    #[error("topic {0} does not exist (the worker creates only its internal checkpoint topic; see `distill-watch topics create`)")]
    MissingTopic(String),
    #[error("reading {topic}: {message}")]
    Accounts { topic: String, message: String },
    #[error("topic {topic} was not read to its end within {timeout:?} (partitions {partitions:?} still reading)")]
    NotReadToEnd {
        topic: String,
        timeout: Duration,
        partitions: Vec<i32>,
    },
}

/// A partition of one of the two event topics.
pub type TopicPartition = (Side, i32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
}

/// The two event topics, and which side of a partition pair each is.
#[derive(Debug, Clone)]
struct EventTopics {
    requests: String,
    responses: String,
}

impl EventTopics {
    fn name(&self, side: Side) -> &str {
        match side {
            Side::Requests => &self.requests,
            Side::Responses => &self.responses,
        }
    }

    fn side(&self, topic: &str) -> Option<Side> {
        if topic == self.requests {
            Some(Side::Requests)
        } else if topic == self.responses {
            Some(Side::Responses)
        } else {
            None
        }
    }

    fn parts(&self, tpl: &TopicPartitionList) -> Vec<TopicPartition> {
        tpl.elements()
            .iter()
            .filter_map(|e| Some((self.side(e.topic())?, e.partition())))
            .collect()
    }
}

/// Rebalance callbacks run inside `recv()`, on the polling task; they only
/// record what happened, and the worker acts on it between batches.
struct SourceContext {
    topics: EventTopics,
    changes: Mutex<Vec<Change>>,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }
}

fn is_eof(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::PartitionEOF(_)
            | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
    )
}

/// End-of-partition is expected (and requested) when reading to the end of
/// input, but librdkafka also reports it as a global error; keep it quiet.
fn log_client_error(error: KafkaError, reason: &str) {
    if is_eof(&error) {
        tracing::trace!(reason, "end of partition");
    } else {
        tracing::error!(error = %error, reason, "kafka client error");
    }
}

/// Consumer context for readers that ask for end-of-partition events.
pub struct EofQuietContext;

impl ClientContext for EofQuietContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }
}

impl ConsumerContext for EofQuietContext {}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = self.topics.parts(tpl);
            tracing::info!(partitions = ?parts, "partitions revoked");
            self.changes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Change::Revoked(parts));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = self.topics.parts(tpl);
                tracing::info!(partitions = ?parts, "partitions assigned");
                self.changes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Change::Assigned(parts));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// What one poll returned.
#[derive(Debug, Default)]
pub struct Polled {
    pub messages: Vec<(Side, RawMessage)>,
    /// Partition numbers that reported end-of-partition (topic unknown:
    /// librdkafka's EOF event does not say which topic).
    pub eofs: Vec<i32>,
    /// Rebalances that happened after `messages` were received.
    pub changes: Vec<Change>,
}

/// The event topics, consumed by the worker's consumer group.
pub struct EventSource {
    consumer: StreamConsumer<SourceContext>,
    /// For the group-done probe's own consumers.
    cfg: Config,
    topics: EventTopics,
    bootstrap: String,
    /// Partitions of each event topic, as found at start.
    partitions: usize,
    /// A message received together with a rebalance; it belongs to the
    /// next poll.
    stash: Option<(Side, RawMessage)>,
    /// The end-of-group question in flight, on its own thread.
    probe: Mutex<Option<GroupProbe>>,
}

/// A blocking question about the group asked on a thread of its own: on a
/// slow broker it takes longer than a consumer may go between polls
/// (`max.poll.interval.ms`), and a worker that has finished its own
/// partitions must stay in its group while it asks whether the others
/// have. Both stages' end-of-group probes use it.
pub(crate) struct Background<V> {
    answer: std::sync::mpsc::Receiver<Result<V, SourceError>>,
}

impl<V: Send + 'static> Background<V> {
    pub(crate) fn spawn(f: impl FnOnce() -> Result<V, SourceError> + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The asker may have stopped waiting; nobody to tell then.
            let _ = tx.send(f());
        });
        Background { answer: rx }
    }

    /// The answer, if it comes within `wait` (zero: only look). Taken
    /// once: drop this after it came. Blocking for up to `wait`.
    pub(crate) fn within(&self, wait: Duration) -> Option<Result<V, SourceError>> {
        use std::sync::mpsc::RecvTimeoutError;
        match self.answer.recv_timeout(wait) {
            Ok(answer) => Some(answer),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Err(SourceError::Rejected(
                "the end-of-group probe's thread ended without an answer".into(),
            ))),
        }
    }
}

/// [`unfinished_partitions`] and the checkpoints' look at held roll-up
/// rows, asked in the [`Background`].
struct GroupProbe {
    /// The `done` set it was asked with: an answer about another set is
    /// not an answer.
    asked: BTreeSet<TopicPartition>,
    answer: Background<Vec<TopicPartition>>,
}

/// How long [`Source::unfinished`] waits for a probe it has just started
/// before it answers "not known yet" (a probe already in flight is not
/// waited for): long enough for one on a healthy
/// broker (a bounded run then ends as soon as it could), well inside the
/// poll interval.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// librdkafka settings the worker owns: changing them would break offset
/// handling or co-partitioning.
const OWNED: [(&str, &str); 3] = [
    (
        "enable.auto.commit",
        "the worker commits only after scores are acknowledged",
    ),
    (
        "enable.auto.offset.store",
        "the worker commits explicit offsets",
    ),
    (
        "partition.assignment.strategy",
        "co-partitioning needs the range assignor",
    ),
];

impl EventSource {
    pub fn new(cfg: &Config, report_eof: bool) -> Result<Self, SourceError> {
        for (key, why) in OWNED {
            if let Some(value) = cfg.librdkafka.get(key) {
                return Err(SourceError::Forbidden {
                    key: key.into(),
                    value: value.clone(),
                    why,
                });
            }
        }
        let mut cc = cfg.consumer_config();
        cc.set("group.id", &cfg.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("partition.assignment.strategy", "range")
            .set(
                "enable.partition.eof",
                if report_eof { "true" } else { "false" },
            );
        if !cfg.librdkafka.contains_key("auto.offset.reset") {
            cc.set("auto.offset.reset", "earliest");
        }
        let topics = EventTopics {
            requests: cfg.topics.requests.clone(),
            responses: cfg.topics.responses.clone(),
        };
        let context = SourceContext {
            topics: topics.clone(),
            changes: Mutex::new(Vec::new()),
        };
        let consumer: StreamConsumer<SourceContext> = cc.create_with_context(context)?;
        let mut source = EventSource {
            consumer,
            cfg: cfg.clone(),
            topics,
            bootstrap: cfg.kafka.bootstrap_servers.clone(),
            partitions: 0,
            stash: None,
            probe: Mutex::new(None),
        };
        source.partitions = source.check_topics()?;
        source
            .consumer
            .subscribe(&[&source.topics.requests, &source.topics.responses])?;
        Ok(source)
    }

    /// Both event topics exist with the same partition count; returns it.
    fn check_topics(&self) -> Result<usize, SourceError> {
        let count = |topic: &str| -> Result<usize, SourceError> {
            match self.partition_count(topic)? {
                0 => Err(SourceError::MissingTopic(topic.to_string())),
                n => Ok(n),
            }
        };
        let req = count(&self.topics.requests)?;
        let resp = count(&self.topics.responses)?;
        if req != resp {
            return Err(SourceError::NotCoPartitioned {
                requests: self.topics.requests.clone(),
                responses: self.topics.responses.clone(),
                req,
                resp,
            });
        }
        Ok(req)
    }

    /// Partitions of each event topic.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Partition count of `topic` (0 when it does not exist), as
    /// [`partition_count_with`] asks it.
    pub fn partition_count(&self, topic: &str) -> Result<usize, SourceError> {
        partition_count_with(&self.consumer, &self.bootstrap, topic)
    }

    /// Start [`unfinished_partitions`] for `done`, then, when the input is
    /// committed to its end, the look at the checkpoints: an owner may
    /// still be evaluating roll-up windows after its input ends (its
    /// newest checkpoint still counts held rows). Not asked of this
    /// worker's own pairs, which are done.
    fn spawn_probe(&self, done: &BTreeSet<TopicPartition>) -> GroupProbe {
        let cfg = self.cfg.clone();
        let asked = done.clone();
        let parts: Vec<i32> = (0..self.partitions() as i32)
            .filter(|p| !done.contains(&(Side::Requests, *p)))
            .collect();
        let answer = Background::spawn(move || {
            let mut out = unfinished_partitions(&cfg, Duration::from_secs(5), &asked)?;
            if out.is_empty() && !parts.is_empty() {
                // A client of its own: this runs off the worker's thread.
                let client: BaseConsumer = cfg.client_config().create()?;
                let n = partition_count_with(
                    &client,
                    &cfg.kafka.bootstrap_servers,
                    &cfg.topics.checkpoints,
                )?;
                let checkpoints = crate::checkpoint::Checkpoints::new(&cfg, n);
                let topics = [cfg.topics.requests.as_str(), cfg.topics.responses.as_str()];
                let resumes = checkpoints
                    .read_resumes(topics, &parts, cfg.worker.read_timeout)
                    .map_err(|e| SourceError::Rejected(format!("reading checkpoints: {e}")))?;
                for (p, r) in resumes {
                    if r.values().any(|c| c.rollups > 0) {
                        out.push((Side::Requests, p));
                    }
                }
            }
            Ok(out)
        });
        GroupProbe {
            asked: done.clone(),
            answer,
        }
    }

    fn list(&self, parts: &[TopicPartition]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &(side, p) in parts {
            tpl.add_partition(self.topics.name(side), p);
        }
        tpl
    }

    fn take_changes(&self) -> Vec<Change> {
        std::mem::take(
            &mut *self
                .consumer
                .context()
                .changes
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Up to `max` messages, waiting at most `wait` for them. Returns early
    /// on a rebalance so the worker can act on it before anything newer.
    async fn recv_batch(&mut self, max: usize, wait: Duration) -> Result<Polled, SourceError> {
        let mut out = Polled::default();
        if let Some(m) = self.stash.take() {
            out.messages.push(m);
        }
        let deadline = tokio::time::Instant::now() + wait;
        while out.messages.len() < max {
            let received = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => break,
                Ok(r) => r,
            };
            let changes = self.take_changes();
            let item = match received {
                Ok(m) => self.topics.side(m.topic()).map(|side| (side, owned(&m))),
                Err(KafkaError::PartitionEOF(p)) => {
                    out.eofs.push(p);
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    None
                }
            };
            if !changes.is_empty() {
                out.changes = changes;
                self.stash = item;
                break;
            }
            if let Some(m) = item {
                out.messages.push(m);
            }
        }
        if out.changes.is_empty() {
            out.changes = self.take_changes();
        }
        Ok(out)
    }
}

impl Source for EventSource {
    fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl std::future::Future<Output = Result<Polled, SourceError>> + Send {
        self.recv_batch(max, wait)
    }

    fn topic(&self, side: Side) -> &str {
        self.topics.name(side)
    }

    /// From the high watermark of the last fetch response ([`cached_watermarks`]).
    fn watermarks(&self, side: Side, partition: i32) -> Option<(i64, i64)> {
        cached_watermarks(self.consumer.client(), self.topics.name(side), partition)
    }

    fn committed(
        &self,
        parts: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, SourceError> {
        let got = tokio::task::block_in_place(|| {
            self.consumer
                .committed_offsets(self.list(parts), Duration::from_secs(30))
        })?;
        let mut out = BTreeMap::new();
        for e in got.elements() {
            let Some(side) = self.topics.side(e.topic()) else {
                continue;
            };
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            out.insert((side, e.partition()), offset);
        }
        Ok(out)
    }

    fn unfinished(
        &self,
        done: &BTreeSet<TopicPartition>,
    ) -> Result<Vec<TopicPartition>, SourceError> {
        // Answered from a probe on its own thread (see GroupProbe), so the
        // consumer keeps polling; a partition not answered within the
        // probe's budgets counts as unfinished and is asked again at the
        // next probe.
        let all: BTreeSet<TopicPartition> = (0..self.partitions() as i32)
            .flat_map(|p| [(Side::Requests, p), (Side::Responses, p)])
            .collect();
        if all.is_subset(done) {
            // Nothing to ask the broker: no probe consumers, no metadata.
            return Ok(Vec::new());
        }
        if done.is_empty() {
            // Nothing assigned here: a full metadata answer lets librdkafka
            // rejoin if the assignment was made while the topics' metadata
            // was missing (it would otherwise wait for its periodic
            // refresh). No rejoin if nothing changed.
            tokio::task::block_in_place(|| {
                if let Err(e) = self.consumer.fetch_metadata(None, Duration::from_secs(5)) {
                    tracing::warn!(error = %e, "metadata refresh failed");
                }
            });
        }
        let mut slot = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        // Only a probe started now is waited for; one already in flight is
        // only looked at, so a slow broker costs the loop nothing more.
        let mut wait = Duration::ZERO;
        if slot.as_ref().is_none_or(|p| p.asked != *done) {
            // A probe about another set is left to finish on its own.
            *slot = Some(self.spawn_probe(done));
            wait = PROBE_WAIT;
        }
        let probe = slot.as_ref().expect("set above");
        let Some(answer) = tokio::task::block_in_place(|| probe.answer.within(wait)) else {
            // Not answered yet: every partition this worker has not
            // finished itself counts as unfinished until it is.
            return Ok(all.difference(done).copied().collect());
        };
        *slot = None;
        answer
    }

    /// Synchronously.
    fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<(), SourceError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for &((side, p), offset) in offsets {
            tpl.add_partition_offset(self.topics.name(side), p, Offset::Offset(offset))?;
        }
        tokio::task::block_in_place(|| {
            self.consumer
                .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        })?;
        Ok(())
    }

    fn membership(&self) -> Option<Membership> {
        self.consumer.group_metadata().map(Membership::Kafka)
    }

    fn pause(&mut self, parts: &[TopicPartition]) -> Result<(), SourceError> {
        Ok(self.consumer.pause(&self.list(parts))?)
    }

    fn resume(&mut self, parts: &[TopicPartition]) -> Result<(), SourceError> {
        Ok(self.consumer.resume(&self.list(parts))?)
    }
}

impl Accounts for AccountsSource {
    fn snapshot(&self) -> Arc<AccountTable> {
        AccountsSource::snapshot(self)
    }
}

/// (low, high) watermarks librdkafka cached from its last fetch response for
/// the partition (`rd_kafka_get_watermark_offsets`, which rdkafka 0.39 does
/// not wrap): no round trip, and the same numbers its end-of-partition events
/// come from. `None` before the first fetch of the partition. (ListOffsets,
/// behind `fetch_watermarks`, under-reports the high watermark on the local
/// test broker; fetch responses are right there and on Kafka.)
pub fn cached_watermarks<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client handle lives as long as `client`; `topic` is
    // NUL-terminated and outlives the call; `low`/`high` are valid
    // out-pointers. rd_kafka_get_watermark_offsets only reads cached state.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low, high))
}

/// Partitions of the two event topics whose input the group has not
/// finished: the group's committed offset is not at the partition's end (a
/// record is still there to read from it). Probes each topic with its own
/// consumer (end-of-partition events do not name the topic), reading from
/// the committed offsets: correct on any Kafka broker, with no reliance on
/// ListOffsets. Blocking.
pub fn unfinished_partitions(
    cfg: &Config,
    timeout: Duration,
    done: &BTreeSet<TopicPartition>,
) -> Result<Vec<TopicPartition>, SourceError> {
    let mut out = Vec::new();
    for (side, topic) in [
        (Side::Requests, &cfg.topics.requests),
        (Side::Responses, &cfg.topics.responses),
    ] {
        let skip: BTreeSet<i32> = done
            .iter()
            .filter(|(s, _)| *s == side)
            .map(|&(_, p)| p)
            .collect();
        out.extend(
            unfinished_in(cfg, &cfg.kafka.group_id, topic, &skip, timeout)?
                .into_iter()
                .map(|p| (side, p)),
        );
    }
    out.sort();
    Ok(out)
}

/// Partition count of `topic` (0 when it does not exist), asked through
/// `consumer`. Asks for every topic's metadata, not this one's: a broker
/// that auto-creates topics (the local one does, on a metadata request
/// naming them) must not create it here with its default settings.
/// Blocking.
fn partition_count_with<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    bootstrap: &str,
    topic: &str,
) -> Result<usize, SourceError> {
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|source| SourceError::Metadata {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            source: Box::new(source),
        })?;
    Ok(crate::topics::partition_count(&md, topic))
}

/// The partitions of `topic`, but `skip`, where `group`'s committed offset
/// is not at the partition's end: read from the committed offsets to the
/// end-of-partition event, as [`unfinished_partitions`]. A partition that
/// does not answer within `timeout` counts as unfinished. Blocking.
pub fn unfinished_in(
    cfg: &Config,
    group: &str,
    topic: &str,
    skip: &BTreeSet<i32>,
    timeout: Duration,
) -> Result<Vec<i32>, SourceError> {
    let mut cc = cfg.consumer_config();
    // The group's id, to read its committed offsets; assign() without
    // subscribe() never joins the group, and nothing is committed.
    cc.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer<EofQuietContext> = cc.create_with_context(EofQuietContext)?;
    let mut partitions = assign_from_beginning(&consumer, topic, &cfg.kafka.bootstrap_servers)?;
    partitions.retain(|p| !skip.contains(p));
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut start = TopicPartitionList::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        start.add_partition_offset(topic, e.partition(), offset)?;
    }
    consumer.assign(&start)?;
    let mut out = Vec::new();
    let mut waiting: BTreeSet<i32> = partitions.into_iter().collect();
    let deadline = Instant::now() + timeout;
    while !waiting.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            // A record at the committed offset: not finished.
            Some(Ok(m)) if waiting.remove(&m.partition()) => out.push(m.partition()),
            Some(Ok(_)) => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                waiting.remove(&p);
            }
            Some(Err(e)) => crate::connect::ride_out(e)?,
        }
    }
    out.extend(waiting);
    out.sort();
    Ok(out)
}

/// Assign every partition of `topic` to `consumer`, from the beginning.
/// Returns the partitions.
fn assign_from_beginning<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    topic: &str,
    bootstrap: &str,
) -> Result<Vec<i32>, SourceError> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| SourceError::Metadata {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            source: Box::new(source),
        })?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .filter(|p: &Vec<i32>| !p.is_empty())
        .ok_or_else(|| SourceError::MissingTopic(topic.to_string()))?;
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(partitions)
}

/// Every record of `topic`, from the beginning to the end-of-partition event
/// of each partition (one topic, so EOF's partition number is unambiguous;
/// not to ListOffsets, which the local broker under-reports). `cc` needs
/// `bootstrap.servers` and `group.id`; end-of-partition reporting is turned
/// on here.
pub fn read_to_end(
    cc: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>, SourceError> {
    let mut cc = cc.clone();
    cc.set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<EofQuietContext> = cc.create_with_context(EofQuietContext)?;
    let bootstrap = cc.get("bootstrap.servers").unwrap_or_default().to_string();
    let mut pending: BTreeSet<i32> = assign_from_beginning(&consumer, topic, &bootstrap)?
        .into_iter()
        .collect();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(SourceError::NotReadToEnd {
                topic: topic.to_string(),
                timeout,
                partitions: pending.into_iter().collect(),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                pending.insert(m.partition());
                out.push(m.detach());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => crate::connect::ride_out(e)?,
        }
    }
    Ok(out)
}

/// Reads the accounts topic whole, then keeps following it.
pub struct AccountsSource {
    /// The current table; readers clone the inner `Arc` (a snapshot) and the
    /// follower copies on write, so a window never sees a half-applied batch.
    table: Arc<RwLock<Arc<AccountTable>>>,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for AccountsSource {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl AccountsSource {
    /// Read `topic` from the beginning up to its current end (so the first
    /// windows are enriched with every account that existed at start), then
    /// follow it on a background task. Records that do not decode are
    /// counted, logged and skipped: they cannot be committed past anyway,
    /// since this reader has no consumer group.
    pub async fn start(
        cfg: &Config,
        bootstrap_timeout: Duration,
    ) -> Result<AccountsSource, SourceError> {
        let topic = cfg.topics.accounts.clone();
        let mut cc: ClientConfig = cfg.consumer_config();
        // End-of-partition events mark the end of the initial read (the
        // local broker under-reports ListOffsets high watermarks; EOF comes
        // from fetch responses and is right on Kafka too).
        cc.set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set(
                "group.id",
                format!("{}-accounts-reader", cfg.kafka.group_id),
            );
        let consumer: StreamConsumer<EofQuietContext> = cc.create_with_context(EofQuietContext)?;
        let partitions = assign_from_beginning(&consumer, &topic, &cfg.kafka.bootstrap_servers)?;
        let table = Arc::new(RwLock::new(Arc::new(AccountTable::default())));
        let mut decoder = RecordDecoder::new(&SchemaSet::builtin().account, 1024, i64::MAX / 4)
            .map_err(|e| SourceError::Accounts {
                topic: topic.clone(),
                message: e.to_string(),
            })?;
        let mut reader = AccountReader {
            topic: topic.clone(),
            skipped: 0,
            tombstones: 0,
        };

        let started = Instant::now();
        let mut not_at_end: BTreeSet<i32> = partitions.iter().copied().collect();
        let mut pending = Vec::new();
        while !not_at_end.is_empty() {
            if started.elapsed() > bootstrap_timeout {
                return Err(SourceError::NotReadToEnd {
                    topic,
                    timeout: bootstrap_timeout,
                    partitions: not_at_end.into_iter().collect(),
                });
            }
            match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                Ok(Ok(m)) => {
                    not_at_end.insert(m.partition());
                    pending.push(owned(&m));
                    if pending.len() >= 1024 {
                        reader.apply(&mut decoder, &table, std::mem::take(&mut pending));
                    }
                }
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    not_at_end.remove(&p);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "accounts consumer error"),
                Err(_) => {}
            }
        }
        reader.apply(&mut decoder, &table, pending);
        let n = table.read().unwrap_or_else(|e| e.into_inner()).len();
        tracing::info!(accounts = n, topic = %topic, "account table loaded");
        let follow_table = table.clone();
        let follower = tokio::spawn(async move {
            loop {
                let mut batch = Vec::new();
                match consumer.recv().await {
                    Ok(m) => batch.push(owned(&m)),
                    Err(KafkaError::PartitionEOF(_)) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "accounts consumer error");
                        continue;
                    }
                }
                while batch.len() < 1024 {
                    match tokio::time::timeout(Duration::from_millis(20), consumer.recv()).await {
                        Ok(Ok(m)) => batch.push(owned(&m)),
                        _ => break,
                    }
                }
                reader.apply(&mut decoder, &follow_table, batch);
            }
        });
        Ok(AccountsSource { table, follower })
    }

    /// The table as it is now; cheap, and unaffected by later updates.
    pub fn snapshot(&self) -> Arc<AccountTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct AccountReader {
    topic: String,
    skipped: u64,
    tombstones: u64,
}

impl AccountReader {
    fn apply(
        &mut self,
        decoder: &mut RecordDecoder,
        table: &RwLock<Arc<AccountTable>>,
        mut msgs: Vec<RawMessage>,
    ) {
        // A tombstone deletes the key in compaction; the history of the
        // account is still what past windows were enriched with, so keep it.
        let before = msgs.len();
        msgs.retain(|m| m.payload.is_some());
        if msgs.len() < before {
            self.tombstones += (before - msgs.len()) as u64;
            tracing::debug!(topic = %self.topic, tombstones_total = self.tombstones, "account tombstones ignored");
        }
        if msgs.is_empty() {
            return;
        }
        match decoder.decode(&msgs) {
            Ok(d) => {
                for r in &d.rejects {
                    self.skipped += 1;
                    let m = &msgs[r.msg_index];
                    tracing::warn!(topic = %self.topic, partition = m.partition, offset = m.offset, kind = r.kind.as_str(), detail = %r.detail, skipped_total = self.skipped, "account record skipped");
                }
                let mut guard = table.write().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = Arc::make_mut(&mut guard).apply(&d.batch) {
                    tracing::error!(error = %e, "account batch could not be applied");
                }
            }
            Err(e) => tracing::error!(error = %e, "account decoder failed"),
        }
    }
}

pub(crate) fn owned<M: Message>(m: &M) -> RawMessage {
    RawMessage {
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().map(Bytes::copy_from_slice),
        payload: m.payload().map(Bytes::copy_from_slice),
    }
}
