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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::Config;
use crate::source::{cached_watermarks, EofQuietContext, SourceError};
use crate::window::{Resume, Side};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading checkpoints: {0}")]
    Read(#[from] SourceError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("checkpoints of partition {partition} not found in {topic} partition {checkpoint_partition} within {timeout:?}")]
    Timeout {
        topic: String,
        partition: i32,
        checkpoint_partition: i32,
        timeout: Duration,
    },
    #[error("topic {topic} has {have} partitions; with exactly-once delivery it needs at least as many as the input topics ({need}), so that no partition's checkpoints wait behind another partition's open transaction")]
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
    group: String,
    partitions: i32,
}

fn key(group: &str, topic: &str, partition: i32) -> String {
    // Tabs cannot appear in topic names and are unlikely in group ids.
    format!("{group}\t{topic}\t{partition}")
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
            .set("isolation.level", "read_committed");
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

    /// The checkpoint topic's partition that input partition `p` writes to.
    pub fn partition_for(&self, p: i32) -> i32 {
        p.rem_euclid(self.partitions)
    }

    /// The newest checkpoint of each side of input partition `partition`
    /// (`topics`: the requests and responses topic names), read from the end
    /// of its checkpoint partition backwards. Blocking.
    pub fn read(
        &self,
        topics: [&str; 2],
        partition: i32,
        timeout: Duration,
    ) -> Result<BTreeMap<Side, Resume>, CheckpointError> {
        let keys = [Side::Requests, Side::Responses].map(|s| {
            let t = match s {
                Side::Requests => topics[0],
                Side::Responses => topics[1],
            };
            (s, self.key(t, partition))
        });
        let cp = self.partition_for(partition);
        let consumer: BaseConsumer<EofQuietContext> =
            self.reader.create_with_context(EofQuietContext)?;
        let started = Instant::now();
        let mut found: BTreeMap<Side, Resume> = BTreeMap::new();
        let mut tail = FIRST_TAIL;
        loop {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, cp, Offset::OffsetTail(tail))?;
            consumer.assign(&tpl)?;
            // Newest first wins: records come in log order, so keep the last.
            let mut newest: BTreeMap<Side, Resume> = BTreeMap::new();
            let mut first_offset = None;
            loop {
                if started.elapsed() > timeout {
                    return Err(CheckpointError::Timeout {
                        topic: self.topic.clone(),
                        partition,
                        checkpoint_partition: cp,
                        timeout,
                    });
                }
                match consumer.poll(Duration::from_millis(100)) {
                    None => continue,
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(m)) => {
                        first_offset.get_or_insert(m.offset());
                        let (Some(k), Some(v)) = (m.key(), m.payload()) else {
                            continue;
                        };
                        let Some(&(side, _)) = keys.iter().find(|(_, key)| key.as_bytes() == k)
                        else {
                            continue;
                        };
                        match std::str::from_utf8(v).ok().and_then(Resume::parse) {
                            Some(r) => {
                                newest.insert(side, r);
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
            for (side, r) in newest {
                found.entry(side).or_insert(r);
            }
            if found.len() == 2 {
                break;
            }
            // Did this look start at the beginning of the log?
            let low = cached_watermarks(consumer.client(), &self.topic, cp).map(|(l, _)| l);
            let covered = match (first_offset, low) {
                (Some(first), Some(low)) => first <= low,
                // Nothing read: the partition is empty from the tail on;
                // when its log start is the tail start, it is all there is.
                (None, Some(low)) => cached_watermarks(consumer.client(), &self.topic, cp)
                    .is_some_and(|(_, high)| high - tail <= low),
                _ => true,
            };
            if covered {
                break;
            }
            tail = tail.saturating_mul(8);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_group_topic_and_partition() {
        assert_eq!(key("g", "api.requests.v1", 3), "g\tapi.requests.v1\t3");
    }
}
