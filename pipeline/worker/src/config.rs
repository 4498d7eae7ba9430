//! Configuration: defaults from `deploy/distill-watch.toml` (compiled in, so
//! that file is always the complete, documented reference), then an optional
//! user file, then `DISTILL_WATCH_*` environment variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The documented defaults, exactly as shipped in `deploy/distill-watch.toml`.
pub const DEFAULTS_TOML: &str = include_str!("../../../deploy/distill-watch.toml");
/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "DISTILL_WATCH_";
/// Variables under [`ENV_PREFIX`] that are not configuration keys: the
/// command line's own (`DISTILL_WATCH_CONFIG`, `DISTILL_WATCH_DEMO_BROKER`),
/// the local broker's (`_CACHE`, `_NISSHI`) and the tests' (`_TEST_BROKER`).
/// No configuration section has these names.
const ENV_NOT_CONFIG: [&str; 5] = ["config", "demo", "cache", "nisshi", "test"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TOML in {origin}: {message}")]
    Toml { origin: String, message: String },
    #[error("environment variable {var}: no configuration key [{section}] {key} (see `distill-watch config`)")]
    UnknownEnv {
        var: String,
        section: String,
        key: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub window: WindowConfig,
    pub jobs: JobsConfig,
    pub worker: WorkerConfig,
    pub clusters: ClustersConfig,
    pub metrics: MetricsConfig,
    pub schemas: SchemasConfig,
    /// Handed to librdkafka unchanged for every client.
    pub librdkafka: BTreeMap<String, String>,
    /// Handed to librdkafka for consumers only.
    pub consumer: BTreeMap<String, String>,
    /// Handed to librdkafka for producers only.
    pub producer: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub client_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    pub requests: String,
    pub responses: String,
    pub accounts: String,
    pub scores: String,
    pub dlq: String,
    pub checkpoints: String,
    pub features: String,
    pub clusters: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    #[serde(deserialize_with = "de_duration")]
    pub out_of_orderness: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_response_delay: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_future_skew: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    pub dir: PathBuf,
    pub scoring: PathBuf,
    /// How often a running worker looks for changed jobs or model (see
    /// `reload`); 0 turns reloading off.
    #[serde(deserialize_with = "de_duration")]
    pub reload_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClustersConfig {
    pub enabled: bool,
    pub model: PathBuf,
    pub stage: Stage,
    /// The cluster stage's consumer group; empty: `<kafka.group_id>.clusters`.
    pub group: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemasConfig {
    /// Directory whose `ids.toml` lists other writer versions; empty: none.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` of the metrics and health endpoint; empty: none.
    pub listen: String,
}

/// Which stages a `run` process runs (see `[clusters] stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Both,
    Accounts,
    Clusters,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub batch_max_messages: usize,
    #[serde(deserialize_with = "de_duration")]
    pub batch_max_wait: Duration,
    pub exit_at_eof: bool,
    #[serde(deserialize_with = "de_duration")]
    pub produce_timeout: Duration,
    /// Longest wait to read the worker's own state back (checkpoints).
    #[serde(deserialize_with = "de_duration")]
    pub read_timeout: Duration,
    pub delivery: Delivery,
    #[serde(deserialize_with = "de_duration")]
    pub commit_interval: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub group_done_timeout: Duration,
    pub max_buffered_rows: usize,
}

/// How outputs and input offsets are committed (see `[worker] delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Scores, DLQ records, checkpoints and input offsets of a cycle in one
    /// Kafka transaction per partition pair.
    ExactlyOnce,
    /// Outputs acknowledged, then offsets committed: a crash in between
    /// repeats that cycle's outputs (identical bytes).
    AtLeastOnce,
}

impl Config {
    /// Defaults, overlaid with `file` (if any), overlaid with the process
    /// environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let user = match file {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?,
            )),
            None => None,
        };
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Self::from_parts(user.as_ref().map(|(o, t)| (o.as_str(), t.as_str())), &env)
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Self {
        Self::from_parts(None, &[]).expect("deploy/distill-watch.toml is valid")
    }

    /// Pure core of [`Config::load`], so precedence is testable without
    /// touching the process environment.
    pub fn from_parts(
        user: Option<(&str, &str)>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let merged = merged_table(user, env)?;
        let config: Config =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Toml {
                    origin: "merged configuration".into(),
                    message: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "[kafka] bootstrap_servers is empty".into(),
            ));
        }
        if self.worker.batch_max_messages == 0 {
            return Err(ConfigError::Invalid(
                "[worker] batch_max_messages must be at least 1".into(),
            ));
        }
        let topics = [
            &self.topics.requests,
            &self.topics.responses,
            &self.topics.accounts,
            &self.topics.scores,
            &self.topics.dlq,
            &self.topics.checkpoints,
            &self.topics.features,
            &self.topics.clusters,
        ];
        if topics.iter().any(|t| t.is_empty()) {
            return Err(ConfigError::Invalid(
                "[topics] names must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// librdkafka settings shared by every client: bootstrap, client id and
    /// the `[librdkafka]` section verbatim.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut cc = rdkafka::ClientConfig::new();
        cc.set("bootstrap.servers", &self.kafka.bootstrap_servers);
        cc.set("client.id", &self.kafka.client_id);
        for (k, v) in &self.librdkafka {
            cc.set(k, v);
        }
        cc
    }

    /// [`Config::client_config`] plus the `[consumer]` section.
    pub fn consumer_config(&self) -> rdkafka::ClientConfig {
        let mut cc = self.client_config();
        for (k, v) in &self.consumer {
            cc.set(k, v);
        }
        cc
    }

    /// [`Config::client_config`] plus the `[producer]` section.
    pub fn producer_config(&self) -> rdkafka::ClientConfig {
        let mut cc = self.client_config();
        for (k, v) in &self.producer {
            cc.set(k, v);
        }
        cc
    }

    /// The merged configuration rendered back as TOML (for `distill-watch
    /// config`), with every secret shown as [`crate::redact::REDACTED`].
    pub fn effective_toml(
        user: Option<(&str, &str)>,
        env: &[(String, String)],
    ) -> Result<String, ConfigError> {
        let mut merged = merged_table(user, env)?;
        for section in CLIENT_SECTIONS {
            if let Some(toml::Value::Table(t)) = merged.get_mut(section) {
                for (k, v) in t.iter_mut() {
                    if crate::redact::is_secret_key(k) {
                        *v = toml::Value::String(crate::redact::REDACTED.into());
                    }
                }
            }
        }
        toml::to_string(&toml::Value::Table(merged))
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

/// The sections handed to librdkafka, where credentials live.
const CLIENT_SECTIONS: [&str; 3] = ["librdkafka", "consumer", "producer"];

/// By hand, so that a `{:?}` in a log line or a test failure never prints a
/// credential.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .map(|(k, v)| {
                    let v = if crate::redact::is_secret_key(k) {
                        crate::redact::REDACTED.to_string()
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect()
        };
        f.debug_struct("Config")
            .field("kafka", &self.kafka)
            .field("topics", &self.topics)
            .field("window", &self.window)
            .field("jobs", &self.jobs)
            .field("worker", &self.worker)
            .field("clusters", &self.clusters)
            .field("metrics", &self.metrics)
            .field("schemas", &self.schemas)
            .field("librdkafka", &redacted(&self.librdkafka))
            .field("consumer", &redacted(&self.consumer))
            .field("producer", &redacted(&self.producer))
            .finish()
    }
}

/// Defaults, overlaid with the user file, overlaid with the environment.
fn merged_table(
    user: Option<(&str, &str)>,
    env: &[(String, String)],
) -> Result<toml::Table, ConfigError> {
    let mut merged = parse_table("built-in defaults", DEFAULTS_TOML)?;
    if let Some((origin, text)) = user {
        merge(&mut merged, parse_table(origin, text)?);
    }
    for (var, value) in env {
        apply_env(&mut merged, var, value)?;
    }
    // Before anything is checked: an error about a value of the wrong type
    // quotes it.
    for section in CLIENT_SECTIONS {
        if let Some(toml::Value::Table(t)) = merged.get(section) {
            crate::redact::register(
                t.iter()
                    .filter(|(k, _)| crate::redact::is_secret_key(k))
                    .map(|(_, v)| match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }),
            );
        }
    }
    Ok(merged)
}

/// Errors name the line and column but do not quote the file: the line
/// could hold a credential (`"sasl.password" = "..."`).
fn parse_table(origin: &str, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let at = e.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        ConfigError::Toml {
            origin: format!("{origin}{}", at.unwrap_or_default()),
            message: e.message().trim_end().to_string(),
        }
    })
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// `DISTILL_WATCH_WINDOW_OUT_OF_ORDERNESS=1m` sets `[window] out_of_orderness`.
/// The section is matched first (sections have no underscores), the rest is
/// the key; for `[librdkafka]`, `[consumer]` and `[producer]` underscores
/// become dots.
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    let rest = rest.to_ascii_lowercase();
    let (section, key) = rest.split_once('_').unwrap_or((rest.as_str(), ""));
    if ENV_NOT_CONFIG.contains(&section) {
        return Ok(());
    }
    let unknown = || ConfigError::UnknownEnv {
        var: var.to_string(),
        section: section.to_string(),
        key: key.to_string(),
    };
    let Some(toml::Value::Table(sec)) = table.get_mut(section) else {
        return Err(unknown());
    };
    if CLIENT_SECTIONS.contains(&section) {
        if key.is_empty() {
            return Err(unknown());
        }
        sec.insert(
            key.replace('_', "."),
            toml::Value::String(value.to_string()),
        );
        return Ok(());
    }
    let existing = sec.get(key).ok_or_else(unknown)?;
    // Keep the type of the default so `..._EXIT_AT_EOF=true` is a bool and
    // `..._BATCH_MAX_MESSAGES=100` an integer.
    let parsed = match existing {
        toml::Value::Boolean(_) => {
            value
                .parse::<bool>()
                .map(toml::Value::Boolean)
                .map_err(|_| {
                    ConfigError::Invalid(format!("{var}: expected true or false, got {value:?}"))
                })?
        }
        toml::Value::Integer(_) => {
            value
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| {
                    ConfigError::Invalid(format!("{var}: expected an integer, got {value:?}"))
                })?
        }
        _ => toml::Value::String(value.to_string()),
    };
    sec.insert(key.to_string(), parsed);
    Ok(())
}

/// Parse "250ms", "30s", "10m", "2h", "1d".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} lacks a unit (ms, s, m, h, d)"))?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {text:?} must start with a whole number"))?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n * 1_000,
        "m" | "min" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        other => {
            return Err(format!(
                "duration {text:?}: unknown unit {other:?} (ms, s, m, h, d)"
            ))
        }
    };
    Ok(Duration::from_millis(ms))
}

/// The largest unit that divides `ms` exactly: `600000` → `10m`.
pub fn format_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::defaults();
        assert_eq!(c.topics.scores, "risk.scores.v1");
        assert_eq!(c.window.out_of_orderness, Duration::from_secs(30));
        assert_eq!(
            c.consumer.get("fetch.wait.max.ms").map(String::as_str),
            Some("10")
        );
        assert!(c.producer_config().get("fetch.wait.max.ms").is_none());
        assert_eq!(c.topics.checkpoints, "distill-watch.checkpoints.v1");
    }

    #[test]
    fn env_beats_file_beats_defaults() {
        let file = "[kafka]\nbootstrap_servers = \"file:1\"\ngroup_id = \"g-file\"\n";
        let env = vec![
            (
                "DISTILL_WATCH_KAFKA_BOOTSTRAP_SERVERS".to_string(),
                "env:2".to_string(),
            ),
            (
                "DISTILL_WATCH_WORKER_EXIT_AT_EOF".to_string(),
                "true".to_string(),
            ),
            (
                "DISTILL_WATCH_LIBRDKAFKA_SASL_PASSWORD".to_string(),
                "pw".to_string(),
            ),
            (
                "DISTILL_WATCH_CONSUMER_FETCH_WAIT_MAX_MS".to_string(),
                "100".to_string(),
            ),
        ];
        let c = Config::from_parts(Some(("test.toml", file)), &env).unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "env:2");
        assert_eq!(c.kafka.group_id, "g-file");
        assert!(c.worker.exit_at_eof);
        assert_eq!(
            c.librdkafka.get("sasl.password").map(String::as_str),
            Some("pw")
        );
        assert_eq!(c.consumer_config().get("fetch.wait.max.ms"), Some("100"));
    }

    #[test]
    fn secrets_are_redacted_in_the_printed_configuration_and_in_debug() {
        let file = "[librdkafka]\n\"ssl.key.password\" = \"file-key-pw-77\"\n\"ssl.key.location\" = \"/k.pem\"\n";
        let env = vec![
            (
                "DISTILL_WATCH_LIBRDKAFKA_SASL_PASSWORD".to_string(),
                "env-sasl-pw-42".to_string(),
            ),
            (
                "DISTILL_WATCH_PRODUCER_SASL_OAUTHBEARER_CLIENT_SECRET".to_string(),
                "oauth-secret-9".to_string(),
            ),
            (
                "DISTILL_WATCH_LIBRDKAFKA_SASL_USERNAME".to_string(),
                "worker-user".to_string(),
            ),
        ];
        let printed = Config::effective_toml(Some(("f.toml", file)), &env).unwrap();
        let c = Config::from_parts(Some(("f.toml", file)), &env).unwrap();
        let debug = format!("{c:?}");
        for out in [&printed, &debug] {
            for secret in ["file-key-pw-77", "env-sasl-pw-42", "oauth-secret-9"] {
                assert!(!out.contains(secret), "{secret} shown in:\n{out}");
            }
            assert!(
                out.contains("worker-user") && out.contains("/k.pem"),
                "{out}"
            );
            assert_eq!(out.matches(crate::redact::REDACTED).count(), 3, "{out}");
        }
        // Nor does an error in a file that holds one.
        let broken = "[librdkafka]\n\"sasl.password\" = \"file-key-pw-77\" oops\n";
        let err = Config::from_parts(Some(("f.toml", broken)), &[]).unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("f.toml at line 2") && !err.contains("file-key-pw-77"),
            "{err}"
        );
        // The clients still get the real values.
        assert_eq!(
            c.producer_config().get("sasl.password"),
            Some("env-sasl-pw-42")
        );
        // Reading the configuration registered them for the log's scrubber.
        assert_eq!(
            crate::redact::scrub("a file-key-pw-77 b env-sasl-pw-42 c oauth-secret-9"),
            "a [redacted] b [redacted] c [redacted]"
        );
    }

    #[test]
    fn the_command_lines_own_variables_are_not_configuration_keys() {
        let env: Vec<(String, String)> = [
            "DISTILL_WATCH_CONFIG",
            "DISTILL_WATCH_DEMO_BROKER",
            "DISTILL_WATCH_CACHE",
            "DISTILL_WATCH_NISSHI",
            "DISTILL_WATCH_TEST_BROKER",
        ]
        .iter()
        .map(|v| (v.to_string(), "x".to_string()))
        .collect();
        let c = Config::from_parts(None, &env).unwrap();
        assert_eq!(c.kafka.group_id, "distill-watch");
        // A typo in a real section is still an error.
        let typo = vec![("DISTILL_WATCH_KAFKA_GROUP".to_string(), "g".to_string())];
        assert!(Config::from_parts(None, &typo).is_err());
    }

    #[test]
    fn delivery_defaults_to_exactly_once_and_takes_at_least_once() {
        assert_eq!(Config::defaults().worker.delivery, Delivery::ExactlyOnce);
        let env = vec![(
            "DISTILL_WATCH_WORKER_DELIVERY".to_string(),
            "at_least_once".to_string(),
        )];
        let c = Config::from_parts(None, &env).unwrap();
        assert_eq!(c.worker.delivery, Delivery::AtLeastOnce);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err =
            Config::from_parts(Some(("t.toml", "[kafka]\nbootstrap = \"x\"\n")), &[]).unwrap_err();
        assert!(err.to_string().contains("bootstrap"), "{err}");
        let env = vec![("DISTILL_WATCH_WINDOW_SIZE".to_string(), "1m".to_string())];
        assert!(matches!(
            Config::from_parts(None, &env),
            Err(ConfigError::UnknownEnv { .. })
        ));
        let env = vec![(
            "DISTILL_WATCH_WORKER_EXIT_AT_EOF".to_string(),
            "yes".to_string(),
        )];
        assert!(Config::from_parts(None, &env).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten s").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
