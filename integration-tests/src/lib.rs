//! Harness shared by every integration test: one Kafka-protocol broker per test
//! process, unique topic/group names, client configs and small helpers.
//!
//! - `DISTILL_WATCH_TEST_BROKER=host:port` runs the tests against that broker
//!   (nisshi is recognised by its cluster id, see [`broker_is_nisshi`]).
//! - Otherwise nisshi is installed (once, into the cache; see
//!   [`local_broker`]) and started on a free loopback port, once
//!   per test process. It is leaked on purpose and dies with the process
//!   (`PR_SET_PDEATHSIG`).
//!
//! Tests in one process share the broker and run in parallel, so every test
//! creates its own topics and groups named with [`unique_name`].

pub mod secure;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use distill_watch::topics::{self, TopicSpec};
use local_broker::{self, LocalBroker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;

/// Environment variable naming an external broker to test against.
pub const TEST_BROKER_ENV: &str = "DISTILL_WATCH_TEST_BROKER";

/// Set (to anything but empty or `0`), the tests run against the secure
/// broker ([`secure::secure_broker`]: TLS and SASL/SCRAM, `sqlite://`
/// storage) instead of the plain one, every client with its settings.
pub const TEST_SECURE_ENV: &str = "DISTILL_WATCH_TEST_SECURE";

struct Broker {
    bootstrap: String,
    nisshi: bool,
    /// librdkafka settings every client needs (TLS and SASL).
    security: Vec<(String, String)>,
}

/// Whether the broker at `bootstrap` is nisshi (or Tansu, its former name),
/// judged by the cluster id: nisshi's default is `nisshi_cluster`.
fn is_nisshi(bootstrap: &str) -> Result<bool, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| format!("cannot create a client for {bootstrap}: {e}"))?;
    let id = consumer
        .client()
        .fetch_cluster_id(Duration::from_secs(10))
        .ok_or_else(|| format!("broker {bootstrap} did not answer a metadata request in 10 s"))?;
    let id = id.to_ascii_lowercase();
    Ok(id.contains("nisshi") || id.contains("tansu"))
}

fn shared_broker() -> &'static Broker {
    static BROKER: OnceLock<Result<Broker, String>> = OnceLock::new();
    let result = BROKER.get_or_init(|| {
        // The worker's own log, when asked for (`RUST_LOG=distill_watch=info`):
        // what a failure on a slow or secure broker needs explained.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        if std::env::var(TEST_SECURE_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
            let b = secure::secure_broker();
            return Ok(Broker {
                bootstrap: b.bootstrap.clone(),
                nisshi: true,
                security: b.client_settings(secure::PASSWORD, &b.ca),
            });
        }
        if let Some(b) = std::env::var(TEST_BROKER_ENV)
            .ok()
            .filter(|b| !b.is_empty())
        {
            let nisshi = is_nisshi(&b)?;
            return Ok(Broker {
                bootstrap: b,
                nisshi,
                security: Vec::new(),
            });
        }
        let binary =
            local_broker::ensure_installed().map_err(|e| format!("cannot install nisshi: {e}"))?;
        let started = Instant::now();
        let broker =
            LocalBroker::start(&binary, None).map_err(|e| format!("cannot start nisshi: {e}"))?;
        eprintln!(
            "integration-tests: nisshi {} on {} (pid {}, log {}) ready in {:?}",
            local_broker::NISSHI_VERSION,
            broker.bootstrap,
            broker.pid(),
            broker.log.display(),
            started.elapsed()
        );
        // Lives for the rest of the process; PR_SET_PDEATHSIG kills it when
        // the process exits even though it is never dropped.
        let broker: &'static LocalBroker = Box::leak(Box::new(broker));
        Ok(Broker {
            bootstrap: broker.bootstrap.clone(),
            nisshi: true,
            security: Vec::new(),
        })
    });
    match result {
        Ok(b) => b,
        // Every test fails with the same message instead of retrying the start.
        Err(e) => panic!("{e}"),
    }
}

/// Bootstrap address of the broker the tests use (`$DISTILL_WATCH_TEST_BROKER`,
/// else a local nisshi started on first use).
pub fn broker() -> &'static str {
    &shared_broker().bootstrap
}

/// True when the test broker is nisshi (the one started here, or an external
/// one whose cluster id says nisshi), so tests can pin nisshi's faults and still
/// demand correct Kafka behaviour from any other broker.
pub fn broker_is_nisshi() -> bool {
    shared_broker().nisshi
}

/// A name unique across tests, test processes and runs, for topics and groups:
/// `<prefix>-<pid>-<time>-<counter>`, restricted to Kafka's legal characters.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// A client config with `bootstrap.servers` set to [`broker()`].
pub fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker());
    for (k, v) in security_settings() {
        config.set(k, v);
    }
    config
}

/// How long a test waits to read a topic to its end: a minute, ten on
/// the secure broker, whose `sqlite://` storage reads at ~2k msg/s.
pub fn read_timeout() -> Duration {
    if security_settings().is_empty() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(600)
    }
}

/// Consumer settings for the worker configurations of the tests: on the
/// secure broker a longer `max.poll.interval.ms` than the shipped 10 s,
/// because its `sqlite://` storage makes a checkpoint read or a
/// transaction outlast 10 s between polls (the member is then thrown out
/// of its group, rejoins, reads its checkpoints again, and so on).
pub fn consumer_settings() -> Vec<(String, String)> {
    if security_settings().is_empty() {
        Vec::new()
    } else {
        vec![("max.poll.interval.ms".to_string(), "60000".to_string())]
    }
}

/// The librdkafka settings the test broker needs from every client: TLS
/// and SASL with [`TEST_SECURE_ENV`], none otherwise. Worker configs put
/// them in `[librdkafka]`.
pub fn security_settings() -> &'static [(String, String)] {
    &shared_broker().security
}

/// Consumer config for a group member that joins quickly on nisshi
/// (`max.poll.interval.ms=10000`, `session.timeout.ms=6000`), reads from the
/// earliest offset and never auto-commits.
pub fn group_consumer_config(group: &str) -> ClientConfig {
    let mut config = client_config();
    config
        .set("group.id", group)
        .set("max.poll.interval.ms", "10000")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    config
}

/// Producer config without idempotence (nisshi reports wrong high watermarks
/// after an idempotent producer wrote).
pub fn producer_config() -> ClientConfig {
    let mut config = client_config();
    config
        .set("enable.idempotence", "false")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    config
}

/// A producer that places keys the way the traffic generator assumes
/// (`murmur2_random`, as Kafka's Java clients do), for writing generated
/// traffic with `distill_watch_traffic::write_to_kafka`.
pub fn traffic_producer() -> rdkafka::producer::FutureProducer {
    let mut cc = client_config();
    cc.set("partitioner", "murmur2_random")
        .set("enable.idempotence", "false")
        .set("linger.ms", "5");
    cc.create().expect("traffic producer")
}

/// Creates topics with [`distill_watch::topics::create_topics`], blocking.
pub fn create_topics(specs: &[TopicSpec]) {
    block_on(topics::create_topics(&client_config(), specs))
        .unwrap_or_else(|e| panic!("creating topics {specs:?} failed: {e}"));
}

/// Runs a future to completion on a fresh current-thread runtime (tests are
/// synchronous because rdkafka's consumers and producers block).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// A record to produce: `partition: None` lets the configured partitioner choose.
#[derive(Debug, Clone)]
pub struct Record {
    /// Target topic.
    pub topic: String,
    /// Explicit partition, or `None` for the partitioner.
    pub partition: Option<i32>,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub value: Vec<u8>,
}

/// Where the broker acknowledged a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Index of the record in the slice given to [`produce`].
    pub index: usize,
    /// Topic.
    pub topic: String,
    /// Partition it went to.
    pub partition: i32,
    /// Offset it got.
    pub offset: i64,
}

struct CollectingContext {
    results: Mutex<Vec<Result<Delivered, (usize, KafkaError)>>>,
}

impl ClientContext for CollectingContext {}

impl ProducerContext for CollectingContext {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Self::DeliveryOpaque) {
        let entry = match result {
            Ok(m) => Ok(Delivered {
                index: *index,
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => Err((*index, e.clone())),
        };
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
    }
}

/// Produces `records` with `config` and waits for every delivery report.
/// Panics on any delivery error; returns the reports in record order.
pub fn produce(config: &ClientConfig, records: &[Record]) -> Vec<Delivered> {
    let context = CollectingContext {
        results: Mutex::new(Vec::new()),
    };
    let producer: BaseProducer<CollectingContext> = config
        .create_with_context(context)
        .expect("create producer");
    for (index, r) in records.iter().enumerate() {
        let mut record = BaseRecord::with_opaque_to(&r.topic, Box::new(index)).payload(&r.value);
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => panic!("enqueueing record {index} for {} failed: {e}", r.topic),
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("flush producer");
    let results = std::mem::take(
        &mut *producer
            .context()
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    assert_eq!(
        results.len(),
        records.len(),
        "one delivery report per record"
    );
    let mut by_index = BTreeMap::new();
    for r in results {
        match r {
            Ok(d) => {
                by_index.insert(d.index, d);
            }
            Err((index, e)) => panic!("record {index} was not delivered: {e}"),
        }
    }
    by_index.into_values().collect()
}

/// The high watermark of `topic`/`partition` as last reported in a Fetch
/// response to `consumer`, or `None` if it has not fetched that partition yet.
/// Unlike `fetch_watermarks` this sends no ListOffsets request.
pub fn cached_high_watermark<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    distill_watch::source::cached_watermarks(consumer.client(), topic, partition)
        .map(|(_, high)| high)
}

/// Kafka's Java default partitioner for keyed records, which librdkafka's
/// `murmur2` and `murmur2_random` partitioners reproduce (the generator's
/// copy, tested there against Kafka's own test vectors).
pub use distill_watch_traffic::partition::partition_of as java_murmur2_partition;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_legal() {
        let a = unique_name("t/x");
        let b = unique_name("t/x");
        assert_ne!(a, b);
        assert!(a.starts_with("t-x-"));
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
    }
}
