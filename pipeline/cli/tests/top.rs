//! `distill-watch top --once` against real records on the test broker: the
//! ranking, a revision replacing its window, a newer window replacing an
//! older one, and an undecodable record counted, not fatal.

use std::process::Command;

use apache_avro::types::Value;
use distill_watch::schemas::{encode_framed, record_with_defaults, SchemaSet};
use distill_watch::topics::TopicSpec;
use integration_tests::{broker, create_topics, produce, producer_config, unique_name, Record};

fn reason(feature: &str, value: f64, contribution: f64) -> Value {
    Value::Record(vec![
        ("feature".into(), Value::String(feature.into())),
        ("value".into(), Value::Double(value)),
        ("contribution".into(), Value::Double(contribution)),
    ])
}

fn level(name: &str) -> Value {
    let i = ["low", "elevated", "high", "critical"]
        .iter()
        .position(|l| *l == name)
        .unwrap();
    Value::Enum(i as u32, name.into())
}

fn score(topic: &str, account: &str, start: i64, s: f64, lvl: &str, revision: i32) -> Record {
    let set = SchemaSet::builtin();
    let v = record_with_defaults(
        &set.risk_score.avro,
        vec![
            ("account_id", Value::String(account.into())),
            ("window_start", Value::TimestampMillis(start)),
            ("window_end", Value::TimestampMillis(start + 600_000)),
            ("score", Value::Double(s)),
            ("level", level(lvl)),
            ("reasons", Value::Array(vec![reason("burst_rate", 7.0, s)])),
            ("model_version", Value::String("test".into())),
            ("event_count", Value::Long(10)),
            ("revision", Value::Int(revision)),
        ],
    );
    Record {
        topic: topic.into(),
        partition: None,
        key: Some(format!("{account}/{start}").into_bytes()),
        value: encode_framed(&set.risk_score, v).unwrap(),
    }
}

fn cluster(topic: &str, id: &str, s: f64, lvl: &str) -> Record {
    let set = SchemaSet::builtin();
    let (kind, key) = id.split_once(':').unwrap();
    let v = record_with_defaults(
        &set.cluster_risk.avro,
        vec![
            ("cluster_id", Value::String(id.into())),
            ("kind", Value::String(kind.into())),
            ("key", Value::String(key.into())),
            ("window_start", Value::TimestampMillis(0)),
            ("window_end", Value::TimestampMillis(600_000)),
            ("score", Value::Double(s)),
            ("level", level(lvl)),
            (
                "reasons",
                Value::Array(vec![reason("young_account_share", 1.0, s)]),
            ),
            (
                "members",
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            ),
            ("member_count", Value::Long(2)),
            ("requests", Value::Long(20)),
            ("model_version", Value::String("test".into())),
        ],
    );
    Record {
        topic: topic.into(),
        partition: None,
        key: Some(format!("{id}/0").into_bytes()),
        value: encode_framed(&set.cluster_risk, v).unwrap(),
    }
}

#[test]
fn top_once_ranks_the_newest_revision_of_the_newest_window() {
    let scores = unique_name("top-scores");
    let clusters = unique_name("top-clusters");
    create_topics(&[TopicSpec::new(&scores, 2), TopicSpec::new(&clusters, 1)]);
    let mut records = vec![
        score(&scores, "acct-a", 0, 0.30, "elevated", 0),
        score(&scores, "acct-a", 0, 0.95, "critical", 1),
        score(&scores, "acct-b", 0, 0.60, "high", 0),
        score(&scores, "acct-c", 0, 0.90, "critical", 0),
        score(&scores, "acct-c", 600_000, 0.10, "low", 0),
        cluster(&clusters, "org:o1", 0.70, "high"),
        cluster(&clusters, "payment:p1", 0.20, "low"),
    ];
    records.push(Record {
        topic: scores.clone(),
        partition: None,
        key: None,
        value: b"not avro".to_vec(),
    });
    produce(&producer_config(), &records);

    let out = Command::new(env!("CARGO_BIN_EXE_distill-watch"))
        .args(["top", "--once", "--log", "warn"])
        .env("DISTILL_WATCH_KAFKA_BOOTSTRAP_SERVERS", broker())
        .env("DISTILL_WATCH_TOPICS_SCORES", &scores)
        .env("DISTILL_WATCH_TOPICS_CLUSTERS", &clusters)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("records 8 (undecodable 1"), "{stdout}");
    assert!(
        stdout.contains("accounts 3: 1 low, 0 elevated, 1 high, 1 critical"),
        "{stdout}"
    );
    let line = |needle: &str| {
        stdout
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{stdout}"))
    };
    // acct-a's revision 1 (0.95) replaced 0.30; acct-c's newer window (0.10)
    // replaced its 0.90.
    assert!(line("acct-a") < line("acct-b") && line("acct-b") < line("acct-c"));
    let a = &stdout.lines().nth(line("acct-a")).unwrap();
    assert!(
        a.contains("0.950 critical") && a.contains("burst_rate=7 +0.95"),
        "{a}"
    );
    let c = &stdout.lines().nth(line("acct-c")).unwrap();
    assert!(c.contains("0.100 low") && c.contains("    1 "), "{c}");
    assert!(line("org:o1") < line("payment:p1"), "{stdout}");
}
