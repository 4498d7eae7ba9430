//! SQL aggregation jobs: loading `jobs/*.sql` and running them with
//! DataFusion over one window's `events` table.
//!
//! A job is a SELECT with a comment header:
//!
//! ```sql
//! -- name: volume
//! -- family: volume
//! -- description: Requests and output tokens per account.
//! -- input: events
//! -- key: account_id
//! -- window: tumble 10m
//! -- lateness: 0s
//! SELECT account_id, count(*) AS requests FROM events GROUP BY account_id
//! ```
//!
//! Every column but the key is a feature (numeric, read as Float64).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use datafusion::prelude::SessionContext;

use crate::config::parse_duration;

/// The only input table so far: joined, enriched events of one window.
pub const EVENTS_TABLE: &str = "events";
/// The only key so far: per-account features.
pub const ACCOUNT_KEY: &str = "account_id";

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Header { path: PathBuf, message: String },
    #[error("no jobs (*.sql) in {0}")]
    Empty(PathBuf),
    #[error("jobs disagree on the window: {0}")]
    WindowMismatch(String),
    #[error("feature {feature:?} is produced by both {first} and {second}; feature names must be unique")]
    DuplicateFeature {
        feature: String,
        first: String,
        second: String,
    },
    #[error("job {job}: {message}")]
    Output { job: String, message: String },
    #[error("job {job}: {source}")]
    Sql {
        job: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
}

/// One parsed job file.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub family: String,
    pub description: String,
    pub input: String,
    pub key: String,
    pub window_ms: i64,
    pub lateness_ms: i64,
    pub sql: String,
    pub path: PathBuf,
}

impl Job {
    pub fn parse(path: &Path, text: &str) -> Result<Job, JobError> {
        let err = |message: String| JobError::Header {
            path: path.to_path_buf(),
            message,
        };
        const KEYS: [&str; 7] = [
            "name",
            "family",
            "description",
            "input",
            "key",
            "window",
            "lateness",
        ];
        let mut header: BTreeMap<String, String> = BTreeMap::new();
        let mut last: Option<String> = None;
        // The header is the leading block of `--` comments; a comment line
        // without a known `key:` continues the previous key's value.
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("--") else {
                if line.trim().is_empty() {
                    continue;
                }
                break;
            };
            let keyed = rest
                .split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()))
                .filter(|(k, _)| KEYS.contains(&k.as_str()));
            let (k, v) = match (keyed, &last) {
                (Some((k, v)), _) => (k, v),
                (None, Some(prev)) => (prev.clone(), rest.trim()),
                (None, None) => continue,
            };
            let entry = header.entry(k.clone()).or_default();
            if !entry.is_empty() && !v.is_empty() {
                entry.push(' ');
            }
            entry.push_str(v);
            last = Some(k);
        }
        let get = |k: &str| {
            header
                .get(k)
                .cloned()
                .ok_or_else(|| err(format!("header lacks `-- {k}: ...`")))
        };
        let name = get("name")?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(err(format!(
                "job name {name:?} must be letters, digits, '_' or '-'"
            )));
        }
        let input = get("input")?;
        if input != EVENTS_TABLE {
            return Err(err(format!(
                "input {input:?} is not supported yet: jobs read `{EVENTS_TABLE}`"
            )));
        }
        let key = get("key")?;
        if key != ACCOUNT_KEY {
            return Err(err(format!(
                "key {key:?} is not supported yet: jobs are keyed by `{ACCOUNT_KEY}`"
            )));
        }
        let window = get("window")?;
        let window_ms = match window.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["tumble", size] => parse_duration(size).map_err(err)?.as_millis() as i64,
            _ => {
                return Err(err(format!(
                    "window {window:?}: expected `tumble <duration>`, e.g. `tumble 10m`"
                )))
            }
        };
        if window_ms <= 0 {
            return Err(err("window size must be positive".into()));
        }
        let lateness_ms = match header.get("lateness") {
            Some(l) => parse_duration(l).map_err(err)?.as_millis() as i64,
            None => 0,
        };
        if lateness_ms != 0 {
            return Err(err(
                "lateness > 0 (revised scores) is not supported yet; late events go to the DLQ"
                    .into(),
            ));
        }
        let sql: String = text.to_string();
        if !sql.to_ascii_lowercase().contains("select") {
            return Err(err("no SELECT statement".into()));
        }
        Ok(Job {
            name,
            family: header.get("family").cloned().unwrap_or_default(),
            description: header.get("description").cloned().unwrap_or_default(),
            input,
            key,
            window_ms,
            lateness_ms,
            sql,
            path: path.to_path_buf(),
        })
    }
}

/// Files of `dir` ending in `.ext`, sorted by name.
pub fn files_with_extension(dir: &Path, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    paths.sort();
    Ok(paths)
}

/// All jobs of a directory, in file-name order.
#[derive(Debug, Clone)]
pub struct JobSet {
    pub jobs: Vec<Job>,
    pub window_ms: i64,
    pub dir: PathBuf,
}

impl JobSet {
    pub fn load(dir: &Path) -> Result<JobSet, JobError> {
        let paths = files_with_extension(dir, "sql").map_err(|source| JobError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut jobs = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| JobError::Read {
                path: path.clone(),
                source,
            })?;
            jobs.push(Job::parse(&path, &text)?);
        }
        Self::from_jobs(dir, jobs)
    }

    pub fn from_jobs(dir: &Path, jobs: Vec<Job>) -> Result<JobSet, JobError> {
        let first = jobs
            .first()
            .ok_or_else(|| JobError::Empty(dir.to_path_buf()))?;
        let window_ms = first.window_ms;
        if let Some(other) = jobs.iter().find(|j| j.window_ms != window_ms) {
            return Err(JobError::WindowMismatch(format!(
                "{} uses {} ms, {} uses {} ms; all jobs of one deployment share one tumbling window for now",
                first.name, window_ms, other.name, other.window_ms
            )));
        }
        let mut names = BTreeSet::new();
        for j in &jobs {
            if !names.insert(j.name.clone()) {
                return Err(JobError::Header {
                    path: j.path.clone(),
                    message: format!("job name {} is used twice", j.name),
                });
            }
        }
        Ok(JobSet {
            jobs,
            window_ms,
            dir: dir.to_path_buf(),
        })
    }

    /// A stable digest of every job's text, part of the model version so a
    /// changed job can never masquerade as the old one in a replay diff.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv64::new();
        for j in &self.jobs {
            h.write(j.name.as_bytes());
            h.write(&[0]);
            h.write(j.sql.as_bytes());
            h.write(&[0]);
        }
        h.finish()
    }
}

/// FNV-1a: tiny, and unlike `DefaultHasher` fixed across Rust releases.
pub struct Fnv64(u64);

impl Fnv64 {
    pub fn new() -> Self {
        Fnv64(0xcbf29ce484222325)
    }
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

/// Run one job against the `events` table registered in `ctx`; returns its
/// output with the key as Utf8 and every feature as Float64.
pub async fn run_job(ctx: &SessionContext, job: &Job) -> Result<RecordBatch, JobError> {
    let sql_err = |source| JobError::Sql {
        job: job.name.clone(),
        source,
    };
    let df = ctx.sql(&job.sql).await.map_err(sql_err)?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(sql_err)?;
    let batch = arrow::compute::concat_batches(&schema, &batches)
        .map_err(|e| sql_err(datafusion::error::DataFusionError::from(e)))?;
    normalize_output(job, batch)
}

fn normalize_output(job: &Job, batch: RecordBatch) -> Result<RecordBatch, JobError> {
    let out_err = |message: String| JobError::Output {
        job: job.name.clone(),
        message,
    };
    let schema = batch.schema();
    let key_idx = schema
        .index_of(&job.key)
        .map_err(|_| out_err(format!("output lacks the key column `{}`", job.key)))?;
    if schema.fields().len() < 2 {
        return Err(out_err("output has no feature columns".into()));
    }
    let key =
        cast(batch.column(key_idx), &DataType::Utf8).map_err(|e| out_err(format!("key: {e}")))?;
    let mut fields = vec![Field::new(&job.key, DataType::Utf8, true)];
    let mut cols: Vec<ArrayRef> = vec![key];
    for (i, f) in schema.fields().iter().enumerate() {
        if i == key_idx {
            continue;
        }
        let numeric = f.data_type().is_numeric() || matches!(f.data_type(), DataType::Boolean);
        if !numeric {
            return Err(out_err(format!(
                "feature column `{}` is {}, features must be numeric",
                f.name(),
                f.data_type()
            )));
        }
        let c = cast(batch.column(i), &DataType::Float64)
            .map_err(|e| out_err(format!("{}: {e}", f.name())))?;
        fields.push(Field::new(f.name(), DataType::Float64, true));
        cols.push(c);
    }
    let out = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| out_err(e.to_string()))?;
    let keys = out.column(0).as_string::<i32>();
    let mut seen = BTreeSet::new();
    for i in 0..keys.len() {
        if keys.is_null(i) {
            return Err(out_err("a row has a NULL key".into()));
        }
        if !seen.insert(keys.value(i)) {
            return Err(out_err(format!(
                "key {:?} appears twice: a job must output one row per key (GROUP BY the key)",
                keys.value(i)
            )));
        }
    }
    Ok(out)
}

/// Run every job and merge their outputs into one table: `account_id` plus
/// one Float64 column per feature, sorted by name; rows sorted by account,
/// covering every account of `accounts` (features absent for an account are
/// NULL).
pub async fn run_all(
    ctx: &SessionContext,
    jobs: &JobSet,
    accounts: &[String],
) -> Result<RecordBatch, JobError> {
    let mut features: BTreeMap<String, (String, BTreeMap<String, Option<f64>>)> = BTreeMap::new();
    for job in &jobs.jobs {
        let out = run_job(ctx, job).await?;
        let keys = out.column(0).as_string::<i32>();
        for (i, field) in out.schema().fields().iter().enumerate().skip(1) {
            if let Some((first, _)) = features.get(field.name()) {
                return Err(JobError::DuplicateFeature {
                    feature: field.name().clone(),
                    first: first.clone(),
                    second: job.name.clone(),
                });
            }
            let vals = out.column(i).as_primitive::<Float64Type>();
            let map = (0..out.num_rows())
                .map(|r| {
                    let v = (!vals.is_null(r))
                        .then(|| vals.value(r))
                        .filter(|v| v.is_finite());
                    (keys.value(r).to_string(), v)
                })
                .collect();
            features.insert(field.name().clone(), (job.name.clone(), map));
        }
    }
    let mut sorted: Vec<&String> = accounts.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut fields = vec![Field::new(ACCOUNT_KEY, DataType::Utf8, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
        sorted.iter().map(|s| s.as_str()),
    ))];
    for (name, (_, values)) in &features {
        fields.push(Field::new(name, DataType::Float64, true));
        let col: Float64Array = sorted
            .iter()
            .map(|a| values.get(*a).copied().flatten())
            .collect();
        cols.push(Arc::new(col));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| JobError::Output {
        job: "(merge)".into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "-- name: volume\n-- family: volume\n-- description: Requests\n--   per account.\n-- input: events\n-- key: account_id\n-- window: tumble 10m\nSELECT account_id, count(*) AS requests FROM events GROUP BY account_id\n";

    #[test]
    fn header_parses() {
        let j = Job::parse(Path::new("volume.sql"), GOOD).unwrap();
        assert_eq!(j.name, "volume");
        assert_eq!(j.window_ms, 600_000);
        assert_eq!(j.description, "Requests per account.");
    }

    #[test]
    fn header_errors_are_specific() {
        let cases = [
            (GOOD.replace("-- name: volume\n", ""), "lacks `-- name"),
            (GOOD.replace("tumble 10m", "hop 10m 1m"), "expected `tumble"),
            (
                GOOD.replace("input: events", "input: raw"),
                "not supported yet",
            ),
            (GOOD.replace("tumble 10m", "tumble 10q"), "unknown unit"),
        ];
        for (text, expected) in cases {
            let e = Job::parse(Path::new("x.sql"), &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e} should contain {expected}");
        }
    }

    #[tokio::test]
    async fn jobs_run_and_merge_with_null_for_missing_accounts() {
        let ctx = crate::join::window_context();
        ctx.sql("CREATE TABLE events AS VALUES ('a', 1), ('a', 2), ('b', 5)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        ctx.sql("CREATE VIEW events2 AS SELECT column1 AS account_id, column2 AS v FROM events")
            .await
            .unwrap();
        let j1 = Job::parse(
            Path::new("a.sql"),
            &GOOD.replace("FROM events", "FROM events2"),
        )
        .unwrap();
        let mut j2 = Job::parse(
            Path::new("b.sql"),
            &GOOD.replace("name: volume", "name: big").replace(
                "SELECT account_id, count(*) AS requests FROM events GROUP BY account_id",
                "SELECT account_id, sum(v) AS total FROM events2 WHERE v > 1 GROUP BY account_id",
            ),
        )
        .unwrap();
        j2.name = "big".into();
        let set = JobSet::from_jobs(Path::new("."), vec![j1, j2]).unwrap();
        let out = run_all(&ctx, &set, &["b".into(), "a".into(), "c".into()])
            .await
            .unwrap();
        let names: Vec<_> = out
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, vec!["account_id", "requests", "total"]);
        let req = out.column(1).as_primitive::<Float64Type>();
        assert_eq!((req.value(0), req.value(1)), (2.0, 1.0));
        assert!(req.is_null(2));
        let total = out.column(2).as_primitive::<Float64Type>();
        assert_eq!((total.value(0), total.value(1)), (2.0, 5.0));
    }
}
