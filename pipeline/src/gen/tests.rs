//! Tests of the generator: determinism, schema conformance, and that each
//! population has the statistics the detectors are meant to separate on.
//! Everything is computed from the decoded Avro records, as a consumer sees
//! them, not from the generator's internals.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use apache_avro::types::Value;

use super::benign::{APP_BACKEND, CHAT_USER, ENTERPRISE_BATCH, EVAL_HARNESS, LAUNCH_BURST};
use super::campaigns::{COT_HARVEST, COT_HARVESTER, HYDRA, HYDRA_MEMBER, LOGIT_EXTRACTOR};
use super::dist::{DAY_MS, MINUTE_MS};
use super::*;
use crate::schemas::{unframe, ContractSchema, SchemaSet};

type Row = BTreeMap<String, Value>;

fn test_config() -> GenConfig {
    GenConfig {
        scale: 0.2,
        ..GenConfig::default()
    }
}

fn traffic() -> &'static Traffic {
    static T: OnceLock<Traffic> = OnceLock::new();
    T.get_or_init(|| generate(&test_config()))
}

/// Decode one framed record, checking the schema id and that the body is
/// consumed exactly.
fn decode(record: &Record, schema: &ContractSchema) -> Row {
    let (id, body) = unframe(&record.value).expect("Confluent framing");
    assert_eq!(id, schema.id, "{} schema id", schema.name);
    let mut reader = body;
    let value = apache_avro::from_avro_datum(&schema.avro, &mut reader, None)
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", schema.name));
    assert!(reader.is_empty(), "{}: trailing bytes", schema.name);
    match value {
        Value::Record(fields) => fields
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Union(_, inner) => *inner,
                    other => other,
                };
                (k, v)
            })
            .collect(),
        other => panic!("not a record: {other:?}"),
    }
}

struct Decoded {
    accounts: Vec<Row>,
    requests: Vec<Row>,
    responses: Vec<Row>,
    population: HashMap<String, String>,
}

fn decoded() -> &'static Decoded {
    static D: OnceLock<Decoded> = OnceLock::new();
    D.get_or_init(|| {
        let t = traffic();
        let set = SchemaSet::builtin();
        Decoded {
            accounts: t.accounts.iter().map(|r| decode(r, &set.account)).collect(),
            requests: t.requests.iter().map(|r| decode(r, &set.request)).collect(),
            responses: t
                .responses
                .iter()
                .map(|r| decode(r, &set.response))
                .collect(),
            population: t
                .truth
                .iter()
                .map(|r| (r.account_id.clone(), r.population.clone()))
                .collect(),
        }
    })
}

fn s(row: &Row, k: &str) -> String {
    match &row[k] {
        Value::String(x) => x.clone(),
        Value::Enum(_, x) => x.clone(),
        other => panic!("{k}: not a string: {other:?}"),
    }
}

fn opt_s(row: &Row, k: &str) -> Option<String> {
    match &row[k] {
        Value::Null => None,
        _ => Some(s(row, k)),
    }
}

fn l(row: &Row, k: &str) -> i64 {
    opt_l(row, k).unwrap_or_else(|| panic!("{k} is null"))
}

fn opt_l(row: &Row, k: &str) -> Option<i64> {
    match &row[k] {
        Value::Null => None,
        Value::Int(x) => Some(i64::from(*x)),
        Value::Long(x) | Value::TimestampMillis(x) => Some(*x),
        other => panic!("{k}: not an integer: {other:?}"),
    }
}

fn opt_f(row: &Row, k: &str) -> Option<f64> {
    match &row[k] {
        Value::Null => None,
        Value::Double(x) => Some(*x),
        other => panic!("{k}: not a double: {other:?}"),
    }
}

fn b(row: &Row, k: &str) -> bool {
    match &row[k] {
        Value::Boolean(x) => *x,
        other => panic!("{k}: not a boolean: {other:?}"),
    }
}

/// Requests of each account of `population`, in event-time order.
fn by_account(population: &str) -> BTreeMap<String, Vec<&'static Row>> {
    let d = decoded();
    let mut out: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in &d.requests {
        let acct = s(r, "account_id");
        if d.population[&acct] == population {
            out.entry(acct).or_default().push(r);
        }
    }
    out
}

fn inter_arrival_cv(rows: &[&Row]) -> f64 {
    let times: Vec<f64> = rows.iter().map(|r| l(r, "event_time") as f64).collect();
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    var.sqrt() / mean
}

/// Requests per tumbling 10-minute window aligned to the range start.
fn per_10min(rows: &[&Row]) -> BTreeMap<i64, usize> {
    let start = test_config().start_ms;
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry((l(r, "event_time") - start) / (10 * MINUTE_MS))
            .or_default() += 1;
    }
    out
}

fn share(rows: &[&Row], f: impl Fn(&Row) -> bool) -> f64 {
    rows.iter().filter(|r| f(r)).count() as f64 / rows.len() as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[test]
fn same_config_gives_identical_bytes_and_another_seed_does_not() {
    let again = generate(&test_config());
    assert!(again == *traffic(), "generation is not deterministic");
    let other = generate(&GenConfig {
        seed: 43,
        ..test_config()
    });
    assert_ne!(other.requests, traffic().requests);
    assert_ne!(other.truth, traffic().truth);
}

#[test]
fn default_config_is_fixed() {
    let cfg = GenConfig::default();
    assert_eq!(cfg.seed, 42);
    assert_eq!(cfg.start_ms, 1_793_577_600_000); // 2026-11-02T00:00:00Z
    assert_eq!(cfg.duration_ms, 2 * 60 * MINUTE_MS);
    assert_eq!(cfg.scale, 1.0);
}

#[test]
fn every_record_decodes_against_its_schema_and_keys_match() {
    let t = traffic();
    let d = decoded();
    for (rec, row) in t.accounts.iter().zip(&d.accounts) {
        assert_eq!(rec.key, s(row, "account_id"));
        assert_eq!(rec.event_time_ms, l(row, "updated_at"));
    }
    for (rec, row) in t.requests.iter().zip(&d.requests) {
        assert_eq!(rec.key, s(row, "account_id"));
        assert_eq!(rec.event_time_ms, l(row, "event_time"));
    }
    for (rec, row) in t.responses.iter().zip(&d.responses) {
        assert_eq!(rec.key, s(row, "account_id"));
        assert_eq!(rec.event_time_ms, l(row, "event_time"));
    }
    assert_eq!(d.accounts.len(), t.truth.len());
}

#[test]
fn requests_and_responses_are_ordered_paired_and_bounded() {
    let cfg = test_config();
    let t = traffic();
    let d = decoded();
    assert!(t
        .requests
        .windows(2)
        .all(|w| w[0].event_time_ms <= w[1].event_time_ms));
    assert!(t
        .responses
        .windows(2)
        .all(|w| w[0].event_time_ms <= w[1].event_time_ms));
    assert_eq!(t.requests.len(), t.responses.len());

    let mut requests: HashMap<String, &Row> = HashMap::new();
    for r in &d.requests {
        let t = l(r, "event_time");
        assert!((cfg.start_ms..cfg.start_ms + cfg.duration_ms).contains(&t));
        assert!(
            d.population.contains_key(&s(r, "account_id")),
            "unknown account"
        );
        assert!(
            requests.insert(s(r, "request_id"), r).is_none(),
            "duplicate request_id"
        );
    }
    let mut answered = HashSet::new();
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for resp in &d.responses {
        let id = s(resp, "request_id");
        let req = requests.get(&id).expect("response to an unknown request");
        assert!(answered.insert(id), "two responses to one request");
        assert_eq!(s(resp, "account_id"), s(req, "account_id"));
        let latency = l(resp, "latency_ms");
        assert!((1..=120_000).contains(&latency), "latency {latency}");
        assert_eq!(l(resp, "event_time"), l(req, "event_time") + latency);
        let status = s(resp, "status");
        if status == "ok" {
            assert!(latency >= 300, "ok response faster than a model can answer");
            assert!(opt_s(resp, "finish_reason").is_some());
        }
        *statuses.entry(status).or_default() += 1;
    }
    let ok = statuses["ok"] as f64 / d.responses.len() as f64;
    assert!(ok > 0.95, "ok share {ok}");
    assert!(statuses["rate_limited"] > 0 && statuses["error"] > 0);
}

#[test]
fn accounts_are_created_before_the_range_and_campaigns_recently() {
    let cfg = test_config();
    let d = decoded();
    for a in &d.accounts {
        let created = l(a, "created_at");
        assert_eq!(created, l(a, "updated_at"));
        assert_eq!(l(a, "version"), 1);
        let age_days = (cfg.start_ms - created) as f64 / DAY_MS as f64;
        let pop = d.population[&s(a, "account_id")].as_str();
        match pop {
            COT_HARVESTER | LOGIT_EXTRACTOR | HYDRA_MEMBER => {
                assert!((1.0..=10.0).contains(&age_days), "{pop} age {age_days}")
            }
            LAUNCH_BURST => assert!((12.0..=16.0).contains(&age_days)),
            _ => assert!(age_days >= 59.0, "{pop} age {age_days}"),
        }
        if pop == ENTERPRISE_BATCH {
            assert!(b(a, "verified"));
            assert_eq!(s(a, "tier"), "enterprise");
        }
    }
}

#[test]
fn hydra_members_share_payment_and_stay_under_per_account_thresholds() {
    let d = decoded();
    let members: Vec<&Row> = d
        .accounts
        .iter()
        .filter(|a| d.population[&s(a, "account_id")] == HYDRA_MEMBER)
        .collect();
    assert!(members.len() >= 30, "{} members", members.len());
    let payments: BTreeSet<_> = members
        .iter()
        .map(|a| opt_s(a, "payment_fingerprint"))
        .collect();
    assert_eq!(payments.len(), 1);
    assert!(payments.iter().all(Option::is_some));
    let orgs: BTreeSet<_> = members.iter().map(|a| opt_s(a, "org_id")).collect();
    assert!((3..=4).contains(&orgs.len()), "{} orgs", orgs.len());
    let created: Vec<i64> = members.iter().map(|a| l(a, "created_at")).collect();
    let spread = created.iter().max().unwrap() - created.iter().min().unwrap();
    assert!(spread <= 2 * DAY_MS);
    let inconsistent = share(&members, |a| {
        opt_s(a, "country") != opt_s(a, "billing_country")
    });
    assert!(inconsistent > 0.5, "billing mismatch share {inconsistent}");

    let cfg = test_config();
    let mid = cfg.start_ms + cfg.duration_ms / 2;
    let traffic = by_account(HYDRA_MEMBER);
    let (mut first_half_only, mut second_half_only) = (0, 0);
    let mut all: Vec<&Row> = Vec::new();
    for rows in traffic.values() {
        for (_, n) in per_10min(rows) {
            assert!(n < 60, "hydra member with {n} requests in 10 minutes");
        }
        let first = l(rows[0], "event_time");
        let last = l(rows[rows.len() - 1], "event_time");
        let end = cfg.start_ms + cfg.duration_ms;
        if last < end - 20 * MINUTE_MS {
            assert!(
                last < mid + 10 * MINUTE_MS,
                "stopped member ran past mid-range"
            );
            first_half_only += 1;
        }
        if first > cfg.start_ms + 20 * MINUTE_MS {
            assert!(first > mid - 15 * MINUTE_MS, "replacement started early");
            second_half_only += 1;
        }
        all.extend(rows);
    }
    assert!(first_half_only >= 1 && second_half_only >= 1);
    assert_eq!(
        first_half_only, second_half_only,
        "every stopped member is replaced"
    );
    let cot = share(&all, |r| {
        opt_f(r, "cot_elicitation_score").unwrap_or(0.0) >= 0.7
    });
    assert!((0.65..0.85).contains(&cot), "hydra cot share {cot}");
    let non_english = share(&all, |r| {
        opt_s(r, "prompt_language").as_deref() != Some("en")
    });
    assert!(non_english > 0.5);
    let templates: BTreeSet<_> = all
        .iter()
        .filter(|r| opt_f(r, "cot_elicitation_score").unwrap_or(0.0) >= 0.7)
        .map(|r| opt_l(r, "template_fingerprint"))
        .collect();
    assert!(
        templates.len() <= 4,
        "{} campaign templates",
        templates.len()
    );
}

#[test]
fn cot_harvesters_look_like_reasoning_harvesting() {
    let cfg = test_config();
    let mid = cfg.start_ms + cfg.duration_ms / 2;
    let d = decoded();
    let completion: HashMap<String, i64> = d
        .responses
        .iter()
        .filter(|r| s(r, "status") == "ok")
        .map(|r| (s(r, "request_id"), l(r, "completion_tokens")))
        .collect();
    for (acct, rows) in by_account(COT_HARVESTER) {
        let cot = share(&rows, |r| {
            opt_f(r, "cot_elicitation_score").unwrap_or(0.0) >= 0.75
        });
        assert!(cot > 0.6, "{acct}: cot share {cot}");
        assert!(rows.iter().all(|r| l(r, "conversation_turns") == 1));
        let cv = inter_arrival_cv(&rows);
        assert!(cv < 0.5, "{acct}: cv {cv}");
        let mut templates: HashMap<i64, usize> = HashMap::new();
        let mut prompts = HashSet::new();
        for r in &rows {
            *templates.entry(l(r, "template_fingerprint")).or_default() += 1;
            prompts.insert(l(r, "prompt_fingerprint"));
        }
        let top = *templates.values().max().unwrap() as f64 / rows.len() as f64;
        assert!(
            (0.15..=0.55).contains(&top),
            "{acct}: top template share {top}"
        );
        let duplicates = 1.0 - prompts.len() as f64 / rows.len() as f64;
        assert!(
            (0.05..=0.3).contains(&duplicates),
            "{acct}: duplicates {duplicates}"
        );
        let ratios: Vec<f64> = rows
            .iter()
            .filter_map(|r| {
                let c = completion.get(&s(r, "request_id"))?;
                Some(*c as f64 / l(r, "prompt_tokens") as f64)
            })
            .collect();
        assert!(median(ratios) > 4.0);
        for (window, n) in per_10min(&rows) {
            if window > 0 && window < 11 {
                assert!(
                    (150..=450).contains(&n),
                    "{acct}: {n} requests in 10 minutes"
                );
            }
        }
        let early: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| l(r, "event_time") < mid)
            .collect();
        let late: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| l(r, "event_time") >= mid)
            .collect();
        assert_eq!(share(&early, |r| s(r, "model") == "atlas-4"), 0.0);
        let pivot = share(&late, |r| s(r, "model") == "atlas-4");
        assert!((0.3..=0.7).contains(&pivot), "{acct}: pivot share {pivot}");
    }
}

#[test]
fn logit_extractors_repeat_few_prompts_with_logit_bias() {
    for (acct, rows) in by_account(LOGIT_EXTRACTOR) {
        assert!(rows.iter().all(|r| b(r, "logprobs")
            && l(r, "top_logprobs") == 20
            && opt_l(r, "max_tokens") == Some(1)
            && opt_f(r, "temperature") == Some(0.0)
            && (50..=300).contains(&l(r, "logit_bias_size"))));
        let prompts: HashSet<i64> = rows.iter().map(|r| l(r, "prompt_fingerprint")).collect();
        assert!(prompts.len() as f64 / (rows.len() as f64) < 0.05, "{acct}");
        let rate = rows.len() as f64 / 12.0;
        assert!(
            (350.0..=850.0).contains(&rate),
            "{acct}: {rate} per 10 minutes"
        );
    }
}

#[test]
fn chat_users_are_bursty_multi_turn_and_diverse() {
    let mut all: Vec<&Row> = Vec::new();
    let mut cvs = Vec::new();
    for rows in by_account(CHAT_USER).values() {
        for (_, n) in per_10min(rows) {
            assert!(n <= 45, "chat user with {n} requests in 10 minutes");
        }
        if rows.len() >= 10 {
            cvs.push(inter_arrival_cv(rows));
        }
        all.extend(rows);
    }
    let cv = median(cvs);
    assert!(cv > 1.0, "median chat inter-arrival cv {cv}");
    let multi = share(&all, |r| l(r, "conversation_turns") > 1);
    assert!(multi > 0.3, "multi-turn share {multi}");
    let prompts: HashSet<i64> = all.iter().map(|r| l(r, "prompt_fingerprint")).collect();
    assert!(prompts.len() as f64 / all.len() as f64 > 0.9);
    let cot = share(&all, |r| {
        opt_f(r, "cot_elicitation_score").unwrap_or(0.0) >= 0.5
    });
    assert!((0.05..0.15).contains(&cot), "chat cot share {cot}");
}

#[test]
fn benign_traps_have_their_shapes() {
    for (acct, rows) in by_account(APP_BACKEND) {
        let systems: HashSet<_> = rows
            .iter()
            .map(|r| opt_l(r, "system_prompt_hash"))
            .collect();
        assert_eq!(systems.len(), 1, "{acct}");
        let prompts: HashSet<i64> = rows.iter().map(|r| l(r, "prompt_fingerprint")).collect();
        assert_eq!(prompts.len(), rows.len());
        let rate = rows.len() as f64 / 12.0;
        assert!(
            (90.0..=520.0).contains(&rate),
            "{acct}: {rate} per 10 minutes"
        );
        let multi = share(&rows, |r| l(r, "conversation_turns") > 1);
        assert!((0.35..0.65).contains(&multi));
    }
    for rows in by_account(ENTERPRISE_BATCH).values() {
        assert!(inter_arrival_cv(rows) < 0.2);
        let prompts: HashSet<i64> = rows.iter().map(|r| l(r, "prompt_fingerprint")).collect();
        let templates: HashSet<i64> = rows.iter().map(|r| l(r, "template_fingerprint")).collect();
        assert_eq!(prompts.len(), rows.len());
        assert_eq!(templates.len(), rows.len());
        assert!(rows
            .iter()
            .all(|r| opt_f(r, "temperature") == Some(0.0) && l(r, "prompt_tokens") >= 2_000));
    }
    for rows in by_account(EVAL_HARNESS).values() {
        assert_eq!(rows.len(), 500);
        let span = l(rows[rows.len() - 1], "event_time") - l(rows[0], "event_time");
        assert!(span <= 9 * MINUTE_MS);
        let mc = share(rows, |r| {
            b(r, "logprobs") && opt_l(r, "max_tokens") == Some(1)
        });
        assert!((0.45..0.55).contains(&mc));
        assert!(rows.iter().all(|r| l(r, "logit_bias_size") == 0));
    }
    for rows in by_account(LAUNCH_BURST).values() {
        let windows = per_10min(rows);
        let max = *windows.values().max().unwrap() as f64;
        let min = *windows.values().min().unwrap() as f64;
        assert!(max / min >= 4.0, "launch burst {min}..{max}");
    }
}

#[test]
fn truth_lists_campaigns_and_writes_as_csv() {
    let t = traffic();
    let campaign: HashSet<&str> = t.campaign_accounts().collect();
    let expected = t
        .truth
        .iter()
        .filter(|r| {
            matches!(
                r.population.as_str(),
                COT_HARVESTER | LOGIT_EXTRACTOR | HYDRA_MEMBER
            )
        })
        .count();
    assert_eq!(campaign.len(), expected);
    assert!(t.truth.iter().any(|r| r.campaign.as_deref() == Some(HYDRA)));
    assert!(t
        .truth
        .iter()
        .any(|r| r.campaign.as_deref() == Some(COT_HARVEST)));

    let path = std::env::temp_dir().join(format!("distill-watch-truth-{}.csv", std::process::id()));
    t.write_truth_csv(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("account_id,population,campaign"));
    assert_eq!(lines.count(), t.truth.len());
}

/// Per-population statistics, for calibration and reports:
/// `GEN_SCALE=1.0 cargo test -p distill-watch --lib gen::tests::summary -- --ignored --nocapture`
#[test]
#[ignore]
fn summary() {
    let scale = std::env::var("GEN_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let cfg = GenConfig {
        scale,
        ..GenConfig::default()
    };
    let began = std::time::Instant::now();
    let t = generate(&cfg);
    let took = began.elapsed();
    let set = SchemaSet::builtin();
    let pop: HashMap<&str, &str> = t
        .truth
        .iter()
        .map(|r| (r.account_id.as_str(), r.population.as_str()))
        .collect();
    let mut accounts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &t.truth {
        *accounts.entry(r.population.as_str()).or_default() += 1;
    }
    let requests: Vec<Row> = t.requests.iter().map(|r| decode(r, &set.request)).collect();
    let responses: HashMap<String, Row> = t
        .responses
        .iter()
        .map(|r| decode(r, &set.response))
        .map(|r| (s(&r, "request_id"), r))
        .collect();
    let mut by_pop: BTreeMap<&str, BTreeMap<String, Vec<&Row>>> = BTreeMap::new();
    for r in &requests {
        by_pop
            .entry(pop[s(r, "account_id").as_str()])
            .or_default()
            .entry(s(r, "account_id"))
            .or_default()
            .push(r);
    }
    let bytes: usize = t
        .requests
        .iter()
        .chain(&t.responses)
        .map(|r| r.value.len())
        .sum();
    println!(
        "scale {scale}: {} accounts, {} requests, {} responses, {} MB, generated in {took:?}",
        t.accounts.len(),
        t.requests.len(),
        t.responses.len(),
        bytes / 1_000_000
    );
    println!(
        "{:<17}{:>5}{:>8}{:>7}{:>7}{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}{:>7}{:>7}{:>6}{:>6}",
        "population",
        "accts",
        "reqs",
        "r/10m",
        "max10",
        "cv",
        "cot",
        "1turn",
        "t0",
        "dist",
        "toptp",
        "lp",
        "p50ms",
        "p99ms",
        "429",
        "o/i"
    );
    let windows = cfg.duration_ms as f64 / (10 * MINUTE_MS) as f64;
    for (p, accts) in &by_pop {
        let all: Vec<&Row> = accts.values().flatten().copied().collect();
        let n = all.len();
        let max10 = accts
            .values()
            .flat_map(|rows| per_10min(rows).into_values())
            .max()
            .unwrap_or(0);
        let cvs: Vec<f64> = accts
            .values()
            .filter(|r| r.len() >= 10)
            .map(|r| inter_arrival_cv(r))
            .collect();
        let cv = if cvs.is_empty() {
            f64::NAN
        } else {
            median(cvs)
        };
        let per_acct =
            |f: &dyn Fn(&[&Row]) -> f64| median(accts.values().map(|rows| f(rows)).collect());
        let distinct = per_acct(&|rows| {
            rows.iter()
                .map(|r| opt_l(r, "prompt_fingerprint"))
                .collect::<HashSet<_>>()
                .len() as f64
                / rows.len() as f64
        });
        let top_template = per_acct(&|rows| {
            let mut c: HashMap<Option<i64>, usize> = HashMap::new();
            for r in rows {
                *c.entry(opt_l(r, "template_fingerprint")).or_default() += 1;
            }
            *c.values().max().unwrap_or(&0) as f64 / rows.len() as f64
        });
        let resp: Vec<&Row> = all
            .iter()
            .map(|r| &responses[&s(r, "request_id")])
            .collect();
        let mut lat: Vec<f64> = resp
            .iter()
            .filter(|r| s(r, "status") == "ok")
            .map(|r| l(r, "latency_ms") as f64)
            .collect();
        lat.sort_by(f64::total_cmp);
        let ratio = median(
            all.iter()
                .zip(&resp)
                .filter(|(_, r)| s(r, "status") == "ok")
                .map(|(q, r)| {
                    l(r, "completion_tokens") as f64 / l(q, "prompt_tokens").max(1) as f64
                })
                .collect(),
        );
        println!(
            "{p:<17}{:>5}{n:>8}{:>7.0}{max10:>7}{cv:>6.2}{:>6.2}{:>6.2}{:>6.2}{:>6.2}{:>6.2}{:>6.2}{:>7.0}{:>7.0}{:>6.3}{:>6.1}",
            accts.len(),
            n as f64 / accts.len() as f64 / windows,
            share(&all, |r| opt_f(r, "cot_elicitation_score").unwrap_or(0.0) >= 0.7),
            share(&all, |r| l(r, "conversation_turns") == 1),
            share(&all, |r| opt_f(r, "temperature") == Some(0.0)),
            distinct,
            top_template,
            share(&all, |r| b(r, "logprobs")),
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100],
            share(&resp, |r| s(r, "status") == "rate_limited"),
            ratio,
        );
    }
    println!(
        "cv: median per-account inter-arrival CV; cot: share with score >= 0.7; t0: temperature 0;"
    );
    println!(
        "dist/toptp: median per-account distinct-prompt and top-template shares; lp: logprobs;"
    );
    println!("p50/p99: ok latency; o/i: median completion/prompt tokens.");
}

#[test]
fn degenerate_configs_do_not_panic() {
    for (duration_ms, scale) in [
        (0, 0.0),
        (5 * MINUTE_MS, 0.01),
        (-1, f64::NAN),
        (30 * MINUTE_MS, 0.05),
    ] {
        let cfg = GenConfig {
            duration_ms,
            scale,
            ..GenConfig::default()
        };
        let t = generate(&cfg);
        let end = cfg.start_ms + duration_ms.max(0);
        assert!(t
            .requests
            .iter()
            .all(|r| r.event_time_ms >= cfg.start_ms && r.event_time_ms < end));
        assert_eq!(t.requests.len(), t.responses.len());
    }
}
