//! Golden tests for jobs: input rows of the `events` table → expected job
//! output, in `jobs/tests/*.test`, run by `distill-watch jobs test` and by
//! `cargo test`. The model is DataFusion's sqllogictest files: plain text a
//! data engineer can write without touching Rust.
//!
//! ```text
//! # Comments start with '#'.
//! job: volume
//!
//! case: one busy account
//! events:
//! account_id | event_time           | completion_tokens
//! a          | 2026-11-02T00:00:01Z | 100
//! a          | 2026-11-02T00:00:02Z | 50
//! expect:
//! account_id | requests | output_tokens
//! a          | 2        | 150
//! ```
//!
//! Event columns left out take NULL, or for non-nullable columns 0 / "" /
//! false (`request_id` gets a unique value, `has_response` is true).
//! `window_start`/`window_end` are the job's window around the first event,
//! unless a `window: <RFC 3339 start>` line sets the start. Expected values
//! are compared as numbers with a tolerance of 1e-6; `NULL` means NULL. The
//! expected columns must be exactly the job's output columns.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, SchemaRef};
use datafusion::datasource::MemTable;

use crate::config::Config;
use crate::jobs::{files_with_extension, run_job, Job, JobInput, JobSet, Panes, EVENTS_TABLE};
use crate::process::{Detector, ProcessError};
use crate::rollup::{Rollups, WINDOW_END};

const TOLERANCE: f64 = 1e-6;
/// How a NULL cell is written in test tables.
const NULL_CELL: &str = "NULL";

#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// A parsed table: header and rows of cells.
#[derive(Debug, Clone, Default)]
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Case {
    name: String,
    line: usize,
    window_start: Option<i64>,
    events: Table,
    expect: Table,
}

#[derive(Debug)]
struct TestFile {
    path: PathBuf,
    job: String,
    cases: Vec<Case>,
}

/// Outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: String,
    pub case: String,
    pub failures: Vec<String>,
}

#[derive(Debug, Default)]
pub struct GoldenReport {
    pub results: Vec<CaseResult>,
}

impl GoldenReport {
    pub fn total(&self) -> usize {
        self.results.len()
    }
    pub fn failed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| !r.failures.is_empty())
            .count()
    }
    pub fn all_passed(&self) -> bool {
        self.failed() == 0
    }
}

impl fmt::Display for GoldenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            if r.failures.is_empty() {
                writeln!(f, "ok    {}: {}", r.file, r.case)?;
            } else {
                writeln!(f, "FAIL  {}: {}", r.file, r.case)?;
                for line in &r.failures {
                    writeln!(f, "      {line}")?;
                }
            }
        }
        writeln!(
            f,
            "{} passed, {} failed",
            self.total() - self.failed(),
            self.failed()
        )
    }
}

fn parse_file(path: &Path, text: &str) -> Result<TestFile, GoldenError> {
    let syntax = |line: usize, message: String| GoldenError::Syntax {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut job = None;
    let mut cases: Vec<Case> = Vec::new();
    #[derive(PartialEq)]
    enum Block {
        None,
        Events,
        Expect,
    }
    let mut block = Block::None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(v) = line.strip_prefix("job:") {
            job = Some(v.trim().to_string());
            continue;
        }
        if let Some(v) = line.strip_prefix("case:") {
            cases.push(Case {
                name: v.trim().to_string(),
                line: n,
                window_start: None,
                events: Table::default(),
                expect: Table::default(),
            });
            block = Block::None;
            continue;
        }
        let case = cases
            .last_mut()
            .ok_or_else(|| syntax(n, "expected `case: <name>` before tables".into()))?;
        if let Some(v) = line.strip_prefix("window:") {
            let t = chrono_parse(v.trim())
                .ok_or_else(|| syntax(n, format!("window start {:?} is not RFC 3339", v.trim())))?;
            case.window_start = Some(t);
            continue;
        }
        match line {
            "events:" => {
                block = Block::Events;
                continue;
            }
            "expect:" => {
                block = Block::Expect;
                continue;
            }
            _ => {}
        }
        let cells: Vec<String> = line.split('|').map(|c| c.trim().to_string()).collect();
        let table = match block {
            Block::Events => &mut case.events,
            Block::Expect => &mut case.expect,
            Block::None => {
                return Err(syntax(
                    n,
                    "row outside an `events:` or `expect:` block".into(),
                ))
            }
        };
        if table.columns.is_empty() {
            table.columns = cells;
        } else if cells.len() != table.columns.len() {
            return Err(syntax(
                n,
                format!("{} cells, header has {}", cells.len(), table.columns.len()),
            ));
        } else {
            table.rows.push(cells);
        }
    }
    let job = job.ok_or_else(|| syntax(1, "missing `job: <name>` line".into()))?;
    if cases.is_empty() {
        return Err(syntax(1, "no `case:`".into()));
    }
    for c in &cases {
        if c.events.columns.is_empty() || c.expect.columns.is_empty() {
            return Err(syntax(
                c.line,
                format!(
                    "case {:?} needs both `events:` and `expect:` tables",
                    c.name
                ),
            ));
        }
    }
    Ok(TestFile {
        path: path.to_path_buf(),
        job,
        cases,
    })
}

/// RFC 3339 → epoch millis, via arrow's parser (no extra dependency).
fn chrono_parse(s: &str) -> Option<i64> {
    let a = arrow::array::StringArray::from(vec![s]);
    let ts = arrow::compute::cast(
        &a,
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
    )
    .ok()?;
    let ts = ts.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
    (!ts.is_null(0)).then(|| ts.value(0))
}

/// Build the `events` batch: CSV with every column, parsed by arrow-csv
/// against the real events schema so types match production exactly.
fn events_batch(schema: &SchemaRef, case: &Case, window_ms: i64) -> Result<RecordBatch, String> {
    for c in &case.events.columns {
        if schema.index_of(c).is_err() {
            return Err(format!(
                "events column {c:?} does not exist (see jobs/README.md for the events table)"
            ));
        }
    }
    let col_of = |name: &str| case.events.columns.iter().position(|c| c == name);
    let time_col = col_of("event_time").ok_or("events need an event_time column")?;
    let first = case
        .events
        .rows
        .first()
        .map(|r| {
            chrono_parse(&r[time_col])
                .ok_or(format!("event_time {:?} is not RFC 3339", r[time_col]))
        })
        .transpose()?
        .unwrap_or(0);
    let start = case
        .window_start
        .unwrap_or(first.div_euclid(window_ms) * window_ms);
    let iso = |ms: i64| -> String {
        let a = arrow::array::TimestampMillisecondArray::from(vec![ms]);
        let s = arrow::compute::cast(&a, &DataType::Utf8).expect("timestamp to string");
        format!("{}Z", s.as_string::<i32>().value(0))
    };
    let mut csv = String::new();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    csv.push_str(&names.join(","));
    csv.push('\n');
    for (r, row) in case.events.rows.iter().enumerate() {
        let cells: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                let given = col_of(f.name())
                    .map(|i| row[i].clone())
                    .filter(|v| v != NULL_CELL);
                let v = match (f.name().as_str(), given) {
                    (_, Some(v)) => v,
                    ("window_start", None) => iso(start),
                    ("window_end", None) => iso(start + window_ms),
                    ("request_id", None) => format!("req-{r}"),
                    ("_offset", None) => r.to_string(),
                    ("has_response" | "account_known", None) => "true".into(),
                    (_, None) if f.is_nullable() => NULL_CELL.into(),
                    (_, None) => match f.data_type() {
                        DataType::Utf8 => String::new(),
                        DataType::Boolean => "false".into(),
                        DataType::Timestamp(..) => iso(start),
                        _ => "0".into(),
                    },
                };
                if v.contains(',') || v.contains('"') {
                    format!("\"{}\"", v.replace('"', "\"\""))
                } else {
                    v
                }
            })
            .collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    // Only the NULL marker is null, so an empty cell stays an empty string.
    let null = regex::Regex::new("^NULL$").expect("constant regex");
    let mut reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(true)
        .with_null_regex(null)
        .build(std::io::Cursor::new(csv.into_bytes()))
        .map_err(|e| e.to_string())?;
    match reader.next() {
        Some(b) => b.map_err(|e| format!("events rows: {e}")),
        None => Ok(RecordBatch::new_empty(schema.clone())),
    }
}

/// Whether `got` is `want` up to the tests' tolerance.
fn within_tolerance(want: f64, got: f64) -> bool {
    (want - got).abs() <= TOLERANCE * want.abs().max(1.0)
}

fn compare(case: &Case, out: &RecordBatch, key: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let got_cols: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut want_sorted = case.expect.columns.clone();
    want_sorted.sort();
    let mut got_sorted = got_cols.clone();
    got_sorted.sort();
    if want_sorted != got_sorted {
        failures.push(format!(
            "columns: expected {:?}, job outputs {:?}",
            case.expect.columns, got_cols
        ));
        return failures;
    }
    let keys = out.column(0).as_string::<i32>();
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..out.num_rows() {
        got.insert(keys.value(i).to_string(), i);
    }
    let key_idx = case
        .expect
        .columns
        .iter()
        .position(|c| c == key)
        .expect("checked above");
    let mut seen = std::collections::BTreeSet::new();
    for row in &case.expect.rows {
        let k = &row[key_idx];
        seen.insert(k.clone());
        let Some(&r) = got.get(k) else {
            failures.push(format!("{key} {k}: expected a row, the job output none"));
            continue;
        };
        for (c, name) in case.expect.columns.iter().enumerate() {
            if c == key_idx {
                continue;
            }
            let col = out
                .column_by_name(name)
                .expect("columns compared")
                .as_primitive::<Float64Type>();
            let got_v = (!col.is_null(r)).then(|| col.value(r));
            let want = &row[c];
            let ok = match (want.as_str(), got_v) {
                ("NULL", None) => true,
                ("NULL", Some(_)) | (_, None) => false,
                (w, Some(g)) => match w.parse::<f64>() {
                    Ok(w) => within_tolerance(w, g),
                    Err(_) => {
                        failures.push(format!(
                            "{key} {k}: {name}: expected value {w:?} is not a number"
                        ));
                        continue;
                    }
                },
            };
            if !ok {
                failures.push(format!(
                    "{key} {k}: {name} expected {want}, got {}",
                    got_v.map_or("NULL".to_string(), |g| format!("{g}"))
                ));
            }
        }
    }
    for k in got.keys() {
        if !seen.contains(k) {
            failures.push(format!(
                "{key} {k}: the job output a row that is not expected"
            ));
        }
    }
    failures
}

/// Run every `*.test` under `<jobs_dir>/tests` (optionally filtered by file name).
pub async fn run_dir(
    jobs_dir: &Path,
    cfg: &Config,
    filter: Option<&str>,
) -> Result<GoldenReport, GoldenError> {
    let delay = cfg.window.max_response_delay.as_millis() as i64;
    let detector = Detector::load(jobs_dir, &cfg.jobs.scoring, delay).await?;
    let schema = detector.events_schema.clone();
    let dir = jobs_dir.join("tests");
    let paths: Vec<PathBuf> = files_with_extension(&dir, "test")
        .map_err(|source| GoldenError::Read {
            path: dir.clone(),
            source,
        })?
        .into_iter()
        .filter(|p| {
            filter.is_none_or(|f| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(f))
            })
        })
        .collect();
    let mut report = GoldenReport::default();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| GoldenError::Read {
            path: path.clone(),
            source,
        })?;
        let file = parse_file(&path, &text)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let job: Option<&Job> = detector.jobs.jobs.iter().find(|j| j.name == file.job);
        for case in &file.cases {
            let failures = match job {
                None => vec![format!(
                    "{}: no job named {:?} in {}",
                    file.path.display(),
                    file.job,
                    jobs_dir.display()
                )],
                Some(job) if job.input == JobInput::Events => {
                    run_case(job, &schema, case, detector.jobs.window_ms).await
                }
                Some(job) => run_rollup_case(job, &detector, case).await,
            };
            report.results.push(CaseResult {
                file: file_name.clone(),
                case: case.name.clone(),
                failures,
            });
        }
    }
    Ok(report)
}

/// A context with the case's rows registered as `events`.
fn events_context(
    schema: &SchemaRef,
    case: &Case,
    window_ms: i64,
) -> Result<datafusion::prelude::SessionContext, String> {
    let events = events_batch(schema, case, window_ms)?;
    let ctx = crate::join::window_context();
    MemTable::try_new(events.schema(), vec![vec![events]])
        .and_then(|t| ctx.register_table(EVENTS_TABLE, Arc::new(t)))
        .map_err(|e| e.to_string())?;
    Ok(ctx)
}

async fn run_case(job: &Job, schema: &SchemaRef, case: &Case, window_ms: i64) -> Vec<String> {
    let ctx = match events_context(schema, case, window_ms) {
        Ok(ctx) => ctx,
        Err(e) => return vec![e],
    };
    match run_job(&ctx, job).await {
        Ok(out) => compare(case, &out, &job.key),
        Err(e) => vec![e.to_string()],
    }
}

/// A roll-up's case: the events may span many base windows. Each base
/// window's rows go through the jobs over raw events, and every boundary
/// from the first window's end until nothing is held any more through the
/// roll-ups, as in the worker. The expected table has a `window_end` column:
/// the boundary at which the row is emitted.
async fn run_rollup_case(job: &Job, detector: &Detector, case: &Case) -> Vec<String> {
    let base = detector.jobs.window_ms;
    let Some(end_col) = case.expect.columns.iter().position(|c| c == WINDOW_END) else {
        return vec![format!(
            "a roll-up's expected table needs a `{WINDOW_END}` column: the end of the window each row belongs to"
        )];
    };
    let Some(time_col) = case.events.columns.iter().position(|c| c == "event_time") else {
        return vec!["events need an event_time column".into()];
    };
    // Events by base window.
    let mut by_window: BTreeMap<i64, Vec<Vec<String>>> = BTreeMap::new();
    for row in &case.events.rows {
        let Some(t) = chrono_parse(&row[time_col]) else {
            return vec![format!("event_time {:?} is not RFC 3339", row[time_col])];
        };
        by_window
            .entry(t.div_euclid(base) * base)
            .or_default()
            .push(row.clone());
    }
    let mut expected: BTreeMap<i64, Vec<Vec<String>>> = BTreeMap::new();
    for row in &case.expect.rows {
        let Some(t) = chrono_parse(&row[end_col]) else {
            return vec![format!("window_end {:?} is not RFC 3339", row[end_col])];
        };
        let mut rest = row.clone();
        rest.remove(end_col);
        expected.entry(t).or_default().push(rest);
    }
    let mut expect_columns = case.expect.columns.clone();
    expect_columns.remove(end_col);
    if by_window.is_empty() {
        return vec!["a roll-up case needs events".into()];
    }
    let mut got = match emitted(job, &detector.jobs, detector, case, by_window.clone()).await {
        Ok(got) => got,
        Err(e) => return vec![e],
    };
    if job.panes == Panes::Sum {
        // The job says summing its input per pane does not change its
        // output: hold it to that on this case.
        let mut rows = detector.jobs.clone();
        for j in &mut rows.jobs {
            if j.name == job.name {
                j.panes = Panes::Rows;
            }
        }
        match emitted(job, &rows, detector, case, by_window).await {
            Ok(plain) => {
                if let Some(diff) = differ(&got, &plain) {
                    return vec![format!(
                        "`panes: sum` changes this job's output (summed panes vs. held rows): {diff}"
                    )];
                }
            }
            Err(e) => return vec![e],
        }
    }
    let iso = |ms: i64| {
        let a = arrow::array::TimestampMillisecondArray::from(vec![ms]);
        let s = arrow::compute::cast(&a, &DataType::Utf8).expect("timestamp to string");
        format!("{}Z", s.as_string::<i32>().value(0))
    };
    let ends: std::collections::BTreeSet<i64> =
        got.keys().chain(expected.keys()).copied().collect();
    let mut failures = Vec::new();
    for e in ends {
        let sub = Case {
            expect: Table {
                columns: expect_columns.clone(),
                rows: expected.remove(&e).unwrap_or_default(),
            },
            ..case.clone()
        };
        let out = match got.remove(&e) {
            Some(b) => b,
            None => {
                failures.push(format!(
                    "window_end {}: expected rows, the job emitted no window there",
                    iso(e)
                ));
                continue;
            }
        };
        failures.extend(
            compare(&sub, &out, &job.key)
                .into_iter()
                .map(|f| format!("window_end {}: {f}", iso(e))),
        );
    }
    failures
}

/// What a roll-up `job` of `jobs` emits over a case's events (by base
/// window), by the end of each window it emits.
async fn emitted(
    job: &Job,
    jobs: &JobSet,
    detector: &Detector,
    case: &Case,
    mut by_window: BTreeMap<i64, Vec<Vec<String>>>,
) -> Result<BTreeMap<i64, RecordBatch>, String> {
    let mut rollups = Rollups::default();
    let mut got: BTreeMap<i64, RecordBatch> = BTreeMap::new();
    let Some(&first) = by_window.keys().next() else {
        return Ok(got);
    };
    let base = detector.jobs.window_ms;
    let schema = &detector.events_schema;
    // Raw jobs' outputs by window end; each is handed to the roll-ups once
    // that job's lateness has passed, as the worker does.
    let mut raw: BTreeMap<i64, Vec<(String, RecordBatch)>> = BTreeMap::new();
    let settle = match &job.input {
        JobInput::Job(up) => jobs.settle_ms(up),
        JobInput::Events => 0,
    };
    let last_settle = jobs.max_lateness_ms();
    let mut end = first + base;
    loop {
        if let Some(rows) = by_window.remove(&(end - base)) {
            let sub = Case {
                window_start: Some(end - base),
                events: Table {
                    columns: case.events.columns.clone(),
                    rows,
                },
                ..case.clone()
            };
            let events = match events_batch(schema, &sub, base) {
                Ok(b) => b,
                Err(e) => return Err(e),
            };
            match detector.run_raw(events, |_| true).await {
                Ok(outs) => raw.insert(end, outs),
                Err(e) => return Err(e.to_string()),
            };
        }
        let settled = jobs
            .jobs
            .iter()
            .filter(|j| j.input == JobInput::Events)
            .filter_map(|j| {
                let at = end - j.lateness_ms;
                let (_, b) = raw.get(&at)?.iter().find(|(n, _)| *n == j.name)?;
                Some((j.name.clone(), at, b.clone()))
            })
            .collect();
        match rollups.boundary(jobs, end, settled).await {
            Ok(out) => {
                if let Some((_, b)) = out.outputs.into_iter().find(|(n, _)| *n == job.name) {
                    got.insert(end - settle, b);
                }
            }
            Err(e) => return Err(e.to_string()),
        }
        raw = raw.split_off(&(end - last_settle + 1));
        if by_window.is_empty() && raw.is_empty() && rollups.held_entries() == 0 {
            break;
        }
        end += base;
    }
    Ok(got)
}

/// The first difference between two runs' outputs (by window end, then
/// key and column, numbers within the tolerance), if any.
fn differ(a: &BTreeMap<i64, RecordBatch>, b: &BTreeMap<i64, RecordBatch>) -> Option<String> {
    if a.keys().ne(b.keys()) {
        return Some(format!(
            "windows ending at {:?} vs. {:?}",
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>()
        ));
    }
    // Job outputs are normalised to a key and Float64 features.
    let rows = |batch: &RecordBatch| -> BTreeMap<String, Vec<Option<f64>>> {
        let keys = batch.column(0).as_string::<i32>();
        let cols: Vec<_> = (1..batch.num_columns())
            .map(|c| batch.column(c).as_primitive::<Float64Type>())
            .collect();
        (0..batch.num_rows())
            .map(|r| {
                let values = cols.iter().map(|v| v.is_valid(r).then(|| v.value(r)));
                (keys.value(r).to_string(), values.collect())
            })
            .collect()
    };
    for (end, x) in a {
        let (x_rows, y_rows) = (rows(x), rows(&b[end]));
        if x_rows.keys().ne(y_rows.keys()) {
            return Some(format!("window ending {end}: accounts differ"));
        }
        for (key, xs) in &x_rows {
            for (c, (u, v)) in xs.iter().zip(&y_rows[key]).enumerate() {
                let same = match (u, v) {
                    (Some(u), Some(v)) => within_tolerance(*u, *v),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    return Some(format!(
                        "window ending {end}, account {key}, {}: {u:?} vs. {v:?}",
                        x.schema().field(c + 1).name()
                    ));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reports_line_numbers() {
        let e = parse_file(
            Path::new("t.test"),
            "job: x\ncase: a\nevents:\na | b\n1 | 2 | 3\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("t.test:5"), "{e}");
    }

    /// The golden tests shipped in jobs/tests all pass.
    #[tokio::test(flavor = "multi_thread")]
    async fn shipped_golden_tests_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut cfg = Config::defaults();
        cfg.jobs.dir = root.join("jobs");
        cfg.jobs.scoring = root.join("jobs/scoring.toml");
        let report = run_dir(&cfg.jobs.dir, &cfg, None).await.unwrap();
        assert!(
            report.total() >= 8,
            "expected golden tests for every job:\n{report}"
        );
        assert!(report.all_passed(), "{report}");
    }

    /// A jobs directory of its own under the temp dir: the shipped `volume`
    /// job, an empty `tests/` and a one-rule scoring model, with a config
    /// pointing at them.
    fn scratch_jobs(name: &str) -> (std::path::PathBuf, Config) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = std::env::temp_dir().join(format!("dw-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tests")).unwrap();
        std::fs::copy(root.join("jobs/volume.sql"), dir.join("volume.sql")).unwrap();
        let scoring = "model_version = \"t\"\ntop_reasons = 1\n[levels]\nelevated = 0.3\nhigh = 0.6\ncritical = 0.8\n[[rule]]\nfeature = \"requests\"\nweight = 0.1\nlow = 1.0\nhigh = 2.0\n";
        std::fs::write(dir.join("scoring.toml"), scoring).unwrap();
        let mut cfg = Config::defaults();
        cfg.jobs.scoring = dir.join("scoring.toml");
        (dir, cfg)
    }

    /// `panes: sum` on a job that counts rows is caught by its golden case,
    /// even when the case expects what the job computes over summed panes.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_false_panes_claim_fails() {
        let (dir, cfg) = scratch_jobs("panes");
        let rollup = |panes: &str| {
            format!(
                "-- name: windows_2h\n-- input: job:volume\n-- key: account_id\n-- window: hop 2h slide 1h\n-- panes: {panes}\nSELECT account_id, CAST(count(*) AS DOUBLE) AS active_windows_2h FROM volume GROUP BY account_id\n"
            )
        };
        // Two active 10-minute windows in the first hour: two rows, one pane.
        let case = "job: windows_2h\ncase: two windows in one hour\nevents:\naccount_id | event_time\na | 2026-11-02T00:01:00Z\na | 2026-11-02T00:11:00Z\nexpect:\nwindow_end | account_id | active_windows_2h\n2026-11-02T01:00:00Z | a | 1\n2026-11-02T02:00:00Z | a | 1\n";
        std::fs::write(dir.join("tests/w.test"), case).unwrap();

        std::fs::write(dir.join("windows_2h.sql"), rollup("sum")).unwrap();
        let report = run_dir(&dir, &cfg, None).await.unwrap();
        let text = report.to_string();
        assert_eq!(report.failed(), 1, "{text}");
        assert!(
            text.contains("`panes: sum` changes this job's output"),
            "{text}"
        );
        assert!(text.contains("2.0") && text.contains("1.0"), "{text}");

        // Reading rows, the same case (with the true counts) passes.
        std::fs::write(dir.join("windows_2h.sql"), rollup("rows")).unwrap();
        std::fs::write(dir.join("tests/w.test"), case.replace("| a | 1", "| a | 2")).unwrap();
        let report = run_dir(&dir, &cfg, None).await.unwrap();
        assert!(report.all_passed(), "{report}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A golden test can fail: a wrong expectation is reported with the value.
    #[tokio::test(flavor = "multi_thread")]
    async fn wrong_expectation_fails_with_diff() {
        let (dir, cfg) = scratch_jobs("golden");
        std::fs::write(
            dir.join("tests/v.test"),
            "job: volume\ncase: wrong\nevents:\naccount_id | event_time\na | 2026-11-02T00:00:01Z\nexpect:\naccount_id | requests | output_tokens | rate_limited_share | active_minute_share\na | 2 | 0 | 0 | 0.1\n",
        )
        .unwrap();
        let report = run_dir(&dir, &cfg, None).await.unwrap();
        assert_eq!(report.failed(), 1);
        let text = report.to_string();
        assert!(text.contains("requests expected 2, got 1"), "{text}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
