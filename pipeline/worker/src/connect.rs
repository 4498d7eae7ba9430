//! The first contact with the cluster, made to fail fast and say why.
//!
//! librdkafka reports a refused password or an untrusted certificate only
//! through its error callback, and keeps reconnecting with backoff: without
//! this check a worker would sit through its metadata timeouts, its group
//! join and its retries before anything useful reached the log. Every
//! command that talks to Kafka calls [`check`] first, with the same client
//! settings it will use, and stops on the first such error.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("authentication with {bootstrap} failed: {reason} (check [librdkafka] sasl.mechanisms, sasl.username and sasl.password)")]
    Authentication { bootstrap: String, reason: String },
    #[error("TLS with {bootstrap} failed: {reason} (check [librdkafka] security.protocol and ssl.ca.location against the broker's certificate)")]
    Tls { bootstrap: String, reason: String },
    #[error("no broker of {bootstrap} answered within {waited:.0?}: {reason}")]
    Unreachable {
        bootstrap: String,
        waited: Duration,
        reason: String,
    },
    #[error("cannot create a Kafka client: {0}")]
    Client(#[from] KafkaError),
}

/// What went wrong on the way to the brokers, as the error callback told.
#[derive(Default)]
struct Capture {
    refused: Mutex<Option<(Refusal, String)>>,
    last: Mutex<String>,
}

#[derive(Clone, Copy)]
enum Refusal {
    Authentication,
    Tls,
}

impl ClientContext for Capture {
    fn error(&self, error: KafkaError, reason: &str) {
        let refusal = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                Some(Refusal::Authentication)
            }
            Some(RDKafkaErrorCode::SSL) => Some(Refusal::Tls),
            // A failed handshake comes as a transport failure whose reason
            // names it.
            _ if reason.contains("SSL handshake failed")
                || reason.contains("certificate verify failed") =>
            {
                Some(Refusal::Tls)
            }
            _ => None,
        };
        let mut slot = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = refusal {
            slot.get_or_insert((r, reason.to_string()));
        }
        // "1/1 brokers are down" says less than the failure before it.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_empty() || error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown) {
            *last = reason.to_string();
        }
    }

    // librdkafka logs each failed attempt too; the error above says it once.
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, _fac: &str, _message: &str) {}
}

impl rdkafka::consumer::ConsumerContext for Capture {}

/// How long a command waits for a broker to answer at all before it gives
/// up (a refusal ends the wait at once).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How many fresh clients must be refused a password in a row before
/// [`check`] calls it wrong. A broker can refuse a valid credential for a
/// moment (Apache Kafka propagates SCRAM credentials asynchronously; nisshi
/// turns a failed credential lookup under load into a refusal); a wrong
/// password is refused every time.
const AUTH_ATTEMPTS: u32 = 3;

/// Whether a consumer's polled error is one librdkafka recovers from by
/// itself (it reconnects, re-authenticates, finds the new leader): a read
/// with a deadline logs it and keeps polling instead of failing at once.
/// An authentication refusal is among them because a broker can refuse a
/// valid credential for a moment; a wrong one is caught by [`check`]
/// before any read starts. Fatal errors and every other code still end the
/// read.
pub fn transient(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    match e {
        KafkaError::MessageConsumption(code) => matches!(
            code,
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::Authentication
                | C::SaslAuthenticationFailed
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::Resolve
                | C::NetworkException
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::NotCoordinator
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
        ),
        _ => false,
    }
}

/// A polled error of a read with a deadline: logged and ridden out when
/// [`transient`] (the read keeps polling), returned otherwise.
pub fn ride_out(e: KafkaError) -> Result<(), KafkaError> {
    if transient(&e) {
        tracing::warn!(error = %e, "consumer error; librdkafka retries");
        Ok(())
    } else {
        Err(e)
    }
}

/// [`check`] from async code, off the runtime's threads.
pub async fn check_async(cfg: &Config, timeout: Duration) -> Result<(), ConnectError> {
    let cfg = cfg.clone();
    match tokio::task::spawn_blocking(move || check(&cfg, timeout)).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Ask the cluster for its metadata with `cfg`'s client settings. Returns
/// as soon as it answers, on a TLS error, on an authentication refusal met
/// by [`AUTH_ATTEMPTS`] fresh clients in a row, or after `timeout` without
/// an answer.
pub fn check(cfg: &Config, timeout: Duration) -> Result<(), ConnectError> {
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        match check_once(cfg, timeout.saturating_sub(started.elapsed())) {
            Err(ConnectError::Authentication { bootstrap, reason }) if attempt < AUTH_ATTEMPTS => {
                tracing::warn!(%bootstrap, %reason, attempt, "authentication refused; trying again with a new connection");
                attempt += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            r => return r,
        }
    }
}

fn check_once(cfg: &Config, timeout: Duration) -> Result<(), ConnectError> {
    let bootstrap = cfg.kafka.bootstrap_servers.clone();
    let consumer: BaseConsumer<Capture> = cfg
        .client_config()
        .create_with_context(Capture::default())?;
    let started = Instant::now();
    loop {
        let answer = consumer.fetch_metadata(None, Duration::from_millis(500));
        serve_callbacks(&consumer);
        if let Ok(md) = &answer {
            if !md.brokers().is_empty() {
                return Ok(());
            }
        }
        let ctx = consumer.context();
        if let Some((refusal, reason)) = ctx
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(match refusal {
                Refusal::Authentication => ConnectError::Authentication { bootstrap, reason },
                Refusal::Tls => ConnectError::Tls { bootstrap, reason },
            });
        }
        if started.elapsed() >= timeout {
            let last = ctx.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let reason = match answer {
                Err(e) if last.is_empty() => e.to_string(),
                _ => last,
            };
            return Err(ConnectError::Unreachable {
                bootstrap,
                waited: started.elapsed(),
                reason,
            });
        }
    }
}

/// Hands every event librdkafka has queued to [`Capture`]. Its log lines
/// and its errors share one queue, and a poll returns after one error, or,
/// with a zero timeout, after one log line. A refused handshake is retried
/// at every metadata request, and its two messages alternate, so
/// librdkafka's suppression of identical errors never applies: each try
/// queues a log line and an error. Read one event per 500 ms round, the
/// refusal waited behind the backlog (10 log lines, 5.5 s, on an idle
/// machine; 28 s in a busy CI run at 9e26f01, where the test failed).
fn serve_callbacks(consumer: &BaseConsumer<Capture>) {
    let until = Instant::now() + Duration::from_millis(20);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let _ = consumer.poll(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ride_out_what_librdkafka_retries_and_stop_on_the_rest() {
        use RDKafkaErrorCode as C;
        for code in [
            C::Authentication,
            C::BrokerTransportFailure,
            C::AllBrokersDown,
        ] {
            assert!(transient(&KafkaError::MessageConsumption(code)), "{code:?}");
        }
        // Fatal, permanent, or not a consumption error: the read ends.
        assert!(!transient(&KafkaError::MessageConsumptionFatal(
            C::Authentication
        )));
        assert!(!transient(&KafkaError::MessageConsumption(
            C::TopicAuthorizationFailed
        )));
        assert!(!transient(&KafkaError::MessageConsumption(
            C::UnknownTopicOrPartition
        )));
        assert!(!transient(&KafkaError::MetadataFetch(C::Authentication)));
    }
}
