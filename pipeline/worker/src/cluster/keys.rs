//! Account stage side: one window's events → member rows, one per account
//! and cluster key it has in that window.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};

use crate::score::RiskScore;

/// Which shared attribute makes a cluster.
pub const KINDS: [&str; 7] = [
    "payment",
    "org",
    "ip_prefix",
    "user_agent",
    "template",
    "system_prompt",
    "signup",
];

/// Templates kept per member row: enough to see overlap between members,
/// few enough that a row stays small.
pub const MAX_TEMPLATES: usize = 4;

/// Tool-definition sets kept per member row, for the same reason.
pub const MAX_TOOL_SCHEMAS: usize = 4;

/// One account's window under one of its cluster keys: what the cluster
/// stage aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub kind: String,
    pub key: String,
    pub account_id: String,
    pub window_start: i64,
    pub window_end: i64,
    pub requests: i64,
    pub output_tokens: i64,
    /// Requests per minute of the window, from its start.
    pub minute_counts: Vec<i32>,
    /// Most used template fingerprints, most used first (ties: smaller).
    pub templates: Vec<i64>,
    /// Requests that carried tool definitions.
    pub tool_requests: i64,
    /// Most used tool-definition set hashes, most used first (ties:
    /// smaller).
    pub tool_schemas: Vec<i64>,
    pub account_age_days: Option<f64>,
    /// Days since the epoch.
    pub signup_day: Option<i64>,
    pub signup_channel: Option<String>,
    pub verified: bool,
    pub own_score: f64,
}

impl MemberRow {
    /// `kind:key`: the cluster's id on the wire and in member scores.
    pub fn cluster_id(&self) -> String {
        cluster_id(&self.kind, &self.key)
    }
}

pub fn cluster_id(kind: &str, key: &str) -> String {
    format!("{kind}:{key}")
}

/// The /24 of an IPv4 address or the /48 of an IPv6 one; `None` when the
/// text is not an address.
pub fn ip_prefix(ip: &str) -> Option<String> {
    match ip.trim().parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]))
        }
    }
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (proleptic Gregorian).
pub fn civil_date(days: i64) -> String {
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[derive(Default)]
struct Acc {
    requests: i64,
    output_tokens: i64,
    minutes: Vec<i32>,
    templates: HashMap<i64, u32>,
    tool_requests: i64,
    tool_schemas: HashMap<i64, u32>,
    prefixes: HashMap<String, u32>,
    agents: HashMap<String, u32>,
    system_prompts: HashMap<i64, u32>,
    payment: Option<String>,
    org: Option<String>,
    created_at: Option<i64>,
    age_days: Option<f64>,
    channel: Option<String>,
    verified: bool,
}

/// Most frequent value; ties go to the smallest, so the choice never
/// depends on row order.
fn mode<K: Ord + Clone>(counts: &HashMap<K, u32>) -> Option<K> {
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(k, _)| k.clone())
}

/// Values by count, most used first; ties go to the smaller value.
fn most_used(counts: &HashMap<i64, u32>) -> Vec<(i64, u32)> {
    let mut top: Vec<(i64, u32)> = counts.iter().map(|(k, v)| (*k, *v)).collect();
    top.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    top
}

/// Member rows of one base window `[start, end)`: `events` is the window's
/// joined and enriched table, `scores` the accounts' own scores of it.
/// Sorted by (account, kind), so the output is a function of the input.
pub fn member_rows(
    events: &RecordBatch,
    scores: &[RiskScore],
    start: i64,
    end: i64,
) -> Vec<MemberRow> {
    if events.num_rows() == 0 {
        return Vec::new();
    }
    let minutes = ((end - start) / 60_000).max(1) as usize;
    let str_col = |name: &str| events.column_by_name(name).map(|c| c.as_string::<i32>());
    // Token counts are Avro ints, fingerprints longs: read both as i64.
    let i64_col = |name: &str| -> Option<arrow::array::Int64Array> {
        let c = events.column_by_name(name)?;
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).ok()?;
        Some(c.as_primitive::<Int64Type>().clone())
    };
    let Some(ids) = str_col("account_id") else {
        return Vec::new();
    };
    let times = events
        .column_by_name("event_time")
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
    let ips = str_col("client_ip");
    let agents = str_col("user_agent");
    let templates = i64_col("template_fingerprint");
    let system = i64_col("system_prompt_hash");
    let tool_count = i64_col("tool_count");
    let tools_hash = i64_col("tools_hash");
    let completion = i64_col("completion_tokens");
    let reasoning = i64_col("reasoning_tokens");
    let payment = str_col("payment_fingerprint");
    let org = str_col("org_id");
    let channel = str_col("signup_channel");
    let created = events
        .column_by_name("account_created_at")
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
    let age = events
        .column_by_name("account_age_days")
        .and_then(|c| c.as_primitive_opt::<Float64Type>());
    let verified = events.column_by_name("verified").map(|c| c.as_boolean());

    fn opt_str(c: Option<&arrow::array::StringArray>, i: usize) -> Option<&str> {
        c.filter(|c| c.is_valid(i)).map(|c| c.value(i))
    }
    let (templates, system, completion, reasoning) = (
        templates.as_ref(),
        system.as_ref(),
        completion.as_ref(),
        reasoning.as_ref(),
    );
    let (tool_count, tools_hash) = (tool_count.as_ref(), tools_hash.as_ref());
    let opt_i64 = |c: Option<&arrow::array::Int64Array>, i: usize| {
        c.filter(|c| c.is_valid(i)).map(|c| c.value(i))
    };
    let mut accs: BTreeMap<&str, Acc> = BTreeMap::new();
    for i in 0..events.num_rows() {
        if !ids.is_valid(i) {
            continue;
        }
        let a = accs.entry(ids.value(i)).or_insert_with(|| Acc {
            minutes: vec![0; minutes],
            ..Default::default()
        });
        a.requests += 1;
        a.output_tokens += opt_i64(completion, i).unwrap_or(0) + opt_i64(reasoning, i).unwrap_or(0);
        if let Some(t) = times.filter(|t| t.is_valid(i)).map(|t| t.value(i)) {
            let m = ((t - start).max(0) / 60_000) as usize;
            a.minutes[m.min(minutes - 1)] += 1;
        }
        if let Some(t) = opt_i64(templates, i) {
            *a.templates.entry(t).or_default() += 1;
        }
        if opt_i64(tool_count, i).unwrap_or(0) > 0 {
            a.tool_requests += 1;
            if let Some(h) = opt_i64(tools_hash, i) {
                *a.tool_schemas.entry(h).or_default() += 1;
            }
        }
        if let Some(p) = opt_str(ips, i).and_then(ip_prefix) {
            *a.prefixes.entry(p).or_default() += 1;
        }
        if let Some(ua) = opt_str(agents, i).filter(|s| !s.is_empty()) {
            *a.agents.entry(ua.to_string()).or_default() += 1;
        }
        if let Some(h) = opt_i64(system, i) {
            *a.system_prompts.entry(h).or_default() += 1;
        }
        // Account attributes are the same on every row of the window.
        if a.requests == 1 {
            a.payment = opt_str(payment, i).map(str::to_string);
            a.org = opt_str(org, i).map(str::to_string);
            a.channel = opt_str(channel, i).map(str::to_string);
            a.created_at = created.filter(|c| c.is_valid(i)).map(|c| c.value(i));
            a.age_days = age.filter(|c| c.is_valid(i)).map(|c| c.value(i));
            a.verified = verified.is_some_and(|v| v.is_valid(i) && v.value(i));
        }
    }
    let own: HashMap<&str, f64> = scores
        .iter()
        .filter(|s| s.window_start == start && s.cluster_id.is_none())
        .map(|s| (s.account_id.as_str(), s.score))
        .collect();
    let mut out = Vec::new();
    for (account, a) in accs {
        let top = most_used(&a.templates);
        let tools = most_used(&a.tool_schemas);
        let signup_day = a.created_at.map(|c| c.div_euclid(86_400_000));
        let keys: [(&str, Option<String>); 7] = [
            ("payment", a.payment.clone()),
            ("org", a.org.clone()),
            ("ip_prefix", mode(&a.prefixes)),
            ("user_agent", mode(&a.agents)),
            ("template", top.first().map(|t| t.0.to_string())),
            (
                "system_prompt",
                mode(&a.system_prompts).map(|h| h.to_string()),
            ),
            (
                "signup",
                signup_day
                    .zip(a.channel.as_ref())
                    .map(|(d, c)| format!("{}/{c}", civil_date(d))),
            ),
        ];
        for (kind, key) in keys {
            let Some(key) = key.filter(|k| !k.is_empty()) else {
                continue;
            };
            out.push(MemberRow {
                kind: kind.to_string(),
                key,
                account_id: account.to_string(),
                window_start: start,
                window_end: end,
                requests: a.requests,
                output_tokens: a.output_tokens,
                minute_counts: a.minutes.clone(),
                templates: top.iter().take(MAX_TEMPLATES).map(|t| t.0).collect(),
                tool_requests: a.tool_requests,
                tool_schemas: tools.iter().take(MAX_TOOL_SCHEMAS).map(|t| t.0).collect(),
                account_age_days: a.age_days,
                signup_day,
                signup_channel: a.channel.clone(),
                verified: a.verified,
                own_score: own.get(account).copied().unwrap_or(0.0),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(ip_prefix("203.0.113.77").as_deref(), Some("203.0.113.0/24"));
        assert_eq!(
            ip_prefix("2001:db8:abcd:12::1").as_deref(),
            Some("2001:db8:abcd::/48")
        );
        assert_eq!(ip_prefix("not an ip"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(20_394), "2025-11-02");
        assert_eq!(civil_date(-1), "1969-12-31");
    }

    #[test]
    fn mode_breaks_ties_by_smallest() {
        let m: HashMap<i64, u32> = [(5, 2), (3, 2), (9, 1)].into_iter().collect();
        assert_eq!(mode(&m), Some(3));
    }
}
