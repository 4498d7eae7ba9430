//! Avro encoding of risk scores and producing to Kafka: scores to
//! `risk.scores.v1`, rejected input to the DLQ.
//!
//! Each partition pair commits its outputs with its input offsets as one
//! [`Cycle`]: in one Kafka transaction (exactly-once), or acknowledged
//! before the offsets are committed (at-least-once).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::checkpoint::Checkpoints;
use crate::config::{Config, Delivery};
use crate::decode::{RawMessage, Reject, RejectKind};
use crate::io::{Membership, Opened, Sink, Source};
use crate::partition::partition_of;
use crate::rollup::{encode_rows, RollupRecord};
use crate::schemas::SchemaSet;
use crate::score::RiskScore;
use crate::source::TopicPartition;
use crate::window::Resume;
use crate::worker::WorkerError;

/// Record headers on produced scores and DLQ records. They carry what must
/// stay out of the value to keep it a pure function of the input.
pub const HEADER_PROCESSED_AT: &str = "dw.processed_at_ms";
pub const HEADER_WORKER: &str = "dw.worker";
/// DLQ headers.
pub const HEADER_ERROR_KIND: &str = "dw.error.kind";
pub const HEADER_ERROR_MESSAGE: &str = "dw.error.message";
pub const HEADER_SOURCE_TOPIC: &str = "dw.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "dw.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "dw.source.offset";
pub const HEADER_SOURCE_TIMESTAMP: &str = "dw.source.timestamp_ms";

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("producing to {topic} failed: {source}")]
    Produce {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("producer was shut down before {topic} acknowledged a record")]
    Canceled { topic: String },
    #[error("encoding a RiskScore: {0}")]
    Encode(#[from] apache_avro::Error),
    #[error("creating a producer: {0}")]
    Client(#[source] KafkaError),
    #[error("transaction of partition {partition}: {source}")]
    Transaction {
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("the consumer has no group metadata to commit offsets in a transaction with (not in a group yet?)")]
    NoGroupMetadata,
    #[error("committing offsets: {0}")]
    Commit(String),
    #[error("encoding held roll-up rows: {0}")]
    Rows(#[from] arrow::error::ArrowError),
    #[error("topic {topic} does not exist (or has no partitions)")]
    MissingTopic { topic: String },
}

/// Kafka key of a score: the account and the window's start (epoch ms),
/// `<account_id>/<window_start>`, so that a compacted topic keeps the newest
/// revision of every account's window. Records are partitioned by the
/// account alone (Kafka's default partitioner on `account_id`), so one
/// account's scores stay in order in one partition.
///
/// A member score (`cluster_id` set) appends `/<cluster_id>`: it is another
/// subject (the account as a member of that cluster) and must not replace the
/// account's own score under compaction.
pub fn score_key(s: &RiskScore) -> String {
    match &s.cluster_id {
        None => format!("{}/{}", s.account_id, s.window_start),
        Some(c) => format!("{}/{}/{}", s.account_id, s.window_start, c),
    }
}

/// Encode one score as a Confluent-framed `RiskScore`, straight to Avro's
/// binary encoding: the same bytes as `apache_avro` writes for the schema
/// (a test holds them equal), without building and validating a tree of
/// generic values for every score.
pub fn encode_score(s: &RiskScore) -> Result<Vec<u8>, apache_avro::Error> {
    let schema_id = SchemaSet::builtin().risk_score.id;
    let mut out = Vec::with_capacity(128 + 24 * s.features.len());
    out.push(crate::schemas::CONFLUENT_MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    avro_string(&mut out, &s.account_id);
    avro_long(&mut out, s.window_start);
    avro_long(&mut out, s.window_end);
    out.extend_from_slice(&s.score.to_le_bytes());
    avro_long(&mut out, s.level.index() as i64);
    avro_array(&mut out, &s.reasons, |out, r| {
        avro_string(out, &r.feature);
        out.extend_from_slice(&r.value.to_le_bytes());
        out.extend_from_slice(&r.contribution.to_le_bytes());
    });
    avro_array(&mut out, &s.features, |out, (name, v)| {
        avro_string(out, name);
        match v {
            Some(x) => {
                avro_long(out, 1);
                out.extend_from_slice(&x.to_le_bytes());
            }
            None => avro_long(out, 0),
        }
    });
    avro_string(&mut out, &s.model_version);
    avro_long(&mut out, s.event_count);
    avro_long(&mut out, s.response_count);
    avro_long(&mut out, i64::from(s.revision));
    match &s.cluster_id {
        Some(c) => {
            avro_long(&mut out, 1);
            avro_string(&mut out, c);
        }
        None => avro_long(&mut out, 0),
    }
    Ok(out)
}

/// Avro `long` (and `int`, enum index, union branch, lengths): zig-zag,
/// then 7 bits a byte, low bits first.
fn avro_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn avro_string(out: &mut Vec<u8>, s: &str) {
    avro_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// One block holding every item, then the empty block that ends the array
/// (how `apache_avro` writes arrays).
fn avro_array<T>(out: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    if !items.is_empty() {
        avro_long(out, items.len() as i64);
        for i in items {
            item(out, i);
        }
    }
    avro_long(out, 0);
}

/// A name for this process in record headers.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}/{}", std::process::id())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Record headers, in the order given.
fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(
        OwnedHeaders::new_with_capacity(pairs.len()),
        |h, &(key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        },
    )
}

/// Wait for every delivery; the first failure is the error.
async fn await_all(deliveries: Vec<(&String, DeliveryFuture)>) -> Result<(), SinkError> {
    for (topic, result) in join_all(
        deliveries
            .into_iter()
            .map(|(t, f)| async move { (t, f.await) }),
    )
    .await
    {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((source, _))) => {
                return Err(SinkError::Produce {
                    topic: topic.clone(),
                    source,
                })
            }
            Err(_) => {
                return Err(SinkError::Canceled {
                    topic: topic.clone(),
                })
            }
        }
    }
    Ok(())
}

/// A rejected input message on its way to the DLQ.
#[derive(Debug, Clone)]
pub struct DlqRecord {
    pub source_topic: String,
    pub msg: RawMessage,
    pub kind: RejectKind,
    pub detail: String,
}

impl DlqRecord {
    pub fn new(source_topic: &str, msg: &RawMessage, reject: &Reject) -> Self {
        DlqRecord {
            source_topic: source_topic.to_string(),
            msg: msg.clone(),
            kind: reject.kind,
            detail: reject.detail.clone(),
        }
    }
}

/// Everything one partition pair emits and commits together.
#[derive(Debug, Default)]
pub struct Cycle {
    pub scores: Vec<RiskScore>,
    pub dlq: Vec<DlqRecord>,
    /// Per input topic of the pair: the checkpoint, whose offset is also
    /// the one committed.
    pub checkpoints: Vec<(String, Resume)>,
    /// Changes to the roll-ups' held rows, written to the checkpoint topic
    /// before the checkpoints that count them.
    pub rollups: Vec<RollupRecord>,
    /// Member rows for the cluster stage (features topic).
    pub members: Vec<crate::cluster::MemberRow>,
    /// Progress mark for the cluster stage: every window ending at or
    /// before this was emitted; `true` once a bounded run's input is done.
    pub mark: Option<(i64, bool)>,
}

/// The producer of one partition pair. With exactly-once delivery it is
/// transactional with a `transactional.id` derived from the group and the
/// partition, so whoever owns the partition next fences this one (and aborts
/// what it left open) when it starts.
pub struct PairSink {
    producer: FutureProducer,
    transactional: bool,
    partition: i32,
    scores_topic: String,
    dlq_topic: String,
    /// Partitions of the scores topic, when it exists (else the producer's
    /// partitioner decides, on a topic the broker creates).
    scores_partitions: Option<i32>,
    requests_topic: String,
    checkpoints_topic: String,
    checkpoint_partition: i32,
    timeout: Duration,
    worker: String,
    /// With `[clusters] enabled`: where member rows and marks go.
    features: Option<FeaturesOut>,
}

/// The features topic as the account stage writes it.
struct FeaturesOut {
    topic: String,
    partitions: i32,
    group: String,
    /// Input partitions of the account stage (the marks' `upstream_partitions`).
    upstream_partitions: i32,
}

/// Kafka as the worker's [`Sink`]: a [`PairSink`] per owned partition pair,
/// checkpoints read from the checkpoint topic's tail.
pub struct KafkaSink {
    cfg: Config,
    checkpoints: Checkpoints,
}

impl KafkaSink {
    pub fn new(cfg: &Config, checkpoints: Checkpoints) -> Self {
        KafkaSink {
            cfg: cfg.clone(),
            checkpoints,
        }
    }
}

impl Sink for KafkaSink {
    type Pair = PairSink;

    async fn open(&mut self, partitions: &[i32]) -> Result<Vec<Opened<PairSink>>, WorkerError> {
        // Producers first, initialised side by side (each a few round
        // trips): initialising one ends what the previous owner left open,
        // which would otherwise hide its newest checkpoints.
        let cfg = &self.cfg;
        let checkpoints = &self.checkpoints;
        let pairs: Vec<Result<PairSink, SinkError>> = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let handles: Vec<_> = partitions
                    .iter()
                    .map(|&p| scope.spawn(move || PairSink::new(cfg, p, checkpoints)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("producer initialisation panicked"))
                    .collect()
            })
        });
        let topics = [cfg.topics.requests.as_str(), cfg.topics.responses.as_str()];
        let mut restored = tokio::task::block_in_place(|| {
            checkpoints.read(topics, partitions, cfg.worker.read_timeout)
        })?;
        partitions
            .iter()
            .zip(pairs)
            .map(|(&partition, pair)| {
                let r = restored.remove(&partition).unwrap_or_default();
                Ok(Opened {
                    partition,
                    pair: pair?,
                    resumes: r.resumes,
                    rollups: r.rollups,
                })
            })
            .collect()
    }

    async fn commit<S: Source>(
        &self,
        pair: &mut PairSink,
        cycle: &Cycle,
        offsets: &[(TopicPartition, i64)],
        source: &S,
    ) -> Result<(), WorkerError> {
        let mut tpl = TopicPartitionList::new();
        for &((side, p), offset) in offsets {
            tpl.add_partition_offset(source.topic(side), p, Offset::Offset(offset))?;
        }
        let group = match source.membership() {
            Some(Membership::Kafka(g)) => Some(g),
            _ => None,
        };
        pair.commit(cycle, &self.checkpoints, &tpl, group.as_ref(), || {
            source
                .commit(offsets)
                .map_err(|e| SinkError::Commit(e.to_string()))
        })
        .await?;
        Ok(())
    }
}

/// `transactional.id` of partition `p`'s producer.
pub fn transactional_id(cfg: &Config, partition: i32) -> String {
    format!(
        "{}.{}.{}",
        cfg.kafka.group_id, cfg.topics.requests, partition
    )
}

impl PairSink {
    /// Create (and with exactly-once, initialise: blocking, call it off the
    /// async threads) the producer of `partition`.
    pub fn new(cfg: &Config, partition: i32, checkpoints: &Checkpoints) -> Result<Self, SinkError> {
        let transactional = cfg.worker.delivery == Delivery::ExactlyOnce;
        let mut cc = cfg.producer_config();
        cc.set(
            "message.timeout.ms",
            cfg.worker.produce_timeout.as_millis().to_string(),
        );
        if !cfg.producer.contains_key("linger.ms") && !cfg.librdkafka.contains_key("linger.ms") {
            cc.set("linger.ms", "5");
        }
        if transactional {
            cc.set("transactional.id", transactional_id(cfg, partition));
        }
        let producer: FutureProducer = cc.create().map_err(SinkError::Client)?;
        if transactional {
            producer
                .init_transactions(cfg.worker.produce_timeout)
                .map_err(|source| SinkError::Transaction { partition, source })?;
        }
        // Every topic's metadata, not the scores topic's: naming it would
        // make a broker that auto-creates topics create it here.
        let md = producer
            .client()
            .fetch_metadata(None, cfg.worker.produce_timeout)
            .ok();
        let partitions_of = |topic: &str| {
            md.as_ref()
                .map(|md| crate::topics::partition_count(md, topic) as i32)
                .filter(|n| *n > 0)
        };
        let scores_partitions = partitions_of(&cfg.topics.scores);
        let features = if cfg.clusters.enabled {
            let missing = |topic: &str| SinkError::MissingTopic {
                topic: topic.to_string(),
            };
            Some(FeaturesOut {
                topic: cfg.topics.features.clone(),
                partitions: partitions_of(&cfg.topics.features)
                    .ok_or_else(|| missing(&cfg.topics.features))?,
                group: cfg.kafka.group_id.clone(),
                upstream_partitions: partitions_of(&cfg.topics.requests)
                    .ok_or_else(|| missing(&cfg.topics.requests))?,
            })
        } else {
            None
        };
        Ok(PairSink {
            producer,
            scores_partitions,
            transactional,
            partition,
            scores_topic: cfg.topics.scores.clone(),
            dlq_topic: cfg.topics.dlq.clone(),
            requests_topic: cfg.topics.requests.clone(),
            checkpoints_topic: checkpoints.topic.clone(),
            checkpoint_partition: checkpoints.partition_for(partition),
            timeout: cfg.worker.produce_timeout,
            worker: worker_id(),
            features,
        })
    }

    /// Produce `cycle` and commit it with the input `offsets`: in one
    /// transaction (exactly-once), or acknowledged before `commit_offsets`
    /// runs (at-least-once). On error nothing of the cycle is committed
    /// (exactly-once) and the caller must stop using this partition.
    async fn commit(
        &self,
        cycle: &Cycle,
        checkpoints: &Checkpoints,
        offsets: &TopicPartitionList,
        group: Option<&ConsumerGroupMetadata>,
        commit_offsets: impl FnOnce() -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        let partition = self.partition;
        let txn = |source| SinkError::Transaction { partition, source };
        if self.transactional {
            self.producer.begin_transaction().map_err(txn)?;
        }
        let sent = self.send(cycle, checkpoints).await;
        if self.transactional {
            let group = group.ok_or(SinkError::NoGroupMetadata)?;
            let finished = sent.and_then(|()| {
                tokio::task::block_in_place(|| {
                    self.producer
                        .send_offsets_to_transaction(offsets, group, self.timeout)?;
                    self.producer.commit_transaction(self.timeout)
                })
                .map_err(txn)
            });
            if let Err(e) = finished {
                // Leave nothing open behind: a dangling transaction would
                // hold read_committed consumers back until it times out.
                let _ =
                    tokio::task::block_in_place(|| self.producer.abort_transaction(self.timeout));
                crate::telemetry::transaction_aborted();
                return Err(e);
            }
            Ok(())
        } else {
            sent?;
            commit_offsets()
        }
    }

    /// Produce every record of `cycle` and wait for the acknowledgements.
    async fn send(&self, cycle: &Cycle, checkpoints: &Checkpoints) -> Result<(), SinkError> {
        let processed_at = now_ms().to_string();
        let mut payloads = Vec::with_capacity(cycle.scores.len());
        for s in &cycle.scores {
            payloads.push(encode_score(s)?);
        }
        let mut deliveries = Vec::new();
        for (s, payload) in cycle.scores.iter().zip(&payloads) {
            let headers = headers(&[
                (HEADER_PROCESSED_AT, &processed_at),
                (HEADER_WORKER, &self.worker),
            ]);
            let key = score_key(s);
            let mut record = FutureRecord::to(&self.scores_topic)
                .key(key.as_str())
                .payload(payload.as_slice())
                .headers(headers);
            if let Some(n) = self.scores_partitions {
                record = record.partition(partition_of(s.account_id.as_bytes(), n));
            }
            deliveries.push((&self.scores_topic, self.enqueue(record).await?));
        }
        for d in &cycle.dlq {
            let partition = d.msg.partition.to_string();
            let offset = d.msg.offset.to_string();
            let timestamp = d
                .msg
                .timestamp_ms
                .map(|t| t.to_string())
                .unwrap_or_default();
            let headers = headers(&[
                (HEADER_ERROR_KIND, d.kind.as_str()),
                (HEADER_PROCESSED_AT, &processed_at),
                (HEADER_WORKER, &self.worker),
                (HEADER_ERROR_MESSAGE, &d.detail),
                (HEADER_SOURCE_TOPIC, &d.source_topic),
                (HEADER_SOURCE_PARTITION, &partition),
                (HEADER_SOURCE_OFFSET, &offset),
                (HEADER_SOURCE_TIMESTAMP, &timestamp),
            ]);
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.dlq_topic).headers(headers);
            if let Some(k) = d.msg.key.as_deref() {
                record = record.key(k);
            }
            if let Some(p) = d.msg.payload.as_deref() {
                record = record.payload(p);
            }
            deliveries.push((&self.dlq_topic, self.enqueue(record).await?));
        }
        if let Some(f) = &self.features {
            self.send_features(f, cycle, &mut deliveries).await?;
        }
        await_all(deliveries).await?;
        // The checkpoint goes last, once every score and DLQ record was
        // acknowledged: a broker that shows aborted records (see
        // integration-tests/tests/broker_behaviour.rs) then never shows a
        // checkpoint without the records it vouches for.
        // Held roll-up rows precede the checkpoints that count them.
        let mut values: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for r in &cycle.rollups {
            let key = checkpoints.rollup_key(&self.requests_topic, self.partition, &r.job, r.end);
            let bytes = match &r.rows {
                Some(rows) => Some(encode_rows(rows)?),
                None => None,
            };
            values.push((key, bytes));
        }
        values.extend(cycle.checkpoints.iter().map(|(topic, r)| {
            (
                checkpoints.key(topic, self.partition),
                Some(r.encode().into_bytes()),
            )
        }));
        let mut deliveries = Vec::new();
        for (k, v) in &values {
            let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.checkpoints_topic)
                .partition(self.checkpoint_partition)
                .key(k.as_str());
            if let Some(v) = v {
                record = record.payload(v.as_slice());
            }
            deliveries.push((&self.checkpoints_topic, self.enqueue(record).await?));
        }
        await_all(deliveries).await
    }

    /// Member rows keyed (and partitioned) by cluster id, then a mark to
    /// every partition: a partition's mark follows this cycle's rows there.
    async fn send_features<'a>(
        &'a self,
        f: &'a FeaturesOut,
        cycle: &Cycle,
        deliveries: &mut Vec<(&'a String, DeliveryFuture)>,
    ) -> Result<(), SinkError> {
        use crate::cluster::{encode_feature, FeatureRecord};
        let Some((through, final_)) = cycle.mark else {
            return Ok(());
        };
        let record = |member| FeatureRecord {
            group: f.group.clone(),
            upstream_partition: self.partition,
            upstream_partitions: f.upstream_partitions,
            through,
            final_,
            member,
        };
        for m in &cycle.members {
            let key = m.cluster_id();
            let payload = encode_feature(&record(Some(m.clone())))?;
            let r = FutureRecord::to(&f.topic)
                .key(key.as_str())
                .payload(payload.as_slice())
                .partition(partition_of(key.as_bytes(), f.partitions));
            deliveries.push((&f.topic, self.enqueue(r).await?));
        }
        let mark = encode_feature(&record(None))?;
        for q in 0..f.partitions {
            let r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&f.topic)
                .payload(mark.as_slice())
                .partition(q);
            deliveries.push((&f.topic, self.enqueue(r).await?));
        }
        Ok(())
    }

    /// Queue one record, waiting for room when the local queue is full.
    async fn enqueue<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
    ) -> Result<DeliveryFuture, SinkError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let mut record = record;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((source, r)) => {
                    return Err(SinkError::Produce {
                        topic: r.topic.to_string(),
                        source,
                    })
                }
            }
        }
    }
}

/// The same encoding through `apache_avro`'s generic values: the oracle
/// the direct encoder is tested against.
#[cfg(test)]
pub(crate) fn encode_score_value(s: &RiskScore) -> Result<Vec<u8>, apache_avro::Error> {
    use crate::schemas::encode_framed;
    use apache_avro::types::Value;
    let schema = &SchemaSet::builtin().risk_score;
    let reasons = s
        .reasons
        .iter()
        .map(|r| {
            Value::Record(vec![
                ("feature".into(), Value::String(r.feature.clone())),
                ("value".into(), Value::Double(r.value)),
                ("contribution".into(), Value::Double(r.contribution)),
            ])
        })
        .collect();
    let features = s
        .features
        .iter()
        .map(|(name, v)| {
            let value = match v {
                Some(x) => Value::Union(1, Box::new(Value::Double(*x))),
                None => Value::Union(0, Box::new(Value::Null)),
            };
            Value::Record(vec![
                ("name".into(), Value::String(name.clone())),
                ("value".into(), value),
            ])
        })
        .collect();
    let value = Value::Record(vec![
        ("account_id".into(), Value::String(s.account_id.clone())),
        (
            "window_start".into(),
            Value::TimestampMillis(s.window_start),
        ),
        ("window_end".into(), Value::TimestampMillis(s.window_end)),
        ("score".into(), Value::Double(s.score)),
        (
            "level".into(),
            Value::Enum(s.level.index(), s.level.as_str().into()),
        ),
        ("reasons".into(), Value::Array(reasons)),
        ("features".into(), Value::Array(features)),
        (
            "model_version".into(),
            Value::String(s.model_version.clone()),
        ),
        ("event_count".into(), Value::Long(s.event_count)),
        ("response_count".into(), Value::Long(s.response_count)),
        ("revision".into(), Value::Int(s.revision)),
        (
            "cluster_id".into(),
            match &s.cluster_id {
                Some(c) => Value::Union(1, Box::new(Value::String(c.clone()))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        ),
    ]);
    encode_framed(schema, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{Level, Reason};
    use apache_avro::types::Value;

    #[test]
    fn score_encodes_against_the_published_schema() {
        let s = RiskScore {
            account_id: "acct-1".into(),
            window_start: 0,
            window_end: 600_000,
            score: 0.75,
            level: Level::High,
            reasons: vec![Reason {
                feature: "cot_elicitation_share".into(),
                value: 0.9,
                contribution: 0.3,
            }],
            features: vec![("a".into(), Some(1.0)), ("b".into(), None)],
            model_version: "m".into(),
            event_count: 12,
            response_count: 11,
            revision: 0,
            cluster_id: None,
        };
        let bytes = encode_score(&s).unwrap();
        let set = SchemaSet::builtin();
        let (id, body) = crate::schemas::unframe(&bytes).unwrap();
        assert_eq!(id, set.risk_score.id);
        let v = apache_avro::from_avro_datum(&set.risk_score.avro, &mut &body[..], None).unwrap();
        let Value::Record(fields) = v else { panic!() };
        assert_eq!(fields[4].1, Value::Enum(2, "high".into()));
        // Same score, same bytes.
        assert_eq!(encode_score(&s).unwrap(), bytes);
    }

    #[test]
    fn scores_encode_to_the_bytes_apache_avro_writes() {
        use crate::score::{Level, Reason, RiskScore};
        let base = RiskScore {
            account_id:
                "acct_ünïcode_and_a_name_longer_than_sixty_three_bytes_to_need_two_length_bytes"
                    .into(),
            window_start: 1_793_577_600_000,
            window_end: 1_793_578_200_000,
            score: 0.612_345_678,
            level: Level::High,
            reasons: vec![
                Reason {
                    feature: "cot_hours_6h".into(),
                    value: 5.0,
                    contribution: 0.15,
                },
                Reason {
                    feature: "cluster.members".into(),
                    value: -3.5,
                    contribution: 1e-12,
                },
            ],
            features: (0..70)
                .map(|i| (format!("f{i:02}"), (i % 3 != 0).then_some(i as f64 * -1.25)))
                .collect(),
            model_version: "heuristic-2026.12.1+jobs.833f5604".into(),
            event_count: 300,
            response_count: -1,
            revision: 2,
            cluster_id: Some("ip_prefix:203.0.113.0/24".into()),
        };
        let empty = RiskScore {
            account_id: String::new(),
            window_start: -1,
            window_end: 0,
            score: 0.0,
            level: Level::Low,
            reasons: vec![],
            features: vec![],
            model_version: String::new(),
            event_count: i64::MAX,
            response_count: i64::MIN,
            revision: i32::MIN,
            cluster_id: None,
        };
        for s in [base, empty] {
            assert_eq!(
                encode_score(&s).unwrap(),
                encode_score_value(&s).unwrap(),
                "{s:?}"
            );
        }
    }
}
