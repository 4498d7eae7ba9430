//! Emission checkpoints: for each input partition, how far windows were
//! emitted, where to re-read from and the watermark there, as of its last
//! commit.
//!
//! A committed offset alone cannot say which windows were emitted: the oldest
//! event an open window still holds may sit before late stragglers of windows
//! that were already scored, and a new reader would otherwise gather those
//! stragglers into a partial window and emit it again. Kafka's place for this
//! is the commit's metadata string, but the local test broker drops it, so
//! the worker writes a record per input partition to a compacted topic, keyed
//! by group, topic and partition, in the same transaction as the scores and
//! the offsets (exactly-once), or acknowledged before the offsets are
//! committed (at-least-once). The checkpoint's offset is the one the next
//! owner trusts; the group's committed offset only decides where its consumer
//! starts reading (rows before the checkpoint's offset are skipped).
//!
//! Growth: input partition `p` writes to partition `p mod n` of the topic,
//! two records per commit of the pair, and commits happen when windows close
//! (or DLQ records wait, at most every `commit_interval`). Kafka's compaction
//! keeps the newest per key; where a broker does not compact, a new owner
//! still reads only the tail of its partition, from the end backwards until
//! it has found its newest checkpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::Config;
use crate::rollup::{decode_rows, RollupRecord};
use crate::source::{cached_watermarks, EofQuietContext, SourceError};
use crate::window::{Resume, Side};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading checkpoints: {0}")]
    Read(#[from] SourceError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{topic} partitions {checkpoint_partitions:?} were not read to their end within {timeout:?}")]
    Timeout {
        topic: String,
        checkpoint_partitions: Vec<i32>,
        timeout: Duration,
    },
    #[error("topic {topic} has {have} partitions; with exactly-once delivery it needs at least as many as the input topics ({need}), so that no partition's checkpoints wait behind another partition's open transaction. Point [topics] checkpoints at a topic with enough partitions (a new one, or a missing one the worker creates, together with a new [kafka] group_id: checkpoints do not move between partitions), or set [worker] delivery = \"at_least_once\"")]
    TooFewPartitions {
        topic: String,
        have: usize,
        need: usize,
    },
}

/// Writes (keys, partitions, values) and reads checkpoints of one consumer
/// group.
pub struct Checkpoints {
    reader: ClientConfig,
    pub topic: String,
    pub group: String,
    partitions: i32,
}

fn key(group: &str, topic: &str, partition: i32) -> String {
    // Tabs cannot appear in topic names and are unlikely in group ids.
    format!("{group}\t{topic}\t{partition}")
}

const ROLLUP_TAG: &str = "rollup";

/// What a new owner of a partition pair finds in the checkpoint topic.
#[derive(Debug, Default)]
pub struct Restored {
    /// The newest checkpoint of each side.
    pub resumes: BTreeMap<Side, Resume>,
    /// The roll-ups' held rows as of that checkpoint.
    pub rollups: Vec<RollupRecord>,
}

/// How many records from the end the first look reads; each further look
/// reads eight times as many.
const FIRST_TAIL: i64 = 64;

impl Checkpoints {
    /// `partitions`: the checkpoint topic's partition count.
    pub fn new(cfg: &Config, partitions: usize) -> Self {
        let mut reader = cfg.consumer_config();
        reader
            .set(
                "group.id",
                format!("{}-checkpoint-reader", cfg.kafka.group_id),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest");
        Checkpoints {
            reader,
            topic: cfg.topics.checkpoints.clone(),
            group: cfg.kafka.group_id.clone(),
            partitions: partitions.max(1) as i32,
        }
    }

    pub fn key(&self, topic: &str, partition: i32) -> String {
        key(&self.group, topic, partition)
    }

    /// Key of the held rows of `job` for the window ending at `end`, of
    /// the pair whose requests topic is `topic`.
    pub fn rollup_key(&self, topic: &str, partition: i32, job: &str, end: i64) -> String {
        format!("{}\t{ROLLUP_TAG}\t{job}\t{end}", self.key(topic, partition))
    }

    /// The checkpoint topic's partition that input partition `p` writes to.
    pub fn partition_for(&self, p: i32) -> i32 {
        p.rem_euclid(self.partitions)
    }

    /// The newest checkpoint of each side of each input partition in
    /// `partitions` (`topics`: the requests and responses topic names), and
    /// the roll-ups' held rows it counts, read with one consumer from the
    /// end of their checkpoint partitions backwards. Blocking.
    pub fn read(
        &self,
        topics: [&str; 2],
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<BTreeMap<i32, Restored>, CheckpointError> {
        self.read_tail(topics, partitions, timeout, true)
    }

    /// [`read`](Self::read) without the held rows: only the checkpoints,
    /// so it reads no further back than the newest of them (for the
    /// group-done probe, which only asks whether rows are still held).
    pub fn read_resumes(
        &self,
        topics: [&str; 2],
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<BTreeMap<i32, BTreeMap<Side, Resume>>, CheckpointError> {
        Ok(self
            .read_tail(topics, partitions, timeout, false)?
            .into_iter()
            .map(|(p, r)| (p, r.resumes))
            .collect())
    }

    /// Key of another stage's checkpoint for partition `partition` of
    /// `topic` (the cluster stage keys its own by the features topic).
    pub fn stage_key(&self, topic: &str, partition: i32) -> String {
        key(&self.group, topic, partition)
    }

    /// The newest value of each key in `keys` (key → input partition,
    /// which decides the checkpoint partition), reading each checkpoint
    /// partition from its end backwards until every key is found or the
    /// log's start is reached. Keys never written are absent. Blocking.
    pub fn read_values(
        &self,
        keys: &BTreeMap<String, i32>,
        timeout: Duration,
    ) -> Result<BTreeMap<String, Vec<u8>>, CheckpointError> {
        let consumer: BaseConsumer<EofQuietContext> =
            self.reader.create_with_context(EofQuietContext)?;
        let started = Instant::now();
        let mut found: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut todo: BTreeMap<i32, i64> = keys
            .values()
            .map(|&p| (self.partition_for(p), FIRST_TAIL))
            .collect();
        while !todo.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (&cp, &tail) in &todo {
                tpl.add_partition_offset(&self.topic, cp, Offset::OffsetTail(tail))?;
            }
            consumer.assign(&tpl)?;
            let mut reading: BTreeSet<i32> = todo.keys().copied().collect();
            let mut first_offset: BTreeMap<i32, i64> = BTreeMap::new();
            let mut newest: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            while !reading.is_empty() {
                if started.elapsed() > timeout {
                    return Err(CheckpointError::Timeout {
                        topic: self.topic.clone(),
                        checkpoint_partitions: reading.into_iter().collect(),
                        timeout,
                    });
                }
                match consumer.poll(Duration::from_millis(100)) {
                    None => continue,
                    Some(Err(KafkaError::PartitionEOF(cp))) => {
                        reading.remove(&cp);
                    }
                    Some(Err(e)) => crate::connect::ride_out(e)?,
                    Some(Ok(m)) => {
                        first_offset.entry(m.partition()).or_insert(m.offset());
                        let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                            continue;
                        };
                        if let (true, Some(v)) = (keys.contains_key(k), m.payload()) {
                            newest.insert(k.to_string(), v.to_vec());
                        }
                    }
                }
            }
            for (k, v) in newest {
                found.entry(k).or_insert(v);
            }
            let mut next = BTreeMap::new();
            for (&cp, &tail) in &todo {
                let complete = keys
                    .iter()
                    .filter(|(_, &p)| self.partition_for(p) == cp)
                    .all(|(k, _)| found.contains_key(k));
                let marks = cached_watermarks(consumer.client(), &self.topic, cp);
                let covered = covered(first_offset.get(&cp).copied(), marks, tail);
                if !complete && !covered {
                    next.insert(cp, next_tail(tail, marks));
                }
            }
            todo = next;
        }
        Ok(found)
    }

    fn read_tail(
        &self,
        topics: [&str; 2],
        partitions: &[i32],
        timeout: Duration,
        with_rollups: bool,
    ) -> Result<BTreeMap<i32, Restored>, CheckpointError> {
        // Which (input partition, side) a key names.
        let mut keys: BTreeMap<String, (i32, Side)> = BTreeMap::new();
        // Which input partition a roll-up key prefix names.
        let mut rollup_prefixes: BTreeMap<String, i32> = BTreeMap::new();
        for &p in partitions {
            keys.insert(self.key(topics[0], p), (p, Side::Requests));
            keys.insert(self.key(topics[1], p), (p, Side::Responses));
            if with_rollups {
                rollup_prefixes.insert(format!("{}\t{ROLLUP_TAG}\t", self.key(topics[0], p)), p);
            }
        }
        let consumer: BaseConsumer<EofQuietContext> =
            self.reader.create_with_context(EofQuietContext)?;
        let started = Instant::now();
        let mut found: BTreeMap<i32, BTreeMap<Side, Resume>> = BTreeMap::new();
        // Newest record per roll-up key: (partition, job, end) → bytes.
        let mut rollups: BTreeMap<(i32, String, i64), Option<Vec<u8>>> = BTreeMap::new();
        // Checkpoint partitions still to look further back in, with how far.
        let mut todo: BTreeMap<i32, i64> = partitions
            .iter()
            .map(|&p| (self.partition_for(p), FIRST_TAIL))
            .collect();
        while !todo.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (&cp, &tail) in &todo {
                tpl.add_partition_offset(&self.topic, cp, Offset::OffsetTail(tail))?;
            }
            consumer.assign(&tpl)?;
            let mut reading: BTreeSet<i32> = todo.keys().copied().collect();
            let mut first_offset: BTreeMap<i32, i64> = BTreeMap::new();
            // Records come in log order: the last one of a key is its newest.
            let mut newest: BTreeMap<(i32, Side), Resume> = BTreeMap::new();
            let mut newest_rollups: BTreeMap<(i32, String, i64), Option<Vec<u8>>> = BTreeMap::new();
            while !reading.is_empty() {
                if started.elapsed() > timeout {
                    return Err(CheckpointError::Timeout {
                        topic: self.topic.clone(),
                        checkpoint_partitions: reading.into_iter().collect(),
                        timeout,
                    });
                }
                match consumer.poll(Duration::from_millis(100)) {
                    None => continue,
                    Some(Err(KafkaError::PartitionEOF(cp))) => {
                        reading.remove(&cp);
                    }
                    Some(Err(e)) => crate::connect::ride_out(e)?,
                    Some(Ok(m)) => {
                        first_offset.entry(m.partition()).or_insert(m.offset());
                        let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                            continue;
                        };
                        if let Some(at) = parse_rollup_key(&rollup_prefixes, k) {
                            newest_rollups.insert(at, m.payload().map(<[u8]>::to_vec));
                            continue;
                        }
                        let Some(&at) = keys.get(k) else {
                            continue;
                        };
                        let Some(v) = m.payload() else { continue };
                        match std::str::from_utf8(v).ok().and_then(Resume::parse) {
                            Some(r) => {
                                newest.insert(at, r);
                            }
                            None => tracing::warn!(
                                topic = %self.topic,
                                offset = m.offset(),
                                "unreadable checkpoint ignored"
                            ),
                        }
                    }
                }
            }
            for ((p, side), r) in newest {
                // An earlier (further back) look never overrides a newer one.
                found.entry(p).or_default().entry(side).or_insert(r);
            }
            for (k, v) in newest_rollups {
                rollups.entry(k).or_insert(v);
            }
            let mut next = BTreeMap::new();
            for (&cp, &tail) in &todo {
                let complete = partitions
                    .iter()
                    .filter(|&&p| self.partition_for(p) == cp)
                    .all(|&p| {
                        let Some(f) = found.get(&p).filter(|f| f.len() == 2) else {
                            return false;
                        };
                        !with_rollups
                            || live_rollups(&rollups, p, f).count() as u64 >= held_count(f)
                    });
                // Did this look start at the beginning of the log?
                let marks = cached_watermarks(consumer.client(), &self.topic, cp);
                let covered = covered(first_offset.get(&cp).copied(), marks, tail);
                if !complete && !covered {
                    next.insert(cp, next_tail(tail, marks));
                }
            }
            todo = next;
        }
        let mut out = BTreeMap::new();
        for (p, resumes) in found {
            let mut restored = Restored::default();
            let live: Vec<(String, i64, Vec<u8>)> = live_rollups(&rollups, p, &resumes)
                .map(|(job, end, bytes)| (job.to_string(), end, bytes.to_vec()))
                .collect();
            if with_rollups && (live.len() as u64) < held_count(&resumes) {
                tracing::warn!(
                    partition = p,
                    found = live.len(),
                    expected = held_count(&resumes),
                    "the checkpoint topic lacks held roll-up rows (deleted?); roll-up windows that need them will be partial"
                );
            }
            for (job, end, bytes) in live {
                match decode_rows(&bytes) {
                    Ok(rows) => restored.rollups.push(RollupRecord {
                        job,
                        end,
                        rows: Some(rows),
                    }),
                    Err(e) => {
                        tracing::warn!(partition = p, job, end, error = %e, "unreadable held roll-up rows ignored")
                    }
                }
            }
            restored.resumes = resumes;
            out.insert(p, restored);
        }
        Ok(out)
    }
}

/// Did a look `tail` records back, whose first record read was `first`,
/// cover the partition from its start? Unknown watermarks count as covered.
fn covered(first: Option<i64>, watermarks: Option<(i64, i64)>, tail: i64) -> bool {
    match (first, watermarks) {
        // The look started at the log's start: what it did not find is not
        // there. (Its first record can lie past the start: aborted records
        // and markers are never seen.)
        (_, Some((low, high))) if high - tail <= low => true,
        (Some(first), Some((low, _))) => first <= low,
        (None, Some(_)) => false,
        (_, None) => true,
    }
}

/// The next, longer look back from the end of a checkpoint partition: eight
/// times the last, never past the partition's length (when known) nor past
/// what librdkafka can express. On a slow broker a look may see nothing and
/// be repeated until the read's timeout; it must not grow without bound (an
/// `OffsetTail` beyond about 2^63 overflows).
fn next_tail(tail: i64, watermarks: Option<(i64, i64)>) -> i64 {
    const MAX_TAIL: i64 = 1 << 48;
    let cap = watermarks.map_or(MAX_TAIL, |(low, high)| (high - low).clamp(1, MAX_TAIL));
    tail.saturating_mul(8).min(cap).max(tail.min(MAX_TAIL))
}

/// (input partition, job, window end) of a roll-up key of one of ours.
fn parse_rollup_key(prefixes: &BTreeMap<String, i32>, key: &str) -> Option<(i32, String, i64)> {
    let (prefix, p) = prefixes
        .iter()
        .find(|(pre, _)| key.starts_with(pre.as_str()))?;
    let (job, end) = key[prefix.len()..].split_once('\t')?;
    Some((*p, job.to_string(), end.parse().ok()?))
}

/// How many held roll-up entries the checkpoints of a partition count.
fn held_count(resumes: &BTreeMap<Side, Resume>) -> u64 {
    resumes.values().map(|r| r.rollups).max().unwrap_or(0)
}

/// The live held rows of partition `p` the checkpoints vouch for: newest
/// record not a tombstone, and for a boundary the checkpoint says was
/// processed (a later one can only come from an aborted cycle, which a
/// broker may show).
fn live_rollups<'a>(
    rollups: &'a BTreeMap<(i32, String, i64), Option<Vec<u8>>>,
    p: i32,
    resumes: &BTreeMap<Side, Resume>,
) -> impl Iterator<Item = (&'a str, i64, &'a [u8])> {
    let until = resumes
        .values()
        .map(|r| r.emitted_until)
        .min()
        .unwrap_or(i64::MIN);
    rollups
        .iter()
        .filter(move |((q, _, end), _)| *q == p && *end <= until)
        .filter_map(|((_, job, end), v)| Some((job.as_str(), *end, v.as_deref()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_look_back_grows_eightfold_up_to_the_partition_and_never_overflows() {
        assert_eq!(next_tail(100, None), 800);
        assert_eq!(next_tail(100, Some((0, 500))), 500);
        assert_eq!(next_tail(500, Some((0, 500))), 500);
        assert_eq!(
            next_tail(100, Some((40, 40))),
            100,
            "never shorter than the last look"
        );
        let mut tail = 1;
        for _ in 0..100 {
            tail = next_tail(tail, None);
            assert!(
                rdkafka::Offset::OffsetTail(tail).to_raw().is_some(),
                "{tail} is not an offset librdkafka can take"
            );
        }
    }

    #[test]
    fn keys_separate_group_topic_and_partition() {
        assert_eq!(key("g", "api.requests.v1", 3), "g\tapi.requests.v1\t3");
    }
}
