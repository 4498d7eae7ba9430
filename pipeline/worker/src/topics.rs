//! Topic creation with the standard Kafka CreateTopics API.
//!
//! The local broker does not auto-create topics, and the pipeline relies on
//! partition counts (requests and responses are co-partitioned), so topics are
//! created explicitly with [`create_topics`], which also waits until every
//! topic is visible in metadata with all its partitions led.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, info};

/// How long [`create_topics`] waits for the topics to show up in metadata.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions (> 0).
    pub partitions: i32,
    /// `cleanup.policy=compact` when true, the broker default (delete) otherwise.
    pub compacted: bool,
}

impl TopicSpec {
    /// A non-compacted topic.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            compacted: false,
        }
    }

    /// The same topic with `cleanup.policy=compact`.
    pub fn compacted(self) -> Self {
        TopicSpec {
            compacted: true,
            ..self
        }
    }
}

/// Errors from [`create_topics`].
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// A spec is unusable (empty name, partitions < 1, duplicate name).
    #[error("invalid topic spec {name:?}: {reason}")]
    InvalidSpec {
        /// Topic name.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// The admin client could not be created from the configuration.
    #[error("cannot create Kafka admin client: {0}")]
    Client(#[source] KafkaError),

    /// The CreateTopics request as a whole failed.
    #[error("CreateTopics request failed: {0}")]
    Request(#[source] KafkaError),

    /// The broker refused to create a topic.
    #[error("cannot create topic {name}: {code}")]
    Create {
        /// Topic name.
        name: String,
        /// Error code the broker returned.
        code: RDKafkaErrorCode,
    },

    /// A topic that already existed has a different partition count.
    #[error("topic {name} already exists with {actual} partitions, expected {expected}")]
    PartitionMismatch {
        /// Topic name.
        name: String,
        /// Partitions asked for.
        expected: i32,
        /// Partitions the existing topic has.
        actual: i32,
    },

    /// Metadata did not show every topic with all partitions in time.
    #[error("topics not complete in metadata after {waited:?}: {pending}")]
    NotVisible {
        /// How long we waited.
        waited: Duration,
        /// The topics still missing, with what was seen last.
        pending: String,
    },
}

/// Partitions of `topic` in `md` (0 when it is missing or in error).
pub fn partition_count(md: &rdkafka::metadata::Metadata, topic: &str) -> usize {
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len())
}

/// [`partition_count`] as a partition number to place records with: `None`
/// when the topic is missing, in error or without partitions.
pub fn partitions(md: &rdkafka::metadata::Metadata, topic: &str) -> Option<i32> {
    match partition_count(md, topic) {
        0 => None,
        n => Some(n as i32),
    }
}

/// Creates `specs` (treating "already exists" as success when the partition
/// count matches), then polls metadata until every topic is there with all its
/// partitions having a leader.
///
/// Replication factor is the broker default (`-1`, KIP-464).
pub async fn create_topics(
    bootstrap_config: &ClientConfig,
    specs: &[TopicSpec],
) -> Result<(), TopicError> {
    validate(specs)?;
    if specs.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        bootstrap_config.create().map_err(TopicError::Client)?;
    let admin = Arc::new(admin);

    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(-1));
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(20)));
    let results = admin
        .create_topics(&new_topics, &opts)
        .await
        .map_err(TopicError::Request)?;

    let mut existed = Vec::new();
    for result in results {
        match result {
            Ok(name) => info!(topic = %name, "created topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                debug!(topic = %name, "topic already exists");
                existed.push(name);
            }
            Err((name, code)) => return Err(TopicError::Create { name, code }),
        }
    }

    wait_for_metadata(admin, specs, &existed, METADATA_TIMEOUT).await
}

fn validate(specs: &[TopicSpec]) -> Result<(), TopicError> {
    let mut seen = BTreeMap::new();
    for s in specs {
        let invalid = |reason: &str| TopicError::InvalidSpec {
            name: s.name.clone(),
            reason: reason.into(),
        };
        if s.name.is_empty() {
            return Err(invalid("empty name"));
        }
        if s.partitions < 1 {
            return Err(invalid("partitions must be at least 1"));
        }
        if seen.insert(s.name.as_str(), ()).is_some() {
            return Err(invalid("listed twice"));
        }
    }
    Ok(())
}

/// What metadata currently says about one topic.
#[derive(Debug)]
enum TopicState {
    Complete,
    Incomplete(String),
    WrongPartitionCount(i32),
}

async fn wait_for_metadata(
    admin: Arc<AdminClient<DefaultClientContext>>,
    specs: &[TopicSpec],
    existed: &[String],
    timeout: Duration,
) -> Result<(), TopicError> {
    let started = Instant::now();
    let mut pending: Vec<TopicSpec> = specs.to_vec();
    let mut last_seen: BTreeMap<String, String> = BTreeMap::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut still = Vec::new();
        for spec in pending {
            let state = topic_state(Arc::clone(&admin), spec.clone()).await;
            match state {
                TopicState::Complete => {
                    last_seen.remove(&spec.name);
                }
                TopicState::WrongPartitionCount(actual) if existed.contains(&spec.name) => {
                    return Err(TopicError::PartitionMismatch {
                        name: spec.name,
                        expected: spec.partitions,
                        actual,
                    });
                }
                TopicState::WrongPartitionCount(actual) => {
                    // Just created: metadata may still be catching up.
                    last_seen.insert(spec.name.clone(), format!("{actual} partitions"));
                    still.push(spec);
                }
                TopicState::Incomplete(why) => {
                    last_seen.insert(spec.name.clone(), why);
                    still.push(spec);
                }
            }
        }
        if still.is_empty() {
            debug!(waited = ?started.elapsed(), "all topics visible in metadata");
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let pending = still
                .iter()
                .map(|s| {
                    let seen = last_seen.get(&s.name).map(String::as_str).unwrap_or("?");
                    format!("{} (want {} partitions; saw {seen})", s.name, s.partitions)
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(TopicError::NotVisible {
                waited: started.elapsed(),
                pending,
            });
        }
        pending = still;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// Fetches metadata for one topic (on a blocking thread: librdkafka's metadata
/// call blocks) and classifies it.
async fn topic_state(admin: Arc<AdminClient<DefaultClientContext>>, spec: TopicSpec) -> TopicState {
    let fetched = tokio::task::spawn_blocking(move || {
        let md = admin
            .inner()
            .fetch_metadata(Some(&spec.name), Duration::from_secs(5))?;
        let Some(topic) = md.topics().iter().find(|t| t.name() == spec.name) else {
            return Ok(TopicState::Incomplete("not in metadata".into()));
        };
        if let Some(err) = topic.error() {
            return Ok(TopicState::Incomplete(format!(
                "{:?}",
                RDKafkaErrorCode::from(err)
            )));
        }
        let partitions = topic.partitions();
        let count = i32::try_from(partitions.len()).unwrap_or(i32::MAX);
        if count != spec.partitions {
            return Ok(TopicState::WrongPartitionCount(count));
        }
        if let Some(p) = partitions
            .iter()
            .find(|p| p.error().is_some() || p.leader() < 0)
        {
            return Ok(TopicState::Incomplete(format!(
                "partition {} has leader {} error {:?}",
                p.id(),
                p.leader(),
                p.error().map(RDKafkaErrorCode::from)
            )));
        }
        Ok::<_, KafkaError>(TopicState::Complete)
    })
    .await;
    match fetched {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => TopicState::Incomplete(format!("metadata request failed: {e}")),
        Err(e) => TopicState::Incomplete(format!("metadata task failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_bad_specs() {
        assert!(validate(&[TopicSpec::new("", 1)]).is_err());
        assert!(validate(&[TopicSpec::new("a", 0)]).is_err());
        assert!(validate(&[TopicSpec::new("a", 1), TopicSpec::new("a", 2)]).is_err());
        assert!(validate(&[TopicSpec::new("a", 1), TopicSpec::new("b", 2).compacted()]).is_ok());
    }
}
