//! Account enrichment: the whole `accounts.v1` topic as an in-memory table
//! that follows updates, joined onto each window's events.
//!
//! Every version of every account is kept, and a window is enriched with the
//! version in force at the window's end, so a replay enriches exactly as the
//! live run did even if the account changed since.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMillisecondType};

/// One version of an account, as read from `accounts.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountVersion {
    pub org_id: Option<String>,
    pub created_at: i64,
    pub tier: String,
    pub country: Option<String>,
    pub billing_country: Option<String>,
    pub payment_fingerprint: Option<String>,
    pub signup_channel: String,
    pub verified: bool,
    pub version: i64,
    pub updated_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("account batch: {0}")]
    Schema(String),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Every account version seen, with indexes for cluster-size features.
#[derive(Debug, Default, Clone)]
pub struct AccountTable {
    /// Versions sorted by (updated_at, version).
    accounts: HashMap<String, Vec<AccountVersion>>,
    by_payment: HashMap<String, BTreeSet<String>>,
    by_org: HashMap<String, BTreeSet<String>>,
}

impl AccountTable {
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Account versions held (every account has at least one).
    pub fn versions(&self) -> usize {
        self.accounts.values().map(Vec::len).sum()
    }

    /// Add the rows of a decoded `Account` batch; returns how many rows were
    /// new versions (a replayed version replaces its earlier copy).
    pub fn apply(&mut self, batch: &RecordBatch) -> Result<usize, EnrichError> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| EnrichError::Schema(format!("missing column {name}")))
        };
        let ids = col("account_id")?.as_string::<i32>();
        let org = col("org_id")?.as_string::<i32>();
        let created = col("created_at")?.as_primitive::<TimestampMillisecondType>();
        let tier = col("tier")?.as_string::<i32>();
        let country = col("country")?.as_string::<i32>();
        let billing = col("billing_country")?.as_string::<i32>();
        let payment = col("payment_fingerprint")?.as_string::<i32>();
        let channel = col("signup_channel")?.as_string::<i32>();
        let verified = col("verified")?.as_boolean();
        let version = col("version")?.as_primitive::<arrow::datatypes::Int64Type>();
        let updated = col("updated_at")?.as_primitive::<TimestampMillisecondType>();
        let opt = |a: &arrow::array::StringArray, i: usize| {
            (!a.is_null(i)).then(|| a.value(i).to_string())
        };
        let mut added = 0;
        for i in 0..batch.num_rows() {
            let v = AccountVersion {
                org_id: opt(org, i),
                created_at: created.value(i),
                tier: tier.value(i).to_string(),
                country: opt(country, i),
                billing_country: opt(billing, i),
                payment_fingerprint: opt(payment, i),
                signup_channel: channel.value(i).to_string(),
                verified: verified.value(i),
                version: version.value(i),
                updated_at: updated.value(i),
            };
            let id = ids.value(i).to_string();
            if let Some(fp) = &v.payment_fingerprint {
                self.by_payment
                    .entry(fp.clone())
                    .or_default()
                    .insert(id.clone());
            }
            if let Some(o) = &v.org_id {
                self.by_org.entry(o.clone()).or_default().insert(id.clone());
            }
            let versions = self.accounts.entry(id).or_default();
            match versions.iter_mut().find(|x| x.version == v.version) {
                Some(existing) => *existing = v,
                None => {
                    versions.push(v);
                    added += 1;
                }
            }
            versions.sort_by_key(|x| (x.updated_at, x.version));
        }
        Ok(added)
    }

    /// The version in force at `t`: the newest with `updated_at <= t`, else
    /// the oldest (an event can precede its account's first record only
    /// through clock skew, and the oldest version is then the best guess).
    pub fn as_of(&self, account: &str, t: i64) -> Option<&AccountVersion> {
        let versions = self.accounts.get(account)?;
        versions
            .iter()
            .rev()
            .find(|v| v.updated_at <= t)
            .or_else(|| versions.first())
    }

    fn peers(
        &self,
        index: &HashMap<String, BTreeSet<String>>,
        value: &str,
        t: i64,
        get: impl Fn(&AccountVersion) -> Option<&String>,
    ) -> i64 {
        index.get(value).map_or(0, |ids| {
            ids.iter()
                .filter_map(|id| self.as_of(id, t))
                .filter(|v| v.created_at <= t && get(v).is_some_and(|x| x == value))
                .count() as i64
        })
    }

    /// Accounts existing at `t` whose payment method (as of `t`) is `fp`.
    pub fn payment_peers(&self, fp: &str, t: i64) -> i64 {
        self.peers(&self.by_payment, fp, t, |v| v.payment_fingerprint.as_ref())
    }

    /// Accounts existing at `t` in organization `org` (as of `t`).
    pub fn org_peers(&self, org: &str, t: i64) -> i64 {
        self.peers(&self.by_org, org, t, |v| v.org_id.as_ref())
    }
}

const DAY_MS: f64 = 86_400_000.0;

/// Columns added by [`enrich`], documented in `jobs/README.md`.
pub fn enrichment_fields() -> Vec<Field> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()));
    vec![
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts.clone(), false),
        Field::new("account_known", DataType::Boolean, false),
        Field::new("org_id", DataType::Utf8, true),
        Field::new("account_created_at", ts, true),
        Field::new("account_age_days", DataType::Float64, true),
        Field::new("tier", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("billing_country", DataType::Utf8, true),
        Field::new("payment_fingerprint", DataType::Utf8, true),
        Field::new("signup_channel", DataType::Utf8, true),
        Field::new("verified", DataType::Boolean, true),
        Field::new("payment_peers", DataType::Int64, false),
        Field::new("org_peers", DataType::Int64, false),
    ]
}

/// Append account columns (as of `window_end`) and the window bounds to
/// `events`. Returns the enriched batch and how many rows had no account.
pub fn enrich(
    events: &RecordBatch,
    table: &AccountTable,
    window_start: i64,
    window_end: i64,
) -> Result<(RecordBatch, usize), EnrichError> {
    let n = events.num_rows();
    let ids = events
        .column_by_name("account_id")
        .ok_or_else(|| EnrichError::Schema("events lack account_id".into()))?
        .as_string::<i32>();
    let mut ws = TimestampMillisecondBuilder::with_capacity(n);
    let mut we = TimestampMillisecondBuilder::with_capacity(n);
    let mut known = BooleanBuilder::with_capacity(n);
    let mut org = StringBuilder::new();
    let mut created = TimestampMillisecondBuilder::with_capacity(n);
    let mut age = Float64Builder::with_capacity(n);
    let mut tier = StringBuilder::new();
    let mut country = StringBuilder::new();
    let mut billing = StringBuilder::new();
    let mut payment = StringBuilder::new();
    let mut channel = StringBuilder::new();
    let mut verified = BooleanBuilder::with_capacity(n);
    let mut pay_peers = Int64Builder::with_capacity(n);
    let mut org_peers = Int64Builder::with_capacity(n);
    // Events arrive sorted by account, so peer counts are computed once per
    // account run rather than per row.
    let mut cache: Option<(String, i64, i64)> = None;
    let mut unknown = 0;
    for i in 0..n {
        ws.append_value(window_start);
        we.append_value(window_end);
        let id = ids.value(i);
        match table.as_of(id, window_end) {
            Some(v) => {
                known.append_value(true);
                org.append_option(v.org_id.as_deref());
                created.append_value(v.created_at);
                age.append_value(((window_end - v.created_at) as f64 / DAY_MS).max(0.0));
                tier.append_value(&v.tier);
                country.append_option(v.country.as_deref());
                billing.append_option(v.billing_country.as_deref());
                payment.append_option(v.payment_fingerprint.as_deref());
                channel.append_value(&v.signup_channel);
                verified.append_value(v.verified);
                let (p, o) = match &cache {
                    Some((cached, p, o)) if cached == id => (*p, *o),
                    _ => {
                        let p = v
                            .payment_fingerprint
                            .as_deref()
                            .map_or(0, |fp| table.payment_peers(fp, window_end));
                        let o = v
                            .org_id
                            .as_deref()
                            .map_or(0, |org| table.org_peers(org, window_end));
                        cache = Some((id.to_string(), p, o));
                        (p, o)
                    }
                };
                pay_peers.append_value(p);
                org_peers.append_value(o);
            }
            None => {
                unknown += 1;
                known.append_value(false);
                org.append_null();
                created.append_null();
                age.append_null();
                tier.append_null();
                country.append_null();
                billing.append_null();
                payment.append_null();
                channel.append_null();
                verified.append_null();
                pay_peers.append_value(0);
                org_peers.append_value(0);
            }
        }
    }
    let tz = |b: &mut TimestampMillisecondBuilder| -> ArrayRef {
        Arc::new(b.finish().with_timezone("+00:00"))
    };
    let mut fields: Vec<Field> = events
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(enrichment_fields());
    let mut cols: Vec<ArrayRef> = events.columns().to_vec();
    cols.extend([
        tz(&mut ws),
        tz(&mut we),
        Arc::new(known.finish()),
        Arc::new(org.finish()),
        tz(&mut created),
        Arc::new(age.finish()),
        Arc::new(tier.finish()),
        Arc::new(country.finish()),
        Arc::new(billing.finish()),
        Arc::new(payment.finish()),
        Arc::new(channel.finish()),
        Arc::new(verified.finish()),
        Arc::new(pay_peers.finish()),
        Arc::new(org_peers.finish()),
    ]);
    Ok((
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?,
        unknown,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(fp: &str, created: i64, updated: i64, v: i64) -> AccountVersion {
        AccountVersion {
            org_id: Some("org".into()),
            created_at: created,
            tier: "free".into(),
            country: None,
            billing_country: None,
            payment_fingerprint: Some(fp.into()),
            signup_channel: "web".into(),
            verified: false,
            version: v,
            updated_at: updated,
        }
    }

    fn table(rows: Vec<(&str, AccountVersion)>) -> AccountTable {
        let mut t = AccountTable::default();
        for (id, v) in rows {
            if let Some(fp) = &v.payment_fingerprint {
                t.by_payment
                    .entry(fp.clone())
                    .or_default()
                    .insert(id.into());
            }
            if let Some(o) = &v.org_id {
                t.by_org.entry(o.clone()).or_default().insert(id.into());
            }
            let vs = t.accounts.entry(id.into()).or_default();
            vs.push(v);
            vs.sort_by_key(|x| (x.updated_at, x.version));
        }
        t
    }

    #[test]
    fn as_of_picks_the_version_in_force() {
        let t = table(vec![
            ("a", version("p1", 0, 0, 1)),
            ("a", version("p2", 0, 100, 2)),
        ]);
        assert_eq!(t.as_of("a", 50).unwrap().version, 1);
        assert_eq!(t.as_of("a", 100).unwrap().version, 2);
        assert!(t.as_of("b", 100).is_none());
    }

    #[test]
    fn payment_peers_count_accounts_as_of_time() {
        let t = table(vec![
            ("a", version("p", 0, 0, 1)),
            ("b", version("p", 0, 0, 1)),
            ("c", version("p", 500, 500, 1)),
            ("b", version("q", 0, 300, 2)),
        ]);
        assert_eq!(t.payment_peers("p", 100), 2);
        // b moved to another card at 300, c appeared at 500.
        assert_eq!(t.payment_peers("p", 400), 1);
        assert_eq!(t.payment_peers("p", 600), 2);
        assert_eq!(t.org_peers("org", 600), 3);
    }

    #[test]
    fn enrich_appends_columns_and_counts_unknown() {
        let t = table(vec![("a", version("p", 0, 0, 1))]);
        let ids = arrow::array::StringArray::from(vec!["a", "a", "zz"]);
        let events = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "account_id",
                DataType::Utf8,
                false,
            )])),
            vec![Arc::new(ids)],
        )
        .unwrap();
        let (out, unknown) = enrich(&events, &t, 0, 86_400_000).unwrap();
        assert_eq!(unknown, 1);
        assert_eq!(out.num_columns(), 1 + enrichment_fields().len());
        let age = out
            .column_by_name("account_age_days")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(age.value(0), 1.0);
        assert!(age.is_null(2));
    }
}
