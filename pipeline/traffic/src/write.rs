//! Publish generated [`Traffic`] to Kafka the way the gateway would.
//!
//! Accounts go first and are awaited, so that enrichment has every account
//! version before the first request arrives. Requests and responses are then
//! merged in delivery order (event time, except where a streaming fault
//! delayed a record), which is how a gateway emits them, with the delivery
//! time as Kafka timestamp. Partitioning is left to the producer's
//! partitioner on the account-id key (use `murmur2_random`, Kafka's default:
//! [`crate::partition`] reproduces it), which puts an account's requests and
//! responses in the same partition number of both topics.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::{Record, Traffic};

/// Deliveries kept in flight: enough to keep librdkafka's batches full,
/// bounded so memory does not grow with the size of the traffic.
const IN_FLIGHT: usize = 10_000;
/// Log progress at least this often...
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// ...or every this fraction of the records.
const PROGRESS_STEP: f64 = 0.1;

/// Destination topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub requests: String,
    pub responses: String,
    pub accounts: String,
}

/// Records delivered per topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub accounts: u64,
    pub requests: u64,
    pub responses: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// librdkafka refused to enqueue a record (other than a full queue,
    /// which is waited out).
    #[error("could not enqueue a record for topic {topic}: {source}")]
    Enqueue {
        topic: String,
        #[source]
        source: KafkaError,
    },
    /// The broker did not acknowledge a record.
    #[error("delivery to topic {topic} failed for key {key:?}: {source}")]
    Delivery {
        topic: String,
        key: String,
        #[source]
        source: KafkaError,
    },
    /// The producer was dropped while a delivery was outstanding.
    #[error("delivery to topic {topic} was cancelled (producer dropped?)")]
    Cancelled { topic: String },
}

/// Which topic a record goes to; deliveries report it on failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Account,
    Request,
    Response,
}

/// Write `traffic`: accounts first (all delivered before anything else), then
/// requests and responses merged by delivery time, Kafka timestamp = delivery
/// time.
/// Returns once every record is acknowledged; fails on the first record that
/// is not.
pub async fn write_to_kafka(
    traffic: &Traffic,
    producer: &FutureProducer,
    topics: &Topics,
) -> Result<WriteStats, GenError> {
    write_to_kafka_with(traffic, producer, topics, |_| {}).await
}

/// [`write_to_kafka`], calling `progress` with the number of records
/// acknowledged so far (accounts, then events).
pub async fn write_to_kafka_with(
    traffic: &Traffic,
    producer: &FutureProducer,
    topics: &Topics,
    progress: impl Fn(usize),
) -> Result<WriteStats, GenError> {
    let mut stats = WriteStats::default();
    let progress: &dyn Fn(usize) = &progress;

    let mut accounts = Writer::new(
        producer,
        topics,
        "accounts",
        traffic.accounts.len(),
        0,
        progress,
    );
    for record in &traffic.accounts {
        accounts.send(Kind::Account, record, &mut stats).await?;
    }
    accounts.drain(&mut stats).await?;

    let total = traffic.requests.len() + traffic.responses.len();
    let mut events = Writer::new(
        producer,
        topics,
        "requests+responses",
        total,
        traffic.accounts.len(),
        progress,
    );
    for (kind, record) in delivery_order(&traffic.requests, &traffic.responses) {
        events.send(kind, record, &mut stats).await?;
    }
    events.drain(&mut stats).await?;
    tracing::info!(
        accounts = stats.accounts,
        requests = stats.requests,
        responses = stats.responses,
        "generated traffic written"
    );
    Ok(stats)
}

/// Requests and responses (each in delivery order) merged by delivery
/// time, as the gateway hands them to Kafka. A request and a response at
/// the same instant: the request first, as a response can never precede
/// its own request.
pub fn delivery_order<'a>(
    requests: &'a [Record],
    responses: &'a [Record],
) -> impl Iterator<Item = (Kind, &'a Record)> {
    let (mut reqs, mut resps) = (requests.iter().peekable(), responses.iter().peekable());
    std::iter::from_fn(move || match (reqs.peek(), resps.peek()) {
        (Some(q), Some(r)) if q.deliver_ms <= r.deliver_ms => {
            reqs.next().map(|x| (Kind::Request, x))
        }
        (Some(_), Some(_)) | (None, Some(_)) => resps.next().map(|x| (Kind::Response, x)),
        (Some(_), None) => reqs.next().map(|x| (Kind::Request, x)),
        (None, None) => None,
    })
}

/// How one delivery ended.
enum Acked {
    Delivered,
    Failed(KafkaError),
    /// The producer went away before reporting.
    Cancelled,
}

/// A delivery in flight, tagged with what is needed to report a failure.
type Pending = futures::future::BoxFuture<'static, (Kind, String, Acked)>;

/// A bounded window of in-flight deliveries with progress logging.
struct Writer<'a> {
    producer: &'a FutureProducer,
    topics: &'a Topics,
    label: &'static str,
    total: usize,
    done: usize,
    in_flight: FuturesUnordered<Pending>,
    last_log: Instant,
    next_step: usize,
    /// Records acknowledged before this writer started (for `progress`).
    base: usize,
    progress: &'a dyn Fn(usize),
}

impl<'a> Writer<'a> {
    fn new(
        producer: &'a FutureProducer,
        topics: &'a Topics,
        label: &'static str,
        total: usize,
        base: usize,
        progress: &'a dyn Fn(usize),
    ) -> Self {
        Self {
            base,
            progress,
            producer,
            topics,
            label,
            total,
            done: 0,
            in_flight: FuturesUnordered::new(),
            last_log: Instant::now(),
            next_step: step(total),
        }
    }

    fn topic(&self, kind: Kind) -> &'a str {
        match kind {
            Kind::Account => &self.topics.accounts,
            Kind::Request => &self.topics.requests,
            Kind::Response => &self.topics.responses,
        }
    }

    /// Enqueue one record, waiting for room in the window (or in
    /// librdkafka's queue) first. Records are enqueued in call order, so the
    /// per-partition order on the broker is the event-time order.
    async fn send(
        &mut self,
        kind: Kind,
        record: &Record,
        stats: &mut WriteStats,
    ) -> Result<(), GenError> {
        while self.in_flight.len() >= IN_FLIGHT {
            self.complete_one(stats).await?;
        }
        let topic = self.topic(kind);
        loop {
            let future_record = FutureRecord::to(topic)
                .key(record.key.as_bytes())
                .payload(&record.value)
                .timestamp(record.deliver_ms);
            match self.producer.send_result(future_record) {
                Ok(delivery) => {
                    self.in_flight.push(pending(kind, &record.key, delivery));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's local queue is full: let deliveries finish.
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    } else {
                        self.complete_one(stats).await?;
                    }
                }
                Err((source, _)) => {
                    return Err(GenError::Enqueue {
                        topic: topic.to_string(),
                        source,
                    })
                }
            }
        }
    }

    async fn complete_one(&mut self, stats: &mut WriteStats) -> Result<(), GenError> {
        let Some((kind, key, acked)) = self.in_flight.next().await else {
            return Ok(());
        };
        let topic = self.topic(kind).to_string();
        match acked {
            Acked::Delivered => {}
            Acked::Failed(source) => return Err(GenError::Delivery { topic, key, source }),
            Acked::Cancelled => return Err(GenError::Cancelled { topic }),
        }
        match kind {
            Kind::Account => stats.accounts += 1,
            Kind::Request => stats.requests += 1,
            Kind::Response => stats.responses += 1,
        }
        self.done += 1;
        if self.done.is_multiple_of(1024) || self.done == self.total {
            (self.progress)(self.base + self.done);
        }
        if self.done >= self.next_step || self.last_log.elapsed() >= PROGRESS_EVERY {
            tracing::info!(
                what = self.label,
                delivered = self.done,
                total = self.total,
                percent = (self.done as f64 * 100.0 / self.total.max(1) as f64).round(),
                "writing generated traffic"
            );
            self.last_log = Instant::now();
            while self.next_step <= self.done {
                self.next_step += step(self.total);
            }
        }
        Ok(())
    }

    async fn drain(&mut self, stats: &mut WriteStats) -> Result<(), GenError> {
        while !self.in_flight.is_empty() {
            self.complete_one(stats).await?;
        }
        Ok(())
    }
}

fn step(total: usize) -> usize {
    ((total as f64 * PROGRESS_STEP).ceil() as usize).max(1)
}

/// Wrap a delivery future so that, on failure, it says which record failed.
fn pending(kind: Kind, key: &str, delivery: DeliveryFuture) -> Pending {
    let key = key.to_string();
    Box::pin(async move {
        let acked = match delivery.await {
            Ok(Ok(_delivery)) => Acked::Delivered,
            Ok(Err((e, _message))) => Acked::Failed(e),
            Err(_cancelled) => Acked::Cancelled,
        };
        (kind, key, acked)
    })
}
