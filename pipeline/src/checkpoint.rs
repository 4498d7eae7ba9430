//! Emission checkpoints: for each input partition, how far windows were
//! emitted when its offset was last committed.
//!
//! A committed offset alone cannot say which windows were emitted: the oldest
//! event an open window still holds may sit before late stragglers of windows
//! that were already scored, and a new reader would otherwise gather those
//! stragglers into a partial window and emit it again. Kafka's place for this
//! is the commit's metadata string, but the local test broker drops it, so
//! the worker writes a record per partition to a compacted topic, keyed by
//! group, topic and partition, and waits for the acknowledgement before it
//! commits. A checkpoint ahead of the commit is harmless (it only says what
//! was emitted); one behind it cannot happen, since a failed checkpoint write
//! stops the commit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::source::EofQuietContext;
use crate::window::Resume;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint topic {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("checkpoint topic {0} does not exist (create it with `distill-watch topics create`)")]
    Missing(String),
    #[error("checkpoint topic {topic} was not read to its end within {timeout:?}")]
    Timeout { topic: String, timeout: Duration },
}

/// Writes and reads checkpoints of one consumer group.
pub struct Checkpoints {
    producer: FutureProducer,
    topic: String,
    group: String,
    timeout: Duration,
}

fn key(group: &str, topic: &str, partition: i32) -> String {
    // Tabs cannot appear in topic names and are unlikely in group ids.
    format!("{group}\t{topic}\t{partition}")
}

impl Checkpoints {
    pub fn new(cfg: &Config, producer: FutureProducer) -> Self {
        Checkpoints {
            producer,
            topic: cfg.topics.checkpoints.clone(),
            group: cfg.kafka.group_id.clone(),
            timeout: cfg.worker.produce_timeout,
        }
    }

    fn err(&self, source: KafkaError) -> CheckpointError {
        CheckpointError::Kafka {
            topic: self.topic.clone(),
            source,
        }
    }

    /// Write one checkpoint per (topic, partition) and wait for all acks.
    pub async fn write(&self, entries: &[(&str, i32, Resume)]) -> Result<(), CheckpointError> {
        let keys: Vec<String> = entries
            .iter()
            .map(|(t, p, _)| key(&self.group, t, *p))
            .collect();
        let values: Vec<String> = entries.iter().map(|(_, _, r)| r.encode()).collect();
        let sends = keys.iter().zip(&values).map(|(k, v)| {
            let record = FutureRecord::to(&self.topic)
                .key(k.as_str())
                .payload(v.as_str());
            self.producer.send(record, Timeout::After(self.timeout))
        });
        for r in join_all(sends).await {
            r.map_err(|(e, _)| self.err(e))?;
        }
        Ok(())
    }

    /// The newest checkpoint of every partition of `topics` this group wrote.
    /// Reads the whole (compacted) topic to its end.
    pub fn read(
        &self,
        cfg: &Config,
        topics: &[&str],
    ) -> Result<BTreeMap<(String, i32), Resume>, CheckpointError> {
        let mut cc = cfg.consumer_config();
        cc.set("group.id", format!("{}-checkpoint-reader", self.group))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        let consumer: BaseConsumer<EofQuietContext> = cc
            .create_with_context(EofQuietContext)
            .map_err(|e| self.err(e))?;
        let md = consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .map_err(|e| self.err(e))?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if parts.is_empty() {
            return Err(CheckpointError::Missing(self.topic.clone()));
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &parts {
            tpl.add_partition_offset(&self.topic, p, Offset::Beginning)
                .map_err(|e| self.err(e))?;
        }
        consumer.assign(&tpl).map_err(|e| self.err(e))?;
        let prefix = format!("{}\t", self.group);
        let mut out = BTreeMap::new();
        let mut pending: std::collections::BTreeSet<i32> = parts.into_iter().collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        // End of input is the end-of-partition event, not ListOffsets (which
        // the local broker under-reports).
        while !pending.is_empty() {
            if Instant::now() > deadline {
                return Err(CheckpointError::Timeout {
                    topic: self.topic.clone(),
                    timeout: Duration::from_secs(60),
                });
            }
            let m = match consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    pending.remove(&p);
                    continue;
                }
                Some(Err(e)) => return Err(self.err(e)),
                Some(Ok(m)) => m,
            };
            pending.insert(m.partition());
            let (Some(k), Some(v)) = (m.key(), m.payload()) else {
                continue;
            };
            let (Ok(k), Ok(v)) = (std::str::from_utf8(k), std::str::from_utf8(v)) else {
                continue;
            };
            let Some(rest) = k.strip_prefix(&prefix) else {
                continue;
            };
            let Some((topic, partition)) = rest.rsplit_once('\t') else {
                continue;
            };
            if !topics.contains(&topic) {
                continue;
            }
            let (Ok(partition), Some(resume)) = (partition.parse::<i32>(), Resume::parse(v)) else {
                tracing::warn!(key = k, value = v, "unreadable checkpoint ignored");
                continue;
            };
            // Later records win: the topic is read in order.
            out.insert((topic.to_string(), partition), resume);
        }
        Ok(out)
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
