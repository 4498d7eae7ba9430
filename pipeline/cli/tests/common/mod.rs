//! The harness of the tests that run `distill-watch run` as real processes
//! on the real broker: topic names per run, worker processes with their
//! logs, and reading what a `read_committed` consumer sees.

// Each test binary uses its own part of the harness.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use distill_watch::sink::{
    HEADER_ERROR_KIND, HEADER_ERROR_MESSAGE, HEADER_PROCESSED_AT, HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION, HEADER_SOURCE_TIMESTAMP,
};
use distill_watch::source::read_to_end;
use distill_watch::topics::TopicSpec;
use distill_watch_traffic::{write_to_kafka, Topics, Traffic};
use integration_tests::{
    block_on, broker, client_config, create_topics, traffic_producer, unique_name,
};
use rdkafka::message::{Headers, Message};

pub const PARTITIONS: i32 = 4;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The topics and group of one run.
#[derive(Clone, Debug)]
pub struct Names {
    pub group: String,
    pub requests: String,
    pub responses: String,
    pub accounts: String,
    pub scores: String,
    pub dlq: String,
    pub checkpoints: String,
    pub features: String,
    pub clusters: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        let n = |s: &str| unique_name(&format!("{prefix}-{s}"));
        Names {
            group: n("group"),
            requests: n("requests"),
            responses: n("responses"),
            accounts: n("accounts"),
            scores: n("scores"),
            dlq: n("dlq"),
            checkpoints: n("checkpoints"),
            features: n("features"),
            clusters: n("clusters"),
        }
    }

    /// Fresh outputs and group over the same inputs.
    pub fn outputs_of(inputs: &Names, prefix: &str) -> Self {
        let fresh = Names::new(prefix);
        Names {
            requests: inputs.requests.clone(),
            responses: inputs.responses.clone(),
            accounts: inputs.accounts.clone(),
            ..fresh
        }
    }

    pub fn create_inputs(&self) {
        create_topics(&[
            TopicSpec::new(&self.requests, PARTITIONS),
            TopicSpec::new(&self.responses, PARTITIONS),
            TopicSpec::new(&self.accounts, 2).compacted(),
        ]);
    }

    pub fn create_outputs(&self) {
        create_topics(&[
            TopicSpec::new(&self.scores, PARTITIONS),
            TopicSpec::new(&self.dlq, 1),
            TopicSpec::new(&self.checkpoints, PARTITIONS).compacted(),
            TopicSpec::new(&self.features, PARTITIONS),
            TopicSpec::new(&self.clusters, PARTITIONS),
        ]);
    }

    /// A config file for `distill-watch --config`; `consumer`: more
    /// `[consumer]` settings.
    pub fn config_file(&self, name: &str, consumer: &[(&str, &str)]) -> PathBuf {
        self.config_file_with(name, consumer, "")
    }

    /// [`Names::config_file`] with more sections (`[metrics]`,
    /// `[librdkafka]`) after the others.
    pub fn config_file_with(
        &self,
        name: &str,
        consumer: &[(&str, &str)],
        sections: &str,
    ) -> PathBuf {
        let toml = format!(
            r#"[kafka]
bootstrap_servers = "{broker}"
group_id = "{group}"
[topics]
requests = "{requests}"
responses = "{responses}"
accounts = "{accounts}"
scores = "{scores}"
dlq = "{dlq}"
checkpoints = "{checkpoints}"
features = "{features}"
clusters = "{clusters}"
[jobs]
dir = "{jobs}"
scoring = "{scoring}"
[clusters]
model = "{clusters_model}"
[consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
"max.poll.interval.ms" = "10000"
"fetch.wait.max.ms" = "10"
{extra}
{sections}
"#,
            broker = broker(),
            group = self.group,
            requests = self.requests,
            responses = self.responses,
            accounts = self.accounts,
            scores = self.scores,
            dlq = self.dlq,
            checkpoints = self.checkpoints,
            features = self.features,
            clusters = self.clusters,
            jobs = repo().join("jobs").display(),
            scoring = repo().join("jobs/scoring.toml").display(),
            clusters_model = repo().join("jobs/clusters.toml").display(),
            extra = consumer
                .iter()
                .map(|(k, v)| format!("{k:?} = {v:?}\n"))
                .collect::<String>(),
        );
        // With a secure test broker, every client needs its TLS and SASL
        // settings (a test that brings its own `[librdkafka]` knows them).
        let security = integration_tests::security_settings();
        let toml = if security.is_empty() || sections.contains("[librdkafka]") {
            toml
        } else {
            let lines: String = security
                .iter()
                .map(|(k, v)| format!("{k:?} = {v:?}\n"))
                .collect();
            format!("{toml}[librdkafka]\n{lines}")
        };
        let path = std::env::temp_dir().join(format!("{}-{name}.toml", self.group));
        std::fs::write(&path, toml).unwrap();
        path
    }
}

/// A `distill-watch run` process, its log in a file.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
    pub out: PathBuf,
    pub name: String,
}

impl Worker {
    pub fn start(names: &Names, name: &str, exit_at_eof: bool) -> Worker {
        Self::start_with(names, name, exit_at_eof, &[])
    }

    pub fn start_with(
        names: &Names,
        name: &str,
        exit_at_eof: bool,
        consumer: &[(&str, &str)],
    ) -> Worker {
        let args: &[&str] = if exit_at_eof { &["--exit-at-eof"] } else { &[] };
        Self::spawn(
            names,
            name,
            &names.config_file(name, consumer),
            "info",
            args,
            &[],
        )
    }

    /// `distill-watch --config CONFIG --log LOG run ARGS` with `envs` added
    /// to its environment; its stderr in [`Worker::log`], its stdout in
    /// [`Worker::out`].
    pub fn spawn(
        names: &Names,
        name: &str,
        config: &Path,
        log: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Worker {
        let base = std::env::temp_dir().join(format!("{}-{name}", names.group));
        let (err, out) = (base.with_extension("log"), base.with_extension("out"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_distill-watch"));
        cmd.arg("--config")
            .arg(config)
            .args(["--log", log, "run"])
            .args(args)
            .envs(envs.iter().copied())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        Worker {
            child: cmd.spawn().expect("starting distill-watch"),
            log: err,
            out,
            name: name.to_string(),
        }
    }

    /// Whether the worker holds partitions now, as its log tells: its last
    /// rebalance event is an assignment of some.
    pub fn holds_partitions(&self) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .rfind(|l| l.contains("partitions assigned") || l.contains("partitions revoked"))
            .is_some_and(|l| l.contains("partitions assigned") && l.contains("(Requests"))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL: no cleanup, no leave-group, whatever was in flight stays.
    /// Returns when (epoch millis).
    pub fn kill(mut self) -> i64 {
        let at = now_ms();
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        at
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Wait for the process to exit; its status.
    pub fn wait(mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            if Instant::now() > deadline {
                let tail = self.log_tail();
                let _ = self.child.kill();
                panic!(
                    "worker {} still running after {timeout:?}:\n{tail}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait for a clean exit.
    pub fn finish(self, timeout: Duration) {
        let name = self.name.clone();
        let log = self.log.clone();
        let status = self.wait(timeout);
        assert!(
            status.success(),
            "worker {name} failed ({status}):\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// A record's content: key, value and the headers that belong to it (not
/// processing time or worker, nor the input topic's name, which differs
/// between runs).
pub type Rec = (Vec<u8>, Vec<u8>, Vec<(String, String)>);

pub const CONTENT_HEADERS: [&str; 5] = [
    HEADER_ERROR_KIND,
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_TIMESTAMP,
];

/// Every record a `read_committed` consumer sees, with its
/// `dw.processed_at_ms` header.
pub fn read_records(topic: &str) -> Vec<(Rec, Option<i64>)> {
    let mut cc = client_config();
    cc.set("group.id", unique_name("reader"))
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10");
    read_to_end(&cc, topic, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("reading {topic}: {e}"))
        .iter()
        .map(|m| {
            let mut content = Vec::new();
            let mut processed_at = None;
            if let Some(h) = m.headers() {
                for i in 0..h.count() {
                    let header = h.get(i);
                    let value =
                        String::from_utf8_lossy(header.value.unwrap_or_default()).to_string();
                    if header.key == HEADER_PROCESSED_AT {
                        processed_at = value.parse().ok();
                    } else if CONTENT_HEADERS.contains(&header.key) {
                        content.push((header.key.to_string(), value));
                    }
                }
            }
            content.sort();
            let rec = (
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
                content,
            );
            (rec, processed_at)
        })
        .collect()
}

/// Every record's content, sorted.
pub fn committed_records(topic: &str) -> Vec<Rec> {
    let mut v: Vec<Rec> = read_records(topic).into_iter().map(|(r, _)| r).collect();
    v.sort();
    v
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Write `traffic` to the input topics of `names`.
pub fn write(traffic: &Traffic, names: &Names) {
    let topics = Topics {
        requests: names.requests.clone(),
        responses: names.responses.clone(),
        accounts: names.accounts.clone(),
    };
    block_on(write_to_kafka(traffic, &traffic_producer(), &topics)).unwrap();
}
