//! Whole-generator properties: determinism, wire format, delivery order,
//! ground truth, and that every injected streaming fault is counted by the
//! worker's stages exactly as injected.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::OnceLock;

use apache_avro::types::Value;
use distill_watch::process::Detector;
use distill_watch::schemas::{unframe, ContractSchema, SchemaSet};
use distill_watch::simulate::score_stream;

use crate::{generate, Record, Scenario, Traffic};

fn ci() -> &'static Scenario {
    static S: OnceLock<Scenario> = OnceLock::new();
    S.get_or_init(|| Scenario::builtin("ci").unwrap())
}

fn traffic() -> &'static Traffic {
    static T: OnceLock<Traffic> = OnceLock::new();
    T.get_or_init(|| generate(ci(), 7, 0.5))
}

/// A decoded record, field by field (shared by the populations' tests).
pub(crate) type Row = BTreeMap<String, Value>;

/// Decode one generated record with apache-avro: Confluent framing with the
/// schema's id, exactly one datum.
pub(crate) fn decode(record: &Record, schema: &ContractSchema) -> Row {
    let (id, mut body) = unframe(&record.value).expect("Confluent framing");
    assert_eq!(id, schema.id);
    let v = apache_avro::from_avro_datum(&schema.avro, &mut body, None).expect("valid Avro");
    assert!(body.is_empty(), "one datum per record");
    let Value::Record(fields) = v else {
        panic!("not a record")
    };
    fields.into_iter().collect()
}

fn s(row: &Row, k: &str) -> String {
    match &row[k] {
        Value::String(s) => s.clone(),
        Value::Union(_, v) => match v.as_ref() {
            Value::String(s) => s.clone(),
            other => panic!("{k}: {other:?}"),
        },
        Value::Enum(_, s) => s.clone(),
        other => panic!("{k}: {other:?}"),
    }
}

#[test]
fn same_inputs_give_identical_bytes_and_another_seed_does_not() {
    let a = generate(ci(), 7, 0.2);
    let b = generate(ci(), 7, 0.2);
    assert_eq!(a, b);
    let c = generate(ci(), 8, 0.2);
    assert_ne!(a.requests, c.requests);
}

#[test]
fn every_record_decodes_against_its_schema_and_is_keyed_by_account() {
    let set = SchemaSet::builtin();
    let t = traffic();
    assert!(t.requests.len() > 1_000, "{} requests", t.requests.len());
    for r in &t.accounts {
        assert_eq!(s(&decode(r, &set.account), "account_id"), r.key);
    }
    for r in &t.requests {
        assert_eq!(s(&decode(r, &set.request), "account_id"), r.key);
    }
    for r in &t.responses {
        assert_eq!(s(&decode(r, &set.response), "account_id"), r.key);
    }
}

#[test]
fn delivery_is_ordered_and_never_before_the_event() {
    let t = traffic();
    for list in [&t.requests, &t.responses] {
        assert!(list.windows(2).all(|w| w[0].deliver_ms <= w[1].deliver_ms));
        assert!(list.iter().all(|r| r.deliver_ms >= r.event_time_ms));
    }
    // Some records were delivered late: realism is on by default.
    assert!(t.requests.iter().any(|r| r.deliver_ms > r.event_time_ms));
}

#[test]
fn without_faults_every_request_has_one_timely_response() {
    let mut quiet = ci().clone();
    quiet.realism = crate::Realism::off();
    let t = generate(&quiet, 3, 0.2);
    assert_eq!(t.requests.len(), t.responses.len());
    assert_eq!(t.injected.exchanges as usize, t.requests.len());
    let set = SchemaSet::builtin();
    let req_time: HashMap<String, i64> = t
        .requests
        .iter()
        .map(|r| (s(&decode(r, &set.request), "request_id"), r.event_time_ms))
        .collect();
    let delay = quiet.realism.max_response_delay.as_millis() as i64;
    for r in &t.responses {
        let id = s(&decode(r, &set.response), "request_id");
        let sent = req_time[&id];
        assert!(
            (sent..=sent + delay).contains(&r.event_time_ms),
            "response {id} at {} for a request at {sent}",
            r.event_time_ms
        );
    }
}

#[test]
fn truth_lists_every_style_and_each_accounts_first_request() {
    let t = traffic();
    let styles: BTreeSet<&str> = t
        .truth
        .iter()
        .filter(|r| r.label.is_campaign())
        .map(|r| r.label.group.as_str())
        .collect();
    for style in crate::campaigns::Campaign::STYLES {
        assert!(
            styles.contains(style),
            "ci scenario lacks {style}: {styles:?}"
        );
    }
    let populations: BTreeSet<&str> = t
        .truth
        .iter()
        .filter(|r| !r.label.is_campaign())
        .map(|r| r.label.group.as_str())
        .collect();
    assert!(populations.len() >= 8, "{populations:?}");
    let mut first: HashMap<&str, i64> = HashMap::new();
    for r in &t.requests {
        let e = first.entry(r.key.as_str()).or_insert(r.event_time_ms);
        *e = (*e).min(r.event_time_ms);
    }
    assert_eq!(
        first.len(),
        t.truth.len(),
        "truth lists exactly the accounts with traffic"
    );
    for row in &t.truth {
        assert_eq!(
            row.first_request_ms,
            first.get(row.account_id.as_str()).copied()
        );
    }
}

/// Events older than the newest already delivered on their side: what the
/// worker counts as out of order, for one partition.
pub fn expected_out_of_order(records: &[&Record]) -> u64 {
    let mut max = i64::MIN;
    let mut n = 0;
    for r in records {
        if r.event_time_ms < max {
            n += 1;
        }
        max = max.max(r.event_time_ms);
    }
    n
}

/// The worker's stages count every injected fault exactly as injected
/// (in memory, one partition; the integration tests do it on a broker).
#[tokio::test(flavor = "multi_thread")]
async fn every_injected_fault_is_counted_by_the_worker_stages() {
    // The ci scenario injects every fault often enough to show a miscount.
    let noisy = ci();
    let t = generate(noisy, 11, 0.5);
    let inj = t.injected;
    for (name, n) in inj.rows() {
        assert!(n > 0, "nothing injected for {name}: {inj:?}");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let detector = Detector::load(
        &root.join("jobs"),
        &root.join("jobs/scoring.toml"),
        noisy.realism.max_response_delay.as_millis() as i64,
    )
    .await
    .unwrap();
    let input = t.sim_input();
    let out = score_stream(
        &detector,
        &input,
        noisy.realism.out_of_orderness.as_millis() as i64,
    )
    .await
    .unwrap();
    let m = &out.metrics;
    assert_eq!(
        m.rejected_total() + m.late_revising,
        inj.late_events(),
        "only late events are rejected (or, within a job's lateness, revise a window): {m}"
    );
    assert!(
        m.late_revising > 0 && m.rejected_total() > 0,
        "the shipped jobs' lateness takes some late events and not others: {m}"
    );
    for (what, injected, counted) in inj.against(m) {
        assert_eq!(counted, injected, "{what}: {m}\n{inj:?}");
    }
    let reqs: Vec<&Record> = t.requests.iter().collect();
    let resps: Vec<&Record> = t.responses.iter().collect();
    assert_eq!(m.out_of_order_requests, expected_out_of_order(&reqs), "{m}");
    assert_eq!(
        m.out_of_order_responses,
        expected_out_of_order(&resps),
        "{m}"
    );
    assert!(
        m.out_of_order_requests >= inj.reordered_requests / 2,
        "{m}\n{inj:?}"
    );
    // First scores of each window; revisions count a window's requests again.
    let scored: i64 = out
        .scores
        .iter()
        .filter(|s| s.revision == 0)
        .map(|s| s.event_count)
        .sum();
    assert_eq!(scored as u64, inj.requests_scored());
    let revised = out.scores.iter().filter(|s| s.revision > 0).count() as u64;
    assert_eq!(revised, m.scores_revised, "{m}");
    assert!(
        revised > 0,
        "late events within the lateness revise scores: {m}"
    );
}

/// Accounts and requests of every shipped scenario, per population and
/// campaign; run with
/// `cargo test --release -p distill-watch-traffic scenario_volumes -- --ignored --nocapture`.
#[test]
#[ignore]
fn scenario_volumes() {
    for (name, _) in crate::scenario::BUILTIN {
        let s = Scenario::builtin(name).unwrap();
        let t = generate(&s, s.seed, 1.0);
        let mut by_group: BTreeMap<(bool, &str), (usize, usize)> = BTreeMap::new();
        let group: HashMap<&str, (bool, &str)> = t
            .truth
            .iter()
            .map(|r| {
                (
                    r.account_id.as_str(),
                    (r.label.is_campaign(), r.label.group.as_str()),
                )
            })
            .collect();
        for r in &t.truth {
            by_group.entry(group[r.account_id.as_str()]).or_default().0 += 1;
        }
        for r in &t.requests {
            if let Some(g) = group.get(r.key.as_str()) {
                by_group.entry(*g).or_default().1 += 1;
            }
        }
        println!(
            "{name}: {} active accounts, {} requests",
            t.truth.len(),
            t.requests.len()
        );
        for ((campaign, g), (accounts, requests)) in &by_group {
            let kind = if *campaign { "campaign" } else { "benign" };
            println!("  {kind:<8} {g:<20} {accounts:>6} accounts {requests:>8} requests");
        }
    }
}
