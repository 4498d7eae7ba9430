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
use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use crate::config::Config;
use crate::source::{read_to_end, SourceError};
use crate::window::Resume;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("writing to checkpoint topic {topic}: {source}")]
    Write {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("reading checkpoints: {0}")]
    Read(#[from] SourceError),
}

/// Writes and reads checkpoints of one consumer group.
pub struct Checkpoints {
    producer: FutureProducer,
    /// Consumer settings for reading the topic back.
    reader: ClientConfig,
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
        let mut reader = cfg.consumer_config();
        reader.set(
            "group.id",
            format!("{}-checkpoint-reader", cfg.kafka.group_id),
        );
        Checkpoints {
            producer,
            reader,
            topic: cfg.topics.checkpoints.clone(),
            group: cfg.kafka.group_id.clone(),
            timeout: cfg.worker.produce_timeout,
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
            r.map_err(|(source, _)| CheckpointError::Write {
                topic: self.topic.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The newest checkpoint of every partition of `topics` this group wrote.
    /// Reads the whole (compacted) topic to its end.
    pub fn read(
        &self,
        topics: &[&str],
    ) -> Result<BTreeMap<(String, i32), Resume>, CheckpointError> {
        let prefix = format!("{}\t", self.group);
        let mut out = BTreeMap::new();
        // Records come in log order, so later checkpoints replace earlier ones.
        for m in read_to_end(&self.reader, &self.topic, Duration::from_secs(60))? {
            let (Some(k), Some(v)) = (m.key(), m.payload()) else {
                continue;
            };
            let (Ok(k), Ok(v)) = (std::str::from_utf8(k), std::str::from_utf8(v)) else {
                continue;
            };
            let Some((topic, partition)) = k
                .strip_prefix(&prefix)
                .and_then(|rest| rest.rsplit_once('\t'))
            else {
                continue;
            };
            if !topics.contains(&topic) {
                continue;
            }
            let (Ok(partition), Some(resume)) = (partition.parse::<i32>(), Resume::parse(v)) else {
                tracing::warn!(key = k, value = v, "unreadable checkpoint ignored");
                continue;
            };
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
