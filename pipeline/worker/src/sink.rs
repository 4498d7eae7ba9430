//! Avro encoding of risk scores and producing to Kafka: scores to
//! `risk.scores.v1`, rejected input to the DLQ.
//!
//! Nothing is considered sent until the broker acknowledged it; the worker
//! commits input offsets only after [`Sink::send_scores`] and
//! [`Sink::flush_dlq`] returned `Ok`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apache_avro::types::Value;
use futures::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::decode::{RawMessage, Reject};
use crate::schemas::{encode_framed, SchemaSet};
use crate::score::RiskScore;

/// Record headers on produced scores. They carry what must stay out of the
/// value to keep it a pure function of the input.
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
}

/// Encode one score as a Confluent-framed `RiskScore`.
pub fn encode_score(s: &RiskScore) -> Result<Vec<u8>, apache_avro::Error> {
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
    ]);
    encode_framed(schema, value)
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

pub struct Sink {
    producer: FutureProducer,
    scores_topic: String,
    dlq_topic: String,
    worker: String,
    queue_timeout: Duration,
    pending_dlq: Vec<DeliveryFuture>,
}

impl Sink {
    pub fn new(
        producer: FutureProducer,
        scores_topic: String,
        dlq_topic: String,
        queue_timeout: Duration,
    ) -> Self {
        Sink {
            producer,
            scores_topic,
            dlq_topic,
            worker: worker_id(),
            queue_timeout,
            pending_dlq: Vec::new(),
        }
    }

    /// Produce every score, keyed by account, and wait for all
    /// acknowledgements. Returns the number sent.
    pub async fn send_scores(&self, scores: &[RiskScore]) -> Result<usize, SinkError> {
        let processed_at = now_ms().to_string();
        let mut payloads = Vec::with_capacity(scores.len());
        for s in scores {
            payloads.push(encode_score(s)?);
        }
        let sends = scores.iter().zip(&payloads).map(|(s, payload)| {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: HEADER_PROCESSED_AT,
                    value: Some(processed_at.as_str()),
                })
                .insert(Header {
                    key: HEADER_WORKER,
                    value: Some(self.worker.as_str()),
                });
            let record = FutureRecord::to(&self.scores_topic)
                .key(s.account_id.as_bytes())
                .payload(payload.as_slice())
                .headers(headers);
            self.producer
                .send(record, Timeout::After(self.queue_timeout))
        });
        for result in join_all(sends).await {
            result.map_err(|(source, _)| SinkError::Produce {
                topic: self.scores_topic.clone(),
                source,
            })?;
        }
        Ok(scores.len())
    }

    /// Queue a rejected message for the DLQ: original key and value, with
    /// headers saying why and where from. Confirmed by [`Sink::flush_dlq`].
    pub async fn send_dlq(
        &mut self,
        source_topic: &str,
        msg: &RawMessage,
        reject: &Reject,
    ) -> Result<(), SinkError> {
        let partition = msg.partition.to_string();
        let offset = msg.offset.to_string();
        let timestamp = msg.timestamp_ms.map(|t| t.to_string()).unwrap_or_default();
        let mut attempts = 0;
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: HEADER_ERROR_KIND,
                    value: Some(reject.kind.as_str()),
                })
                .insert(Header {
                    key: HEADER_ERROR_MESSAGE,
                    value: Some(reject.detail.as_str()),
                })
                .insert(Header {
                    key: HEADER_SOURCE_TOPIC,
                    value: Some(source_topic),
                })
                .insert(Header {
                    key: HEADER_SOURCE_PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: HEADER_SOURCE_OFFSET,
                    value: Some(offset.as_str()),
                })
                .insert(Header {
                    key: HEADER_SOURCE_TIMESTAMP,
                    value: Some(timestamp.as_str()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.dlq_topic).headers(headers);
            if let Some(k) = msg.key.as_deref() {
                record = record.key(k);
            }
            if let Some(p) = msg.payload.as_deref() {
                record = record.payload(p);
            }
            match self.producer.send_result(record) {
                Ok(fut) => {
                    self.pending_dlq.push(fut);
                    return Ok(());
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) if attempts < 3 => {
                    // The local queue is full of earlier DLQ records: wait for
                    // them, then retry this one.
                    attempts += 1;
                    self.flush_dlq().await?;
                }
                Err((source, _)) => {
                    return Err(SinkError::Produce {
                        topic: self.dlq_topic.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Wait until every queued DLQ record was acknowledged.
    pub async fn flush_dlq(&mut self) -> Result<usize, SinkError> {
        let pending = std::mem::take(&mut self.pending_dlq);
        let n = pending.len();
        for result in join_all(pending).await {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((source, _))) => {
                    return Err(SinkError::Produce {
                        topic: self.dlq_topic.clone(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(SinkError::Canceled {
                        topic: self.dlq_topic.clone(),
                    })
                }
            }
        }
        Ok(n)
    }

    pub fn has_pending_dlq(&self) -> bool {
        !self.pending_dlq.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{Level, Reason};

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
}
