//! The worker against a real broker: labelled traffic in, risk scores out
//! (decoded independently with apache-avro and the published `.avsc`), bad
//! input to the DLQ, and offsets never committed ahead of delivered scores.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use apache_avro::types::Value;
use apache_avro::Schema;
use distill_watch::cluster::stage::{run_clusters, StageMetrics, StageOptions};
use distill_watch::cluster::ClusterModel;
use distill_watch::config::Config;
use distill_watch::source::read_to_end;
use distill_watch::topics::{create_topics, TopicSpec};
use distill_watch_traffic::partition::partition_of;
use distill_watch_traffic::{write_to_kafka, Record, Scenario, Topics};
use integration_tests::{
    broker, broker_is_nisshi, client_config, producer_config, traffic_producer, unique_name,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A schema straight from `schemas/`, parsed here rather than taken from the
/// pipeline, so a drift between the two would fail these tests.
fn avsc(name: &str) -> Schema {
    let text =
        std::fs::read_to_string(repo().join("schemas").join(format!("{name}.avsc"))).unwrap();
    Schema::parse_str(&text).unwrap()
}

/// Schema ids from `schemas/ids.toml`, read without the pipeline.
fn schema_id(name: &str) -> u32 {
    let text = std::fs::read_to_string(repo().join("schemas/ids.toml")).unwrap();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().parse().unwrap())
        .unwrap()
}

/// A worker configuration on fresh topics and group.
fn test_config(prefix: &str) -> Config {
    let mut cfg = Config::defaults();
    cfg.kafka.bootstrap_servers = broker().to_string();
    cfg.librdkafka
        .extend(integration_tests::security_settings().iter().cloned());
    cfg.consumer.extend(integration_tests::consumer_settings());
    cfg.worker.read_timeout = cfg
        .worker
        .read_timeout
        .max(integration_tests::read_timeout());
    cfg.kafka.group_id = unique_name(&format!("{prefix}-group"));
    let t = &mut cfg.topics;
    t.requests = unique_name(&format!("{prefix}-requests"));
    t.responses = unique_name(&format!("{prefix}-responses"));
    t.accounts = unique_name(&format!("{prefix}-accounts"));
    t.scores = unique_name(&format!("{prefix}-scores"));
    t.dlq = unique_name(&format!("{prefix}-dlq"));
    t.checkpoints = unique_name(&format!("{prefix}-checkpoints"));
    t.features = unique_name(&format!("{prefix}-features"));
    t.clusters = unique_name(&format!("{prefix}-clusters"));
    cfg.jobs.dir = repo().join("jobs");
    cfg.jobs.scoring = repo().join("jobs/scoring.toml");
    cfg.clusters.model = repo().join("jobs/clusters.toml");
    cfg.worker.exit_at_eof = true;
    cfg
}

fn specs(cfg: &Config, with_scores: bool) -> Vec<TopicSpec> {
    let t = &cfg.topics;
    let mut v = vec![
        TopicSpec::new(&t.requests, 4),
        TopicSpec::new(&t.responses, 4),
        TopicSpec::new(&t.accounts, 2).compacted(),
        TopicSpec::new(&t.dlq, 1),
        TopicSpec::new(&t.checkpoints, 4).compacted(),
        TopicSpec::new(&t.features, 4),
        TopicSpec::new(&t.clusters, 4),
    ];
    if with_scores {
        v.push(scores_spec(cfg));
    }
    v
}

fn scores_spec(cfg: &Config) -> TopicSpec {
    TopicSpec::new(&cfg.topics.scores, 4)
}

/// Every record of `topic`, read to the end of each partition.
fn read_all(topic: &str) -> Vec<OwnedMessage> {
    let mut cc = client_config();
    cc.set("group.id", unique_name("reader"))
        .set("fetch.wait.max.ms", "10");
    read_to_end(&cc, topic, integration_tests::read_timeout())
        .unwrap_or_else(|e| panic!("reading {topic}: {e}"))
}

/// A `RiskScore` decoded with apache-avro and `schemas/RiskScore.avsc`.
#[derive(Debug, Clone)]
struct Score {
    account: String,
    window_start: i64,
    level: String,
    score: f64,
    event_count: i64,
    response_count: i64,
    reasons: usize,
    revision: i32,
    features: usize,
    /// Set on a member score: the cluster it carries.
    cluster_id: Option<String>,
}

fn decode_score(m: &OwnedMessage, schema: &Schema, id: u32) -> Score {
    let payload = m.payload().expect("score has a value");
    assert_eq!(payload[0], 0, "Confluent magic byte");
    assert_eq!(
        u32::from_be_bytes(payload[1..5].try_into().unwrap()),
        id,
        "RiskScore schema id"
    );
    let v =
        apache_avro::from_avro_datum(schema, &mut &payload[5..], None).expect("valid RiskScore");
    let Value::Record(fields) = v else {
        panic!("not a record")
    };
    let f: BTreeMap<String, Value> = fields.into_iter().collect();
    let s = |k: &str| match &f[k] {
        Value::String(s) | Value::Enum(_, s) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    let l = |k: &str| match &f[k] {
        Value::Long(x) | Value::TimestampMillis(x) => *x,
        other => panic!("{k}: {other:?}"),
    };
    let score = Score {
        account: s("account_id"),
        window_start: l("window_start"),
        level: s("level"),
        score: match &f["score"] {
            Value::Double(x) => *x,
            other => panic!("score: {other:?}"),
        },
        event_count: l("event_count"),
        response_count: l("response_count"),
        reasons: match &f["reasons"] {
            Value::Array(a) => a.len(),
            other => panic!("reasons: {other:?}"),
        },
        revision: match &f["revision"] {
            Value::Int(r) => *r,
            other => panic!("revision: {other:?}"),
        },
        features: match &f["features"] {
            Value::Array(a) => a.len(),
            other => panic!("features: {other:?}"),
        },
        cluster_id: match &f["cluster_id"] {
            Value::Union(_, v) => match &**v {
                Value::String(c) => Some(c.clone()),
                _ => None,
            },
            other => panic!("cluster_id: {other:?}"),
        },
    };
    let key = match &score.cluster_id {
        None => format!("{}/{}", score.account, score.window_start),
        Some(c) => format!("{}/{}/{c}", score.account, score.window_start),
    };
    assert_eq!(
        m.key(),
        Some(key.as_bytes()),
        "scores are keyed by account and window (and cluster, for member scores)"
    );
    assert_eq!(
        m.partition(),
        partition_of(score.account.as_bytes(), 4),
        "scores are partitioned by account"
    );
    score
}

async fn run_worker(
    cfg: &Config,
) -> Result<distill_watch::worker::RunSummary, distill_watch::worker::WorkerError> {
    distill_watch::worker::run(cfg, std::future::pending()).await
}

/// Events older than the newest already delivered on their side of their
/// partition: what the worker counts as out of order.
fn out_of_order(records: &[Record], partitions: i32) -> u64 {
    let mut max: BTreeMap<i32, i64> = BTreeMap::new();
    let mut n = 0;
    for r in records {
        let m = max
            .entry(partition_of(r.key.as_bytes(), partitions))
            .or_insert(i64::MIN);
        if r.event_time_ms < *m {
            n += 1;
        }
        *m = (*m).max(r.event_time_ms);
    }
    n
}

/// The `ci` scenario, streaming faults and all, through a real worker on
/// the broker: every fault the generator injected is counted by the worker
/// as injected (per partition where it matters), every scored request is in
/// exactly one score, and a replay by another group is byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_traffic_with_faults_is_counted_scored_once_and_replays_identically() {
    let cfg = test_config("e2e");
    create_topics(&client_config(), &specs(&cfg, true))
        .await
        .unwrap();
    let scenario = Scenario::builtin("ci").unwrap();
    let traffic = distill_watch_traffic::generate(&scenario, 5, 0.5);
    let inj = traffic.injected;
    for (name, n) in inj.rows() {
        assert!(n > 0, "the ci scenario injects no {name}: {inj:?}");
    }
    let topics = Topics {
        requests: cfg.topics.requests.clone(),
        responses: cfg.topics.responses.clone(),
        accounts: cfg.topics.accounts.clone(),
    };
    write_to_kafka(&traffic, &traffic_producer(), &topics)
        .await
        .unwrap();

    let summary = run_worker(&cfg).await.unwrap();
    let m = summary.metrics.clone();
    assert_eq!(
        m.rejected_total() + m.late_revising,
        inj.late_events(),
        "only late events are rejected (or, within a job's lateness, revise a window): {m}"
    );
    assert!(m.late_revising > 0 && m.scores_revised > 0, "{m}");
    for (what, injected, counted) in inj.against(&m) {
        assert_eq!(counted, injected, "{what}: {m}\n{inj:?}");
    }
    assert_eq!(
        m.out_of_order_requests,
        out_of_order(&traffic.requests, 4),
        "{m}"
    );
    assert_eq!(
        m.out_of_order_responses,
        out_of_order(&traffic.responses, 4),
        "{m}"
    );

    // Where the generator put each key is where the broker has it.
    for msg in read_all(&cfg.topics.requests).iter().step_by(97) {
        assert_eq!(msg.partition(), partition_of(msg.key().unwrap(), 4));
    }
    let dlq = read_all(&cfg.topics.dlq);
    assert_eq!(dlq.len() as u64, inj.late_events() - m.late_revising);

    let schema = avsc("RiskScore");
    let id = schema_id("RiskScore");
    let live = read_all(&cfg.topics.scores);
    let all: Vec<Score> = live.iter().map(|m| decode_score(m, &schema, id)).collect();
    // The account stage's own scores; member scores (cluster_id set) come
    // from the cluster stage and are checked against its counters.
    let scores: Vec<Score> = all
        .iter()
        .filter(|s| s.cluster_id.is_none())
        .cloned()
        .collect();
    let stage = summary.clusters.expect("the cluster stage ran");
    assert_eq!(scores.len() as u64, m.scores_emitted);
    assert_eq!(
        (all.len() - scores.len()) as u64,
        stage.member_scores,
        "{stage}"
    );
    assert!(
        stage.member_rows > 0 && stage.clusters_emitted > 0,
        "{stage}"
    );
    assert_eq!(
        stage.foreign_rows + stage.undecodable + stage.rows_after_close,
        0,
        "{stage}"
    );
    let total_events: i64 = scores
        .iter()
        .filter(|s| s.revision == 0)
        .map(|s| s.event_count)
        .sum();
    assert_eq!(
        total_events as u64,
        inj.requests_scored(),
        "every scored request is counted in exactly one first score"
    );
    assert_eq!(
        scores.iter().filter(|s| s.revision > 0).count() as u64,
        m.scores_revised
    );
    for s in &scores {
        assert!((0.0..=1.0).contains(&s.score));
        if s.level == "high" || s.level == "critical" {
            assert!(s.reasons > 0, "a flagged score explains itself");
        }
    }

    // Replay: a second worker (another group) over the same topics writes
    // byte-identical score values for every (account, window), and the
    // same cluster records. It shares the features topic with the live
    // group: its cluster stage must read only its own group's rows.
    let mut replay = cfg.clone();
    replay.kafka.group_id = unique_name("e2e-replay-group");
    replay.topics.scores = unique_name("e2e-replay-scores");
    replay.topics.clusters = unique_name("e2e-replay-clusters");
    create_topics(
        &client_config(),
        &[
            scores_spec(&replay),
            TopicSpec::new(&replay.topics.clusters, 4),
        ],
    )
    .await
    .unwrap();
    let replayed = run_worker(&replay).await.unwrap();
    let replay_stage = replayed.clusters.expect("the cluster stage ran");
    assert!(
        replay_stage.foreign_rows > 0,
        "the live group's rows are skipped: {replay_stage}"
    );
    assert_eq!(
        records(&read_all(&cfg.topics.clusters)),
        records(&read_all(&replay.topics.clusters)),
        "replayed cluster records differ from live ones"
    );
    let windows: BTreeSet<(String, i64, i32)> = scores
        .iter()
        .map(|s| (s.account.clone(), s.window_start, s.revision))
        .collect();
    assert_eq!(
        windows.len(),
        scores.len(),
        "one score per account, window and revision"
    );
    assert!(
        records(&live) == records(&read_all(&replay.topics.scores)),
        "replayed scores differ from live ones"
    );
}

/// Test events encoded with apache-avro from the `.avsc` files.
struct Events {
    request: Schema,
    response: Schema,
    account: Schema,
}

const T0: i64 = 1_793_577_600_000; // 2026-11-02T00:00:00Z
const MIN: i64 = 60_000;

fn framed(id: u32, schema: &Schema, v: Value) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(apache_avro::to_avro_datum(schema, v).unwrap());
    out
}

fn with_defaults(schema: &Schema, given: Vec<(&str, Value)>) -> Value {
    let Schema::Record(r) = schema else {
        unreachable!()
    };
    Value::Record(
        r.fields
            .iter()
            .map(|f| {
                let v = given
                    .iter()
                    .find(|(n, _)| *n == f.name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| {
                        Value::from(f.default.clone().unwrap())
                            .resolve(&f.schema)
                            .unwrap()
                    });
                (f.name.clone(), v)
            })
            .collect(),
    )
}

impl Events {
    fn new() -> Self {
        Events {
            request: avsc("ApiRequest"),
            response: avsc("ApiResponse"),
            account: avsc("Account"),
        }
    }

    fn request(&self, id: &str, account: &str, t: i64) -> Vec<u8> {
        self.request_with(id, account, t, Vec::new())
    }

    /// A request with more fields set (`extra` overrides defaults).
    fn request_with(&self, id: &str, account: &str, t: i64, extra: Vec<(&str, Value)>) -> Vec<u8> {
        let mut given = vec![
            ("request_id", Value::String(id.into())),
            ("account_id", Value::String(account.into())),
            ("event_time", Value::TimestampMillis(t)),
            ("prompt_tokens", Value::Int(50)),
        ];
        given.extend(extra);
        let v = with_defaults(&self.request, given);
        framed(schema_id("ApiRequest"), &self.request, v)
    }

    fn response(&self, id: &str, account: &str, t: i64) -> Vec<u8> {
        let v = with_defaults(
            &self.response,
            vec![
                ("request_id", Value::String(id.into())),
                ("account_id", Value::String(account.into())),
                ("event_time", Value::TimestampMillis(t)),
                ("completion_tokens", Value::Int(120)),
                ("latency_ms", Value::Int(900)),
            ],
        );
        framed(schema_id("ApiResponse"), &self.response, v)
    }

    fn account(&self, account: &str) -> Vec<u8> {
        self.account_with(account, T0 - 400 * 86_400_000, Vec::new())
    }

    fn account_with(&self, account: &str, created: i64, extra: Vec<(&str, Value)>) -> Vec<u8> {
        let mut given = vec![
            ("account_id", Value::String(account.into())),
            ("created_at", Value::TimestampMillis(created)),
            ("updated_at", Value::TimestampMillis(created)),
        ];
        given.extend(extra);
        let v = with_defaults(&self.account, given);
        framed(schema_id("Account"), &self.account, v)
    }
}

async fn send(producer: &FutureProducer, topic: &str, key: Option<&str>, value: Vec<u8>, ts: i64) {
    let mut record = rdkafka::producer::FutureRecord::<str, [u8]>::to(topic)
        .payload(&value)
        .timestamp(ts);
    if let Some(k) = key {
        record = record.key(k);
    }
    producer
        .send(
            record,
            rdkafka::util::Timeout::After(Duration::from_secs(10)),
        )
        .await
        .unwrap();
}

/// `n` accounts × `per` requests each over [t0, t0 + span), every request
/// answered 2 s later, written in event-time order, except that with
/// `straggle` requests from the last 20 s of a window are written 25 s late
/// (inside the 30 s out-of-orderness), after events of the next window.
async fn good_traffic(
    cfg: &Config,
    producer: &FutureProducer,
    ev: &Events,
    accounts: usize,
    per: usize,
    span: i64,
    straggle: bool,
) -> usize {
    for a in 0..accounts {
        let id = format!("acct-{a}");
        send(
            producer,
            &cfg.topics.accounts,
            Some(&id),
            ev.account(&id),
            T0,
        )
        .await;
    }
    // (write order, topic is requests, account, index, event time)
    let mut writes = Vec::new();
    for i in 0..per {
        for a in 0..accounts {
            let t = T0 + (i as i64 * span) / per as i64 + a as i64;
            let late = straggle && (t - T0) % (10 * MIN) >= 10 * MIN - 20_000;
            writes.push((t + if late { 25_000 } else { 0 }, true, a, i, t));
            writes.push((t + 2_000, false, a, i, t + 2_000));
        }
    }
    writes.sort();
    for (_, is_request, a, i, t) in &writes {
        let id = format!("acct-{a}");
        let rid = format!("r-{a}-{i}");
        if *is_request {
            send(
                producer,
                &cfg.topics.requests,
                Some(&id),
                ev.request(&rid, &id, *t),
                *t,
            )
            .await;
        } else {
            send(
                producer,
                &cfg.topics.responses,
                Some(&id),
                ev.response(&rid, &id, *t),
                *t,
            )
            .await;
        }
    }
    accounts * per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_lands_in_the_dlq_with_reasons_and_good_events_are_scored() {
    let cfg = test_config("dlq");
    create_topics(&client_config(), &specs(&cfg, true))
        .await
        .unwrap();
    let producer = traffic_producer();
    let ev = Events::new();
    // Bad messages first and among the good ones, on both event topics.
    let req = &cfg.topics.requests;
    let resp = &cfg.topics.responses;
    let good_body = ev.request("x", "acct-0", T0);
    let mut wrong_id = good_body.clone();
    wrong_id[1..5].copy_from_slice(&schema_id("Account").to_be_bytes());
    let mut unknown_id = good_body.clone();
    unknown_id[1..5].copy_from_slice(&4_000_000u32.to_be_bytes());
    let mut truncated = good_body.clone();
    truncated.truncate(good_body.len() - 4);
    let bad: Vec<(&str, Option<&str>, Vec<u8>, &str)> = vec![
        (
            req,
            Some("acct-0"),
            b"\xde\xad\xbe\xef garbage".to_vec(),
            "bad_framing",
        ),
        (req, Some("acct-1"), wrong_id, "wrong_schema"),
        (req, Some("acct-2"), unknown_id, "unknown_schema_id"),
        (
            req,
            None,
            ev.request("nokey", "acct-0", T0 + 1_000),
            "missing_key",
        ),
        (req, Some("acct-0"), truncated, "malformed_avro"),
        (resp, Some("acct-1"), vec![0, 0, 0], "bad_framing"),
        (
            resp,
            Some("acct-2"),
            ev.request("r-in-resp", "acct-2", T0),
            "wrong_schema",
        ),
    ];
    for (topic, key, value, _) in &bad[..3] {
        send(&producer, topic, *key, value.clone(), T0).await;
    }
    let good = good_traffic(&cfg, &producer, &ev, 3, 40, 25 * MIN, false).await;
    for (topic, key, value, _) in &bad[3..] {
        send(&producer, topic, *key, value.clone(), T0 + 26 * MIN).await;
    }

    let summary = run_worker(&cfg).await.unwrap();
    assert_eq!(
        summary.metrics.rejected_total(),
        bad.len() as u64,
        "{}",
        summary.metrics
    );

    // Every bad message is in the DLQ, byte for byte, with why and where.
    let dlq = read_all(&cfg.topics.dlq);
    assert_eq!(dlq.len(), bad.len());
    let header = |m: &OwnedMessage, k: &str| -> String {
        let h = m.headers().expect("DLQ records carry headers");
        let found = h
            .iter()
            .find(|h| h.key == k)
            .unwrap_or_else(|| panic!("header {k} missing"));
        String::from_utf8(found.value.unwrap().to_vec()).unwrap()
    };
    let mut expected: Vec<(String, Vec<u8>, String)> = bad
        .iter()
        .map(|(t, _, v, kind)| (t.to_string(), v.clone(), kind.to_string()))
        .collect();
    for m in &dlq {
        let kind = header(m, "dw.error.kind");
        let topic = header(m, "dw.source.topic");
        assert!(!header(m, "dw.error.message").is_empty());
        let offset: i64 = header(m, "dw.source.offset").parse().unwrap();
        let partition: i32 = header(m, "dw.source.partition").parse().unwrap();
        assert!(offset >= 0 && (0..4).contains(&partition));
        let value = m.payload().unwrap_or_default().to_vec();
        let pos = expected
            .iter()
            .position(|(t, v, k)| *t == topic && *v == value && *k == kind)
            .unwrap_or_else(|| panic!("unexpected DLQ record kind={kind} topic={topic}"));
        expected.remove(pos);
    }
    assert!(expected.is_empty(), "not in the DLQ: {expected:?}");

    // Every good event is scored: summed event counts equal what was sent.
    let schema = avsc("RiskScore");
    let scores: Vec<Score> = read_all(&cfg.topics.scores)
        .iter()
        .map(|m| decode_score(m, &schema, schema_id("RiskScore")))
        .collect();
    assert_eq!(
        scores.iter().map(|s| s.event_count).sum::<i64>() as usize,
        good
    );
    assert_eq!(
        scores.iter().map(|s| s.response_count).sum::<i64>() as usize,
        good
    );
    // Scores with requests of their own; the others carry only roll-up
    // features (the hourly and daily jobs), at hour ends and midnight.
    let windows: BTreeSet<i64> = scores
        .iter()
        .filter(|s| s.event_count > 0)
        .map(|s| s.window_start)
        .collect();
    assert_eq!(
        windows.len(),
        3,
        "25 minutes of traffic span three 10-minute windows"
    );
}

fn committed(cfg: &Config) -> BTreeMap<(String, i32), Option<i64>> {
    let mut cc = client_config();
    cc.set("group.id", &cfg.kafka.group_id);
    let consumer: BaseConsumer = cc.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in [&cfg.topics.requests, &cfg.topics.responses] {
        for p in 0..4 {
            tpl.add_partition(t, p);
        }
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    got.elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            ((e.topic().to_string(), e.partition()), o)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_not_committed_ahead_of_delivered_scores() {
    let mut cfg = test_config("commit");
    create_topics(&client_config(), &specs(&cfg, true))
        .await
        .unwrap();
    // A scores topic the broker refuses (an illegal name): every score
    // delivery fails, as it would with a missing topic on a cluster that does
    // not auto-create topics (the local broker auto-creates on produce).
    let good_scores_topic = cfg.topics.scores.clone();
    cfg.topics.scores = format!("{good_scores_topic}!illegal name");
    let producer = traffic_producer();
    let ev = Events::new();
    let good = good_traffic(&cfg, &producer, &ev, 4, 30, 35 * MIN, false).await;

    cfg.worker.produce_timeout = Duration::from_secs(3);
    let err = run_worker(&cfg)
        .await
        .expect_err("scores cannot be delivered");
    assert!(err.to_string().contains(&cfg.topics.scores), "{err}");
    let after_failure = committed(&cfg);
    assert!(
        after_failure.values().all(|o| o.is_none()),
        "offsets were committed although no score was delivered: {after_failure:?}"
    );

    // Once scores can be delivered, the same group resumes and loses nothing.
    cfg.topics.scores = good_scores_topic;
    cfg.worker.produce_timeout = Duration::from_secs(30);
    run_worker(&cfg).await.unwrap();
    let schema = avsc("RiskScore");
    let scores: Vec<Score> = read_all(&cfg.topics.scores)
        .iter()
        .map(|m| decode_score(m, &schema, schema_id("RiskScore")))
        .collect();
    assert_eq!(
        scores.iter().map(|s| s.event_count).sum::<i64>() as usize,
        good
    );
    // Everything was scored, so every partition that has events is
    // committed to its end.
    let after_success = committed(&cfg);
    for topic in [&cfg.topics.requests, &cfg.topics.responses] {
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        for m in read_all(topic) {
            let e = ends.entry(m.partition()).or_default();
            *e = (*e).max(m.offset() + 1);
        }
        assert!(!ends.is_empty());
        for (p, end) in ends {
            assert_eq!(after_success[&(topic.clone(), p)], Some(end), "{topic}/{p}");
        }
    }
}

/// The shipped jobs with every lateness set to 0: emitted windows are not
/// kept for revisions, so offsets commit up to the oldest open window.
fn jobs_without_lateness(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo().join("jobs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "sql" || e == "toml") {
            let text = std::fs::read_to_string(&p).unwrap();
            let text: String = text
                .lines()
                .map(|l| {
                    if l.starts_with("-- lateness:") {
                        "-- lateness: 0s"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(dir.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_open_windows_without_re_emitting_closed_ones() {
    let mut cfg = test_config("resume");
    // Windows not kept after emission: this test pins where the commit is.
    cfg.jobs.dir = jobs_without_lateness("resume-jobs");
    cfg.jobs.scoring = cfg.jobs.dir.join("scoring.toml");
    create_topics(&client_config(), &specs(&cfg, true))
        .await
        .unwrap();
    let producer = traffic_producer();
    let ev = Events::new();
    // 15 minutes: the first window closes (watermark 15m - 30s > 10m + 2m),
    // the second stays open while the worker runs live.
    let good = good_traffic(&cfg, &producer, &ev, 4, 45, 15 * MIN, true).await;

    cfg.worker.exit_at_eof = false;
    let live_cfg = cfg.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        distill_watch::worker::run(&live_cfg, async {
            let _ = stop_rx.await;
        })
        .await
    });
    // The first window's four scores appear while the worker runs live.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while read_all(&cfg.topics.scores).len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "first window never emitted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_tx.send(()).unwrap();
    let live = worker.await.unwrap().unwrap();
    assert_eq!(
        live.metrics.scores_emitted, 4,
        "only the first window may close: {}",
        live.metrics
    );

    // The commit stops at the first event of the still-open window.
    let mut first_open: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in [&cfg.topics.requests, &cfg.topics.responses] {
        for m in read_all(topic) {
            if m.timestamp().to_millis().unwrap() >= T0 + 10 * MIN {
                let e = first_open
                    .entry((topic.clone(), m.partition()))
                    .or_insert(m.offset());
                *e = (*e).min(m.offset());
            }
        }
    }
    let committed_live = committed(&cfg);
    for (tp, open) in &first_open {
        let c = committed_live.get(tp).copied().flatten();
        assert_eq!(
            c,
            Some(*open),
            "{tp:?}: commit must be exactly the open window's first offset"
        );
    }

    // A new worker finishes the range: the open window is emitted with all
    // its events, the closed one is not emitted again.
    cfg.worker.exit_at_eof = true;
    let finish = run_worker(&cfg).await.unwrap();
    assert!(
        finish.metrics.already_handled > 0,
        "stragglers of the emitted window, behind the commit, are recognised: {}",
        finish.metrics
    );
    let schema = avsc("RiskScore");
    let scores: Vec<Score> = read_all(&cfg.topics.scores)
        .iter()
        .map(|m| decode_score(m, &schema, schema_id("RiskScore")))
        .collect();
    let mut per_window: BTreeMap<(String, i64), usize> = BTreeMap::new();
    let mut roll_ups: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for s in &scores {
        // Scores without requests of their own carry roll-up features only
        // (hour ends, midnight): emitted once each too.
        let m = if s.event_count > 0 {
            &mut per_window
        } else {
            &mut roll_ups
        };
        *m.entry((s.account.clone(), s.window_start)).or_default() += 1;
    }
    assert_eq!(
        per_window.len(),
        8,
        "4 accounts x 2 windows: {per_window:?}"
    );
    assert!(
        roll_ups.values().all(|n| *n == 1),
        "roll-up scores emitted once each: {roll_ups:?}"
    );
    assert!(
        per_window.values().all(|n| *n == 1),
        "a window was emitted twice: {per_window:?}"
    );
    assert_eq!(
        scores.iter().map(|s| s.event_count).sum::<i64>() as usize,
        good
    );

    // Byte for byte what one uninterrupted run over the same input emits.
    let mut whole = cfg.clone();
    whole.kafka.group_id = unique_name("resume-whole-group");
    whole.topics.scores = unique_name("resume-whole-scores");
    whole.topics.dlq = unique_name("resume-whole-dlq");
    create_topics(
        &client_config(),
        &[scores_spec(&whole), TopicSpec::new(&whole.topics.dlq, 1)],
    )
    .await
    .unwrap();
    run_worker(&whole).await.unwrap();
    assert_eq!(
        records(&read_all(&cfg.topics.scores)),
        records(&read_all(&whole.topics.scores)),
        "stopped and resumed vs uninterrupted: every record, byte for byte"
    );
}

/// (key, value) of every message, sorted: a whole-record comparison that
/// also sees a record repeated.
fn records(msgs: &[OwnedMessage]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = msgs
        .iter()
        .map(|m| {
            (
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `delivery = "at_least_once"` (no transactions) emits the same records as
/// the default exactly-once delivery, and commits the input to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_delivery_emits_the_same_records_as_exactly_once() {
    let mut cfg = test_config("alo");
    create_topics(&client_config(), &specs(&cfg, true))
        .await
        .unwrap();
    let good = good_traffic(
        &cfg,
        &traffic_producer(),
        &Events::new(),
        4,
        30,
        35 * MIN,
        true,
    )
    .await;
    cfg.worker.delivery = distill_watch::config::Delivery::AtLeastOnce;
    run_worker(&cfg).await.unwrap();
    let mut exactly = cfg.clone();
    exactly.worker.delivery = distill_watch::config::Delivery::ExactlyOnce;
    exactly.kafka.group_id = unique_name("alo-eo-group");
    exactly.topics.scores = unique_name("alo-eo-scores");
    exactly.topics.dlq = unique_name("alo-eo-dlq");
    // Not created: the worker creates its internal checkpoint topic itself.
    exactly.topics.checkpoints = unique_name("alo-eo-checkpoints");
    create_topics(
        &client_config(),
        &[
            scores_spec(&exactly),
            TopicSpec::new(&exactly.topics.dlq, 1),
        ],
    )
    .await
    .unwrap();
    run_worker(&exactly).await.unwrap();
    let consumer: BaseConsumer = client_config().create().unwrap();
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let cp = md
        .topics()
        .iter()
        .find(|t| t.name() == exactly.topics.checkpoints)
        .expect("the worker created its checkpoint topic");
    assert_eq!(cp.partitions().len(), 4, "as many partitions as the input");
    let a = records(&read_all(&cfg.topics.scores));
    assert!(!a.is_empty());
    assert_eq!(a, records(&read_all(&exactly.topics.scores)));
    let schema = avsc("RiskScore");
    let events: i64 = read_all(&cfg.topics.scores)
        .iter()
        .map(|m| decode_score(m, &schema, schema_id("RiskScore")).event_count)
        .sum();
    assert_eq!(events as usize, good);
    let committed = committed(&cfg);
    for topic in [&cfg.topics.requests, &cfg.topics.responses] {
        for m in read_all(topic) {
            let c = committed[&(topic.clone(), m.partition())];
            assert!(
                c > Some(m.offset()),
                "{topic}/{} committed {c:?}",
                m.partition()
            );
        }
    }
}

/// A request 5 minutes into the first window arrives when the watermark is
/// near 25 minutes: within the shipped `harvest` job's 40-minute lateness,
/// so the window's score for that account gets a revision at the boundary
/// after the watermark (30m). Another, 6 minutes into the first window,
/// arrives near 55 minutes: beyond it (60m > 10m + 40m), so it goes to the
/// DLQ as `late_event`. A third, of an account with nothing else in the
/// window, gives that account its first record there (revision 0).
/// Replayed by a new group, every record is the same, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_within_lateness_revises_the_window_and_beyond_goes_to_the_dlq() {
    let cfg = test_config("late");
    create_topics(&client_config(), &specs(&cfg, true))
        .await
        .unwrap();
    let producer = traffic_producer();
    let ev = Events::new();
    for a in 0..2 {
        let id = format!("acct-{a}");
        send(
            &producer,
            &cfg.topics.accounts,
            Some(&id),
            ev.account(&id),
            T0,
        )
        .await;
    }
    // (delivery time, is request, account, request id, event time)
    let mut writes: Vec<(i64, bool, usize, String, i64)> = Vec::new();
    for i in 0..70 {
        for a in 0..2 {
            let t = T0 + i * MIN + a as i64 * 1_000;
            writes.push((t, true, a, format!("r-{a}-{i}"), t));
            writes.push((t + 2_000, false, a, format!("r-{a}-{i}"), t + 2_000));
        }
    }
    let (within, beyond) = (T0 + 5 * MIN + 30_000, T0 + 6 * MIN + 30_000);
    // Account 2 shares account 0's partition (watermarks are per partition).
    let newcomer = (0..)
        .map(|i| format!("acct-new-{i}"))
        .find(|a| partition_of(a.as_bytes(), 4) == partition_of(b"acct-0", 4))
        .unwrap();
    let account = |a: usize| {
        if a == 2 {
            newcomer.clone()
        } else {
            format!("acct-{a}")
        }
    };
    writes.push((T0 + 25 * MIN, true, 0, "late-within".into(), within));
    writes.push((
        T0 + 25 * MIN + 1,
        false,
        0,
        "late-within".into(),
        within + 2_000,
    ));
    writes.push((T0 + 55 * MIN, true, 1, "late-beyond".into(), beyond));
    // An account with no other event in the window: its first record for
    // the window comes from the revision, as revision 0.
    // In acct-0's partition, whose watermark makes it late.
    writes.push((T0 + 25 * MIN + 2, true, 2, "late-new".into(), T0 + 4 * MIN));
    writes.sort();
    for (delivered, is_request, a, rid, t) in &writes {
        let id = account(*a);
        if *is_request {
            send(
                &producer,
                &cfg.topics.requests,
                Some(&id),
                ev.request(rid, &id, *t),
                *delivered,
            )
            .await;
        } else {
            send(
                &producer,
                &cfg.topics.responses,
                Some(&id),
                ev.response(rid, &id, *t),
                *delivered,
            )
            .await;
        }
    }
    let summary = run_worker(&cfg).await.unwrap();
    let m = &summary.metrics;
    // Three late events taken in; one revision (the newcomer's record is
    // its first for the window: revision 0).
    assert_eq!((m.late_revising, m.scores_revised), (3, 1), "{m}");

    let schema = avsc("RiskScore");
    let msgs = read_all(&cfg.topics.scores);
    let first_window: Vec<(Score, Vec<u8>)> = msgs
        .iter()
        .map(|m| {
            (
                decode_score(m, &schema, schema_id("RiskScore")),
                m.key().unwrap().to_vec(),
            )
        })
        .filter(|(s, _)| s.window_start == T0)
        .collect();
    let of = |account: &str, revision: i32| {
        first_window
            .iter()
            .find(|(s, _)| s.account == account && s.revision == revision)
            .unwrap_or_else(|| panic!("{account} revision {revision}: {first_window:?}"))
    };
    let (original, key0) = of("acct-0", 0);
    let (revised, key1) = of("acct-0", 1);
    assert_eq!(original.event_count, 10);
    assert_eq!(
        (revised.event_count, revised.response_count),
        (11, 11),
        "the revision is complete: the window's requests and the late one"
    );
    assert_eq!(
        revised.features, original.features,
        "every feature, not a delta"
    );
    assert_eq!(
        key0, key1,
        "same key: a compacted topic keeps the newest revision"
    );
    assert_eq!(
        first_window.iter().filter(|(s, _)| s.revision > 0).count(),
        1,
        "only the account the late event belongs to is revised: {first_window:?}"
    );
    let (new, _) = of(&newcomer, 0);
    assert_eq!(new.event_count, 1, "first scored by the revision");

    let dlq = read_all(&cfg.topics.dlq);
    let late: Vec<String> = dlq
        .iter()
        .filter(|m| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == "dw.error.kind"))
                .is_some_and(|h| h.value == Some(&b"late_event"[..]))
        })
        .map(|m| {
            let v = m.payload().unwrap();
            let req = apache_avro::from_avro_datum(&ev.request, &mut &v[5..], None).unwrap();
            let Value::Record(f) = req else {
                panic!("a request is a record")
            };
            match &f[0].1 {
                Value::String(id) => id.clone(),
                other => panic!("request_id: {other:?}"),
            }
        })
        .collect();
    assert_eq!(late, vec!["late-beyond".to_string()]);

    // A replay by a new group emits the same records, byte for byte.
    let mut replay = cfg.clone();
    replay.kafka.group_id = unique_name("late-replay-group");
    replay.topics.scores = unique_name("late-replay-scores");
    replay.topics.dlq = unique_name("late-replay-dlq");
    replay.topics.checkpoints = unique_name("late-replay-checkpoints");
    create_topics(
        &client_config(),
        &[scores_spec(&replay), TopicSpec::new(&replay.topics.dlq, 1)],
    )
    .await
    .unwrap();
    run_worker(&replay).await.unwrap();
    assert_eq!(
        records(&read_all(&cfg.topics.scores)),
        records(&read_all(&replay.topics.scores))
    );
}

/// A `ClusterRisk` decoded with apache-avro and `schemas/ClusterRisk.avsc`.
#[derive(Debug, Clone)]
struct Cluster {
    id: String,
    window_start: i64,
    level: String,
    score: f64,
    members: Vec<String>,
    broad: bool,
    features: Vec<(String, Option<f64>)>,
}

fn decode_cluster(m: &OwnedMessage, schema: &Schema) -> Cluster {
    let payload = m.payload().expect("cluster record has a value");
    assert_eq!(
        u32::from_be_bytes(payload[1..5].try_into().unwrap()),
        schema_id("ClusterRisk")
    );
    let Value::Record(fields) =
        apache_avro::from_avro_datum(schema, &mut &payload[5..], None).expect("valid ClusterRisk")
    else {
        panic!("not a record")
    };
    let f: BTreeMap<String, Value> = fields.into_iter().collect();
    let s = |k: &str| match &f[k] {
        Value::String(s) | Value::Enum(_, s) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    let c = Cluster {
        id: s("cluster_id"),
        window_start: match &f["window_start"] {
            Value::TimestampMillis(x) => *x,
            other => panic!("window_start: {other:?}"),
        },
        level: s("level"),
        score: match &f["score"] {
            Value::Double(x) => *x,
            other => panic!("score: {other:?}"),
        },
        members: match &f["members"] {
            Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => panic!("member: {other:?}"),
                })
                .collect(),
            other => panic!("members: {other:?}"),
        },
        broad: matches!(f["broad"], Value::Boolean(true)),
        features: match &f["features"] {
            Value::Array(a) => a
                .iter()
                .map(|v| {
                    let Value::Record(r) = v else {
                        panic!("feature: {v:?}")
                    };
                    let name = match &r[0].1 {
                        Value::String(s) => s.clone(),
                        other => panic!("name: {other:?}"),
                    };
                    let value = match &r[1].1 {
                        Value::Union(_, b) => match **b {
                            Value::Double(x) => Some(x),
                            _ => None,
                        },
                        other => panic!("value: {other:?}"),
                    };
                    (name, value)
                })
                .collect(),
            other => panic!("features: {other:?}"),
        },
    };
    assert_eq!(
        m.key(),
        Some(format!("{}/{}", c.id, c.window_start).as_bytes()),
        "clusters are keyed by cluster id and window"
    );
    c
}

const DAY: i64 = 86_400_000;

/// Thirty hydra accounts (one proxy prefix and client, signed up the same
/// day through the education path, a shared set of templates, one request
/// every ten minutes each), thirty ordinary users and a campus of ten old
/// verified accounts behind one prefix, over `hours` hours from T0. Returns
/// the hydra's accounts.
async fn produce_hydra(cfg: &Config, hours: i64) -> Vec<String> {
    let producer = traffic_producer();
    let ev = Events::new();
    let opt = |v: Value| Value::Union(1, Box::new(v));
    let hydra: Vec<String> = (0..30).map(|i| format!("hydra-{i}")).collect();
    let users: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
    let campus: Vec<String> = (0..10).map(|i| format!("campus-{i}")).collect();
    for (i, a) in hydra.iter().enumerate() {
        let account = ev.account_with(
            a,
            T0 - 3 * DAY + i as i64 * MIN,
            vec![
                ("signup_channel", Value::String("education".into())),
                (
                    "payment_fingerprint",
                    opt(Value::String(format!("card-{a}"))),
                ),
            ],
        );
        send(&producer, &cfg.topics.accounts, Some(a), account, T0).await;
    }
    for (i, a) in users.iter().chain(&campus).enumerate() {
        let account = ev.account_with(
            a,
            T0 - (200 + 37 * i as i64) * DAY,
            vec![
                ("verified", Value::Boolean(true)),
                (
                    "payment_fingerprint",
                    opt(Value::String(format!("card-{a}"))),
                ),
            ],
        );
        send(&producer, &cfg.topics.accounts, Some(a), account, T0).await;
    }
    let mut requests: Vec<Planned> = Vec::new();
    for (i, a) in hydra.iter().enumerate() {
        for k in 0..hours * 6 {
            requests.push((
                T0 + k * 10 * MIN + i as i64 * 19_000,
                a.clone(),
                format!("{a}-{k}"),
                vec![
                    (
                        "client_ip",
                        opt(Value::String(format!("203.0.113.{}", 10 + i))),
                    ),
                    ("user_agent", opt(Value::String("relay-client/2.1".into()))),
                    (
                        "template_fingerprint",
                        opt(Value::Long(100 + (i as i64 + k) % 4)),
                    ),
                    ("prompt_fingerprint", opt(Value::Long(i as i64 * 1_000 + k))),
                    ("cot_elicitation_score", opt(Value::Double(0.8))),
                ],
            ));
        }
    }
    let mut ordinary = |accounts: &[String], ip: &dyn Fn(usize) -> String, per_hour: usize| {
        for (i, a) in accounts.iter().enumerate() {
            let n = (i % 5 + 1) * per_hour * hours as usize;
            for k in 0..n {
                requests.push((
                    T0 + (k as i64 * hours * 60 * MIN) / n as i64 + i as i64 * 13_000,
                    a.clone(),
                    format!("{a}-{k}"),
                    vec![
                        ("client_ip", opt(Value::String(ip(i)))),
                        (
                            "user_agent",
                            opt(Value::String(format!("Mozilla/5.0 ({a})"))),
                        ),
                        (
                            "template_fingerprint",
                            opt(Value::Long(7_000_000 + (i * 1_000 + k) as i64)),
                        ),
                        (
                            "prompt_fingerprint",
                            opt(Value::Long(9_000_000 + (i * 1_000 + k) as i64)),
                        ),
                    ],
                ));
            }
        }
    };
    ordinary(&users, &|i| format!("10.{i}.0.5"), 2);
    ordinary(&campus, &|i| format!("192.0.2.{}", 20 + i), 3);
    requests.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    for (t, a, rid, extra) in requests {
        let request = ev.request_with(&rid, &a, t, extra);
        send(&producer, &cfg.topics.requests, Some(&a), request, t).await;
        let response = ev.response(&rid, &a, t + 2_000);
        send(
            &producer,
            &cfg.topics.responses,
            Some(&a),
            response,
            t + 2_000,
        )
        .await;
    }
    hydra
}

/// A request to send: (event time, account, request id, extra fields).
type Planned = (i64, String, String, Vec<(&'static str, Value)>);

/// Thirty accounts behind one proxy prefix and client, signed up the same
/// day through the education path, sending a shared set of templates, each
/// only once every ten minutes: none reaches `high` on its own. The cluster
/// stage flags them on risk.clusters.v1 and their member scores name the
/// cluster; ordinary users, and a campus of old verified accounts sharing
/// one prefix, are not flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hydra_below_every_account_threshold_is_flagged_as_a_cluster() {
    let cfg = test_config("hydra");
    create_topics(&client_config(), &specs(&cfg, true))
        .await
        .unwrap();
    let hydra = produce_hydra(&cfg, 2).await;
    let summary = run_worker(&cfg).await.unwrap();
    let stage = summary.clusters.expect("the cluster stage ran");
    assert!(stage.member_rows > 0 && stage.marks > 0, "{stage}");

    let clusters: Vec<Cluster> = read_all(&cfg.topics.clusters)
        .iter()
        .map(|m| decode_cluster(m, &avsc("ClusterRisk")))
        .collect();
    let flagged: Vec<&Cluster> = clusters
        .iter()
        .filter(|c| c.level == "high" || c.level == "critical")
        .collect();
    let proxy = flagged
        .iter()
        .find(|c| c.id == "ip_prefix:203.0.113.0/24" && c.window_start == T0)
        .unwrap_or_else(|| {
            let summary: Vec<_> = clusters
                .iter()
                .map(|c| (&c.id, c.window_start, c.score, c.members.len(), &c.features))
                .collect();
            panic!("the proxy prefix is flagged in the first hour: {summary:#?}")
        });
    let mut sorted = hydra.clone();
    sorted.sort();
    assert_eq!(proxy.members, sorted, "every member listed");
    assert!(
        flagged
            .iter()
            .all(|c| c.members.iter().all(|m| m.starts_with("hydra-"))),
        "only the hydra is flagged: {flagged:#?}"
    );
    let nat = clusters
        .iter()
        .find(|c| c.id == "ip_prefix:192.0.2.0/24")
        .unwrap_or_else(|| panic!("the campus prefix is a cluster too: {clusters:#?}"));
    assert!(nat.score < 0.3 && !nat.broad, "{nat:?}");

    let schema = avsc("RiskScore");
    let scores: Vec<Score> = read_all(&cfg.topics.scores)
        .iter()
        .map(|m| decode_score(m, &schema, schema_id("RiskScore")))
        .collect();
    let own_max = scores
        .iter()
        .filter(|s| s.cluster_id.is_none() && s.account.starts_with("hydra-"))
        .map(|s| s.score)
        .fold(0.0, f64::max);
    assert!(
        own_max > 0.0 && own_max < 0.6,
        "each member stays below `high` on its own (highest {own_max})"
    );
    let flagged_ids: BTreeSet<&str> = flagged.iter().map(|c| c.id.as_str()).collect();
    for a in &hydra {
        let named: Vec<&Score> = scores
            .iter()
            .filter(|s| &s.account == a && s.cluster_id.is_some())
            .collect();
        assert!(
            named.iter().any(
                |s| s.cluster_id.as_deref() == Some("ip_prefix:203.0.113.0/24")
                    && s.window_start == T0
                    && (s.level == "high" || s.level == "critical")
            ),
            "{a}'s member score names the proxy cluster: {named:?}"
        );
        assert!(named
            .iter()
            .all(|s| flagged_ids.contains(s.cluster_id.as_deref().unwrap())));
    }
    assert!(
        scores
            .iter()
            .filter(|s| s.cluster_id.is_some())
            .all(|s| s.account.starts_with("hydra-")),
        "no ordinary account gets a member score"
    );
}

/// Resolves once a `read_committed` consumer sees a first record in
/// `topic` (4 partitions).
async fn first_record(topic: String) {
    let mut cc = client_config();
    cc.set("group.id", unique_name("first-record"))
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10");
    let consumer: rdkafka::consumer::StreamConsumer = cc.create().unwrap();
    // Assigned, not subscribed: a group join would take seconds.
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer.recv().await.unwrap();
}

/// The cluster stage stopped after it has published part of its windows
/// and run again by the same group gives, for a `read_committed` consumer,
/// exactly the records of an uninterrupted cluster stage over the same
/// member rows: nothing lost, repeated or emitted partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_stage_emits_every_window_once() {
    let (cfg, model) = hydra_features("clrestart", 6).await;
    // Two cluster-stage groups over the same rows, each with its own outputs.
    let reference = cluster_stage_outputs(&cfg, "clrestart-reference").await;
    let restarted = cluster_stage_outputs(&cfg, "clrestart-restarted").await;
    let m = stage_to_end(&reference, &model).await;
    assert!(m.clusters_emitted > 0 && m.member_scores > 0, "{m}");
    let (first, second) = stage_stopped_then_finished(&restarted, &model).await;
    eprintln!("first run: {first}\nsecond run: {second}");
    assert!(first.commits > 0, "{first}");
    assert!(
        second.clusters_emitted > 0 && second.member_rows > 0,
        "the first run was stopped before its end: {first}"
    );
    assert_eq!(
        first.clusters_emitted + second.clusters_emitted,
        m.clusters_emitted,
        "every window once across the two runs"
    );
    assert_same_stage_outputs(&reference, &restarted, "interrupted vs uninterrupted");
}

/// A hydra's member rows on the features topic: `produce_hydra` over
/// `hours`, then the account stage alone (final marks at its end).
async fn hydra_features(prefix: &str, hours: i64) -> (Config, ClusterModel) {
    use distill_watch::config::Stage;
    let mut cfg = test_config(prefix);
    create_topics(&client_config(), &specs(&cfg, true))
        .await
        .unwrap();
    produce_hydra(&cfg, hours).await;
    cfg.clusters.stage = Stage::Accounts;
    let summary = run_worker(&cfg).await.unwrap();
    assert!(summary.clusters.is_none());
    let model = ClusterModel::load(&cfg.clusters.model).unwrap();
    (cfg, model)
}

const TO_THE_END: StageOptions = StageOptions {
    exit_at_eof: true,
    upstream_done: false,
};

/// A cluster stage run to the end of its input.
async fn stage_to_end(cfg: &Config, model: &ClusterModel) -> StageMetrics {
    run_clusters(cfg, model, TO_THE_END, std::future::pending())
        .await
        .unwrap()
}

/// A cluster stage run live (no end of input) until a first cycle of its
/// is visible to a `read_committed` consumer, with small batches (a cycle
/// per few rows) so the stop falls mid-way; then run again to the end,
/// from its checkpoint.
async fn stage_stopped_then_finished(
    cfg: &Config,
    model: &ClusterModel,
) -> (StageMetrics, StageMetrics) {
    let live = StageOptions {
        exit_at_eof: false,
        upstream_done: false,
    };
    let mut slow = cfg.clone();
    slow.worker.batch_max_messages = 10;
    let first = run_clusters(
        &slow,
        model,
        live,
        first_record(cfg.topics.clusters.clone()),
    )
    .await
    .unwrap();
    (first, stage_to_end(cfg, model).await)
}

/// Two cluster-stage runs published the same cluster records and member
/// scores, byte for byte.
fn assert_same_stage_outputs(a: &Config, b: &Config, what: &str) {
    assert_eq!(
        records(&read_all(&a.topics.clusters)),
        records(&read_all(&b.topics.clusters)),
        "cluster records: {what}"
    );
    assert_eq!(
        records(&read_all(&a.topics.scores)),
        records(&read_all(&b.topics.scores)),
        "member scores: {what}"
    );
}

/// A copy of `source`'s records (features topic, 4 partitions) into a new
/// topic, as a broker that shows aborted records (nisshi) presents the
/// features of an account-stage worker that died mid-cycle: in each
/// partition, some records after the first mark are written in a
/// transaction that is then aborted (a dead worker's last cycle: rows only
/// in partitions 0 and 2, rows and a mark in 1 and 3), then every record
/// from there on again (its successor, from the last checkpoint). Returns
/// the new topic and how many records were written twice.
async fn features_with_a_dead_workers_cycle(source: &str) -> (String, usize) {
    use distill_watch::cluster::decode_feature;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let topic = unique_name("clrepeat-features-copy");
    create_topics(&client_config(), &[TopicSpec::new(&topic, 4)])
        .await
        .unwrap();
    let mut parts: BTreeMap<i32, Vec<OwnedMessage>> = BTreeMap::new();
    for m in read_all(source) {
        parts.entry(m.partition()).or_default().push(m);
    }
    let timeout = Duration::from_secs(30);
    let plain: ThreadedProducer<DefaultProducerContext> = producer_config().create().unwrap();
    let dead: ThreadedProducer<DefaultProducerContext> = client_config()
        .set("transactional.id", unique_name("clrepeat-dead"))
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    dead.init_transactions(timeout).unwrap();
    let put = |p: &ThreadedProducer<DefaultProducerContext>, q: i32, m: &OwnedMessage| {
        let mut r = BaseRecord::<[u8], [u8]>::to(&topic)
            .partition(q)
            .payload(m.payload().unwrap_or_default());
        if let Some(k) = m.key() {
            r = r.key(k);
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
    };
    let mut repeated = 0;
    for (&q, msgs) in &mut parts {
        msgs.sort_by_key(|m| m.offset());
        let is_mark = |m: &OwnedMessage| {
            decode_feature(m.payload().unwrap_or_default())
                .unwrap()
                .member
                .is_none()
        };
        let cut = msgs.iter().position(is_mark).expect("a mark") + 1;
        // Four rows of the next cycle, and in odd partitions its mark too.
        let mut end = cut;
        let mut rows = 0;
        while end < msgs.len() && rows < 4 {
            rows += usize::from(!is_mark(&msgs[end]));
            end += 1;
        }
        if q % 2 == 1 {
            while end < msgs.len() && !is_mark(&msgs[end]) {
                end += 1;
            }
            end = (end + 1).min(msgs.len());
        }
        assert!(rows == 4, "partition {q} has rows after its first mark");
        for m in &msgs[..cut] {
            put(&plain, q, m);
        }
        plain.flush(timeout).unwrap();
        dead.begin_transaction().unwrap();
        for m in &msgs[cut..end] {
            put(&dead, q, m);
        }
        // Flushed first: librdkafka purges what is still queued at abort.
        dead.flush(timeout).unwrap();
        dead.abort_transaction(timeout).unwrap();
        repeated += end - cut;
        for m in &msgs[cut..] {
            put(&plain, q, m);
        }
        plain.flush(timeout).unwrap();
    }
    (topic, repeated)
}

/// A cluster-stage run of `cfg`'s features with its own group and output
/// topics.
async fn cluster_stage_outputs(cfg: &Config, name: &str) -> Config {
    let mut c = cfg.clone();
    c.clusters.group = unique_name(name);
    c.topics.clusters = unique_name(&format!("{name}-clusters"));
    c.topics.scores = unique_name(&format!("{name}-scores"));
    create_topics(
        &client_config(),
        &[
            TopicSpec::new(&c.topics.clusters, 4),
            TopicSpec::new(&c.topics.scores, 4),
        ],
    )
    .await
    .unwrap();
    c
}

/// Member rows that reach the cluster stage twice (a broker showing the
/// aborted transaction of an account-stage worker that died mid-cycle,
/// then its successor emitting the cycle again) count once: the cluster
/// records and member scores are byte for byte those of the clean
/// features topic, also when the cluster stage itself is stopped midway
/// and resumes from its checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_rows_repeated_after_a_dead_upstream_worker_count_once() {
    let (cfg, model) = hydra_features("clrepeat", 3).await;
    let (copy, written_twice) = features_with_a_dead_workers_cycle(&cfg.topics.features).await;
    let shown = read_all(&copy).len() - read_all(&cfg.topics.features).len();
    if broker_is_nisshi() {
        assert_eq!(shown, written_twice, "nisshi shows aborted records");
    }

    let reference = cluster_stage_outputs(&cfg, "clrepeat-reference").await;
    let m = stage_to_end(&reference, &model).await;
    assert!(m.clusters_emitted > 0 && m.member_scores > 0, "{m}");
    assert_eq!(m.repeated_rows, 0, "{m}");

    let mut repeated = cluster_stage_outputs(&cfg, "clrepeat-repeated").await;
    repeated.topics.features = copy;
    // Stopped once its first cycle is visible, then run to the end: the
    // second run starts from the checkpointed offset and marks.
    let (first, second) = stage_stopped_then_finished(&repeated, &model).await;
    eprintln!("reference: {m}\nfirst run: {first}\nsecond run: {second}");
    assert_same_stage_outputs(&reference, &repeated, "with repeated rows vs without");
    if shown > 0 {
        assert!(
            first.repeated_rows + second.repeated_rows > 0,
            "the repeats were seen"
        );
    }
}
