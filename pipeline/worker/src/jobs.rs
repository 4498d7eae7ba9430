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
use crate::plan::Prepared;

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
    #[error("jobs: {0}")]
    Graph(String),
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

/// Which windows a job's output rows cover, declared by `-- window:`.
///
/// Every window is aligned to the Unix epoch (UTC), so a `tumble 1d` window
/// is a UTC day and windows of different jobs end on common boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `tumble SIZE`: back-to-back windows `[k·size, (k+1)·size)`.
    Tumble { size_ms: i64 },
    /// `hop SIZE slide SLIDE`: windows of `size` starting every `slide`; an
    /// input row belongs to `size / slide` of them.
    Hop { size_ms: i64, slide_ms: i64 },
    /// `session GAP [max MAX]`: per key, input rows less than `gap` apart
    /// form one session, cut at `max` so that a never-idle key (a 24/7
    /// bot) still gets results and bounded state.
    Session { gap_ms: i64, max_ms: i64 },
}

/// A session's length cap when the header does not give one.
pub const DEFAULT_SESSION_MAX_MS: i64 = 86_400_000;

impl WindowKind {
    /// The longest stretch of input one window covers.
    pub fn span_ms(&self) -> i64 {
        match *self {
            WindowKind::Tumble { size_ms } | WindowKind::Hop { size_ms, .. } => size_ms,
            WindowKind::Session { max_ms, .. } => max_ms,
        }
    }

    /// How long an input row must be held: the longest window it can
    /// belong to, plus for sessions the gap that decides whether it closed.
    pub fn horizon_ms(&self) -> i64 {
        match *self {
            WindowKind::Session { gap_ms, max_ms } => max_ms + gap_ms,
            other => other.span_ms(),
        }
    }

    fn parse(text: &str) -> Result<WindowKind, String> {
        let d = |s: &str| -> Result<i64, String> {
            let ms = parse_duration(s)?.as_millis() as i64;
            if ms <= 0 {
                return Err(format!("window duration {s:?} must be positive"));
            }
            Ok(ms)
        };
        let usage = "expected `tumble SIZE`, `hop SIZE slide SLIDE` or `session GAP [max MAX]`, e.g. `tumble 10m`, `hop 1d slide 1h`, `session 30m max 1d`";
        let kind = match text.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["tumble", size] => WindowKind::Tumble { size_ms: d(size)? },
            ["hop", size, "slide", slide] | ["hop", size, slide] => WindowKind::Hop {
                size_ms: d(size)?,
                slide_ms: d(slide)?,
            },
            ["session", gap] => WindowKind::Session {
                gap_ms: d(gap)?,
                max_ms: DEFAULT_SESSION_MAX_MS,
            },
            ["session", gap, "max", max] => WindowKind::Session {
                gap_ms: d(gap)?,
                max_ms: d(max)?,
            },
            _ => return Err(format!("window {text:?}: {usage}")),
        };
        match kind {
            WindowKind::Hop { size_ms, slide_ms }
                if size_ms % slide_ms != 0 || slide_ms > size_ms =>
            {
                Err(format!(
                    "window {text:?}: the size must be a whole multiple of the slide"
                ))
            }
            WindowKind::Session { gap_ms, max_ms } if max_ms < gap_ms => {
                Err(format!("window {text:?}: max must be at least the gap"))
            }
            k => Ok(k),
        }
    }
}

impl std::fmt::Display for WindowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = crate::config::format_duration_ms;
        match *self {
            WindowKind::Tumble { size_ms } => write!(f, "tumble {}", d(size_ms)),
            WindowKind::Hop { size_ms, slide_ms } => {
                write!(f, "hop {} slide {}", d(size_ms), d(slide_ms))
            }
            WindowKind::Session { gap_ms, max_ms } => {
                write!(f, "session {} max {}", d(gap_ms), d(max_ms))
            }
        }
    }
}

/// What a job reads, declared by `-- input:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobInput {
    /// `events`: the joined, enriched raw events of one base window.
    Events,
    /// `job:NAME`: the output rows of another job (a roll-up), as a table
    /// named after that job, with the window bounds of each row.
    Job(String),
}

impl std::fmt::Display for JobInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobInput::Events => f.write_str(EVENTS_TABLE),
            JobInput::Job(name) => write!(f, "job:{name}"),
        }
    }
}

/// What a hopping roll-up reads (`-- panes:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Panes {
    /// Its input job's rows as they were held (the default).
    #[default]
    Rows,
    /// One row per account per slide-long pane: the sum of each feature
    /// over the pane's held rows (NULL when all are NULL), with the pane's
    /// `window_start` and `window_end`. A job declares it when its output
    /// does not change by that (it only sums its input per account, or per
    /// a grouping no finer than the slide). Each pane is summed once and
    /// reused by every window that covers it, so a day-long window every
    /// hour reads 24 rows per account instead of 144. `jobs test` checks
    /// the claim on the job's golden cases by running them both ways.
    Sum,
}

/// One parsed job file.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub family: String,
    pub description: String,
    pub input: JobInput,
    pub key: String,
    pub window: WindowKind,
    pub lateness_ms: i64,
    pub panes: Panes,
    pub sql: String,
    pub path: PathBuf,
}

impl Job {
    pub fn parse(path: &Path, text: &str) -> Result<Job, JobError> {
        let err = |message: String| JobError::Header {
            path: path.to_path_buf(),
            message,
        };
        const KEYS: [&str; 8] = [
            "name",
            "family",
            "description",
            "input",
            "key",
            "window",
            "lateness",
            "panes",
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
        if !valid_name(&name) {
            return Err(err(format!(
                "job name {name:?} must be letters, digits and '_', starting with a letter"
            )));
        }
        let input_text = get("input")?;
        let input = if input_text == EVENTS_TABLE {
            JobInput::Events
        } else if let Some(upstream) = input_text.strip_prefix("job:") {
            let upstream = upstream.trim();
            if !valid_name(upstream) {
                return Err(err(format!(
                    "input {input_text:?}: {upstream:?} is not a job name"
                )));
            }
            JobInput::Job(upstream.to_string())
        } else {
            return Err(err(format!(
                "input {input_text:?}: expected `{EVENTS_TABLE}` (raw events) or `job:NAME` (another job's output)"
            )));
        };
        let key = get("key")?;
        if key != ACCOUNT_KEY {
            return Err(err(format!(
                "key {key:?} is not supported yet: jobs are keyed by `{ACCOUNT_KEY}`"
            )));
        }
        let window = WindowKind::parse(&get("window")?).map_err(err)?;
        let lateness_ms = match header.get("lateness") {
            Some(l) => parse_duration(l).map_err(err)?.as_millis() as i64,
            None => 0,
        };
        if lateness_ms != 0 && input != JobInput::Events {
            return Err(err(format!(
                "lateness {}: a roll-up reads settled values of its input (windows of a job with lateness are read once that lateness has passed), so it declares none",
                header.get("lateness").map_or("", |s| s.as_str())
            )));
        }
        let panes = match header.get("panes").map(|p| p.as_str()) {
            None | Some("rows") => Panes::Rows,
            Some("sum") => Panes::Sum,
            Some(other) => {
                return Err(err(format!(
                    "panes {other:?}: expected `rows` (the default) or `sum`"
                )))
            }
        };
        if panes == Panes::Sum
            && (input == JobInput::Events || !matches!(window, WindowKind::Hop { .. }))
        {
            return Err(err(format!(
                "panes sum: only a roll-up with a hopping window reads summed panes (this job reads `{input_text}` with `{window}`)"
            )));
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
            window,
            lateness_ms,
            panes,
            sql,
            path: path.to_path_buf(),
        })
    }

    /// The table its SQL reads.
    pub fn table(&self) -> &str {
        match &self.input {
            JobInput::Events => EVENTS_TABLE,
            JobInput::Job(name) => name,
        }
    }
}

/// Job names double as table names, so they must be plain identifiers
/// (no quoting needed in SQL).
fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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

/// All jobs of a directory: in dependency order (every job after the job
/// it reads), ties by file name.
#[derive(Debug, Clone)]
pub struct JobSet {
    pub jobs: Vec<Job>,
    /// The base window: the tumbling window of every job over raw events.
    /// Raw events are held only this long; longer horizons are roll-ups.
    pub window_ms: i64,
    pub dir: PathBuf,
    /// Each job's plan, prepared once by [`Detector::load`] over its input
    /// table's schema; without one a job is planned at every run.
    ///
    /// [`Detector::load`]: crate::process::Detector::load
    pub plans: crate::plan::JobPlans,
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
        if jobs.is_empty() {
            return Err(JobError::Empty(dir.to_path_buf()));
        }
        let header = |j: &Job, message: String| JobError::Header {
            path: j.path.clone(),
            message,
        };
        let mut names = BTreeSet::new();
        for j in &jobs {
            if !names.insert(j.name.clone()) {
                return Err(header(j, format!("job name {} is used twice", j.name)));
            }
        }
        let raw: Vec<&Job> = jobs
            .iter()
            .filter(|j| j.input == JobInput::Events)
            .collect();
        let first = raw.first().ok_or_else(|| {
            JobError::Graph(
                "no job reads `events`: roll-ups need a job over raw events at the bottom".into(),
            )
        })?;
        let window_ms = match first.window {
            WindowKind::Tumble { size_ms } => size_ms,
            other => {
                return Err(header(first, format!(
                    "window `{other}`: jobs over raw events use `tumble SIZE`; build hopping and session windows over their output with `-- input: job:{}`",
                    first.name
                )))
            }
        };
        for j in &raw {
            if j.window != first.window {
                return Err(JobError::WindowMismatch(format!(
                    "{} uses `{}`, {} uses `{}`: jobs over raw events share one tumbling window (raw events are held only that long); read a longer window from another job's output with `-- input: job:NAME`",
                    first.name, first.window, j.name, j.window
                )));
            }
        }
        let by_name: BTreeMap<&str, &Job> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
        for j in &jobs {
            let JobInput::Job(up) = &j.input else {
                continue;
            };
            let Some(upstream) = by_name.get(up.as_str()) else {
                return Err(header(
                    j,
                    format!("input job:{up}: no such job in {}", dir.display()),
                ));
            };
            // Roll-ups combine non-overlapping rows, each counted once.
            let WindowKind::Tumble { size_ms: unit } = upstream.window else {
                return Err(header(j, format!(
                    "input job:{up} has window `{}`; a roll-up reads a tumbling job (overlapping or session rows would be counted more than once)",
                    upstream.window
                )));
            };
            let multiples: Vec<i64> = match j.window {
                WindowKind::Tumble { size_ms } => vec![size_ms],
                WindowKind::Hop { size_ms, slide_ms } => vec![size_ms, slide_ms],
                WindowKind::Session { gap_ms, max_ms } => vec![gap_ms, max_ms],
            };
            if multiples.iter().any(|m| m % unit != 0) {
                return Err(header(
                    j,
                    format!(
                        "window `{}` must be made of whole windows of its input job:{up} ({})",
                        j.window,
                        crate::config::format_duration_ms(unit)
                    ),
                ));
            }
        }
        let order = dependency_order(&jobs)?;
        let mut slots: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
        let jobs = order
            .into_iter()
            .map(|i| slots[i].take().expect("each job once"))
            .collect();
        Ok(JobSet {
            jobs,
            window_ms,
            dir: dir.to_path_buf(),
            plans: BTreeMap::new(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Run `job` over `rows` of its input table, through its prepared plan
    /// where there is one (see [`run_bound`]).
    pub async fn run(&self, job: &Job, rows: Vec<RecordBatch>) -> Result<RecordBatch, JobError> {
        run_bound(job, self.plans.get(&job.name).map(|p| p.as_ref()), rows).await
    }

    /// Jobs whose output another job reads.
    pub fn is_input(&self, name: &str) -> bool {
        self.jobs
            .iter()
            .any(|j| matches!(&j.input, JobInput::Job(up) if up == name))
    }

    /// How long the output rows of `name` must be held for the roll-ups
    /// that read it (0: none does).
    pub fn horizon_ms(&self, name: &str) -> i64 {
        self.jobs
            .iter()
            .filter(|j| matches!(&j.input, JobInput::Job(up) if up == name))
            .map(|j| j.window.horizon_ms())
            .max()
            .unwrap_or(0)
    }

    /// How long held output rows of `name` are kept after their window's
    /// end: for the roll-ups that read it (which evaluate it once settled),
    /// and for revisions of base windows within the lateness, which show
    /// the roll-up windows that closed with them again.
    pub fn keep_ms(&self, name: &str) -> i64 {
        self.horizon_ms(name) + self.settle_ms(name) + self.max_lateness_ms()
    }

    /// How much event-time history before its window's end one output of
    /// `name` depends on: its window's horizon and, for a roll-up, its
    /// input's history. (Lateness and settling look forward: late rows
    /// and settled inputs come after the window's end.) What a replay must
    /// read before the first window it emits to reproduce the live outputs.
    pub fn history_of(&self, name: &str) -> i64 {
        match self.get(name) {
            Some(j) => {
                j.window.horizon_ms()
                    + match &j.input {
                        JobInput::Job(up) => self.history_of(up),
                        JobInput::Events => 0,
                    }
            }
            None => 0,
        }
    }

    /// The longest [`history_of`](Self::history_of) over all jobs.
    pub fn history_ms(&self) -> i64 {
        self.jobs
            .iter()
            .map(|j| self.history_of(&j.name))
            .max()
            .unwrap_or(0)
    }

    /// The longest lateness of the jobs over raw events: how long a base
    /// window's rows are kept after it was emitted, for revisions.
    pub fn max_lateness_ms(&self) -> i64 {
        self.jobs.iter().map(|j| j.lateness_ms).max().unwrap_or(0)
    }

    /// When the output of `name` for a window is final, after the window's
    /// end: a raw job's lateness; for a roll-up, its input's (roll-ups read
    /// settled rows, so a window of theirs ending at `T` is emitted at
    /// boundary `T + settle`).
    pub fn settle_ms(&self, name: &str) -> i64 {
        match self.get(name) {
            Some(Job {
                input: JobInput::Job(up),
                ..
            }) => self.settle_ms(up),
            Some(j) => j.lateness_ms,
            None => 0,
        }
    }

    /// Each job's level in the dependency graph (0 = reads raw events),
    /// for `jobs validate`.
    pub fn levels(&self) -> Vec<(usize, &Job)> {
        let mut level: BTreeMap<&str, usize> = BTreeMap::new();
        self.jobs
            .iter()
            .map(|j| {
                let l = match &j.input {
                    JobInput::Events => 0,
                    JobInput::Job(up) => level.get(up.as_str()).map_or(0, |l| l + 1),
                };
                level.insert(&j.name, l);
                (l, j)
            })
            .collect()
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

/// Indices of `jobs` so that each comes after the job it reads (Kahn's
/// algorithm, ready jobs taken in file order); a cycle is an error naming
/// its jobs.
fn dependency_order(jobs: &[Job]) -> Result<Vec<usize>, JobError> {
    let index: BTreeMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.name.as_str(), i))
        .collect();
    let upstream: Vec<Option<usize>> = jobs
        .iter()
        .map(|j| match &j.input {
            JobInput::Events => None,
            JobInput::Job(up) => index.get(up.as_str()).copied(),
        })
        .collect();
    let mut done = vec![false; jobs.len()];
    let mut order = Vec::with_capacity(jobs.len());
    while order.len() < jobs.len() {
        let ready = (0..jobs.len()).find(|&i| !done[i] && upstream[i].is_none_or(|u| done[u]));
        match ready {
            Some(i) => {
                done[i] = true;
                order.push(i);
            }
            None => {
                // Every job left waits on another left: follow the chain
                // from the first until it repeats.
                let start = (0..jobs.len()).find(|&i| !done[i]).expect("some left");
                let mut chain = vec![start];
                let mut at = start;
                while let Some(u) = upstream[at] {
                    if let Some(pos) = chain.iter().position(|&c| c == u) {
                        let cycle: Vec<&str> = chain[pos..]
                            .iter()
                            .chain([&u])
                            .map(|&c| jobs[c].name.as_str())
                            .collect();
                        return Err(JobError::Graph(format!(
                            "jobs read each other in a cycle: {}",
                            cycle.join(" <- ")
                        )));
                    }
                    chain.push(u);
                    at = u;
                }
                unreachable!("a job without input would have been ready");
            }
        }
    }
    Ok(order)
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

/// Time spent running each job (every run of [`run_bound`] in this
/// process), for `bench` and whoever asks which job costs what.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JobTime {
    pub runs: u64,
    pub rows_in: u64,
    pub time: std::time::Duration,
}

static JOB_TIMES: std::sync::Mutex<BTreeMap<String, JobTime>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Every job's runs so far in this process, by name.
pub fn job_times() -> BTreeMap<String, JobTime> {
    JOB_TIMES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Run `job` over `rows`, bound to its input table: through its plan
/// prepared at load time when the rows have the schema it was planned for
/// (always, for rows this worker made), else planned afresh, as rows held
/// by an older version and read back from a checkpoint may need.
pub async fn run_bound(
    job: &Job,
    prepared: Option<&Prepared>,
    rows: Vec<RecordBatch>,
) -> Result<RecordBatch, JobError> {
    let started = std::time::Instant::now();
    let rows_in: u64 = rows.iter().map(|b| b.num_rows() as u64).sum();
    let out = run_bound_untimed(job, prepared, rows).await;
    let mut times = JOB_TIMES.lock().unwrap_or_else(|e| e.into_inner());
    let t = times.entry(job.name.clone()).or_default();
    t.runs += 1;
    t.rows_in += rows_in;
    t.time += started.elapsed();
    out
}

async fn run_bound_untimed(
    job: &Job,
    prepared: Option<&Prepared>,
    rows: Vec<RecordBatch>,
) -> Result<RecordBatch, JobError> {
    let sql_err = |source| JobError::Sql {
        job: job.name.clone(),
        source,
    };
    let concat = |schema: &SchemaRef, batches: &[RecordBatch]| {
        arrow::compute::concat_batches(schema, batches)
            .map_err(|e| sql_err(datafusion::error::DataFusionError::from(e)))
    };
    let table = job.table();
    // One batch: operators pay a fixed cost per input batch, and a day-long
    // roll-up reads one small batch per 10-minute window.
    let rows = match rows.first().map(|b| b.schema()) {
        Some(schema) if rows.len() > 1 => vec![concat(&schema, &rows)?],
        _ => rows,
    };
    match prepared {
        Some(p) if rows.iter().all(|b| p.accepts(table, &b.schema())) => {
            let schema = p.schema();
            let batches = p
                .run(vec![(table.to_string(), rows)])
                .await
                .map_err(sql_err)?;
            normalize_output(job, concat(&schema, &batches)?)
        }
        _ => {
            let Some(schema) = rows.first().map(|b| b.schema()) else {
                return Err(JobError::Output {
                    job: job.name.clone(),
                    message: "no prepared plan and no rows to plan with".into(),
                });
            };
            let ctx = crate::join::window_context();
            let mem =
                datafusion::datasource::MemTable::try_new(schema, vec![rows]).map_err(sql_err)?;
            ctx.register_table(table, Arc::new(mem)).map_err(sql_err)?;
            run_job(&ctx, job).await
        }
    }
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
    if keys.null_count() > 0 {
        return Err(out_err("a row has a NULL key".into()));
    }
    // Keys strictly increasing are in order and unique: one pass, no copy.
    // That is the usual case (the join leaves `events` sorted by account
    // and aggregations keep first-appearance order).
    if (1..keys.len()).all(|i| keys.value(i - 1) < keys.value(i)) {
        return Ok(out);
    }
    let out = sorted_by_key(&out).map_err(|e| out_err(e.to_string()))?;
    let keys = out.column(0).as_string::<i32>();
    if let Some(i) = (1..keys.len()).find(|&i| keys.value(i - 1) == keys.value(i)) {
        return Err(out_err(format!(
            "key {:?} appears twice: a job must output one row per key (GROUP BY the key)",
            keys.value(i)
        )));
    }
    Ok(out)
}

/// `batch` with its rows in key order (column 0, no NULLs).
///
/// A job's output order is whatever its plan emits: a hash aggregation
/// gives groups in order of first appearance, a join its probe order, and
/// another plan of the same SQL (a DataFusion upgrade, a changed optimiser
/// rule) another order. Roll-ups read job outputs in the order they hold
/// them, and an aggregate across accounts (a floating-point sum over a
/// window's rows) depends on that order, so a score's bytes could depend on
/// the plan. In key order they depend on the rows alone.
fn sorted_by_key(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let indices = arrow::compute::sort_to_indices(batch.column(0), None, None)?;
    arrow::compute::take_record_batch(batch, &indices)
}

/// Merge job outputs (from [`run_job`]) into one table: `account_id` plus
/// one Float64 column per feature, sorted by name; rows sorted by account,
/// covering every account of `accounts` and of the outputs (features absent
/// for an account are NULL).
pub fn merge_outputs(
    outputs: &[(String, RecordBatch)],
    accounts: &[String],
) -> Result<RecordBatch, JobError> {
    // Every account once, sorted; each job's rows are placed by one lookup
    // per row, not one map per feature (that was most of the scoring time).
    let mut all: BTreeSet<&str> = accounts.iter().map(String::as_str).collect();
    for (_, out) in outputs {
        all.extend(out.column(0).as_string::<i32>().iter().flatten());
    }
    let index: std::collections::HashMap<&str, usize> =
        all.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    let mut features: BTreeMap<&str, (&str, Vec<Option<f64>>)> = BTreeMap::new();
    for (job, out) in outputs {
        let keys = out.column(0).as_string::<i32>();
        let rows: Vec<Option<usize>> = keys.iter().map(|k| k.map(|k| index[k])).collect();
        for (i, field) in out.schema_ref().fields().iter().enumerate().skip(1) {
            let name = field.name().as_str();
            if let Some((first, _)) = features.get(name) {
                return Err(JobError::DuplicateFeature {
                    feature: name.to_string(),
                    first: first.to_string(),
                    second: job.clone(),
                });
            }
            let vals = out.column(i).as_primitive::<Float64Type>();
            let mut col = vec![None; all.len()];
            for (r, at) in rows.iter().enumerate() {
                if let Some(at) = at {
                    col[*at] = (!vals.is_null(r))
                        .then(|| vals.value(r))
                        .filter(|v| v.is_finite());
                }
            }
            features.insert(name, (job.as_str(), col));
        }
    }
    let mut fields = vec![Field::new(ACCOUNT_KEY, DataType::Utf8, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(all.iter()))];
    for (name, (_, values)) in features {
        fields.push(Field::new(name, DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from(values)));
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
        assert_eq!(j.window, WindowKind::Tumble { size_ms: 600_000 });
        assert_eq!(j.input, JobInput::Events);
        assert_eq!(j.description, "Requests per account.");
    }

    #[test]
    fn window_kinds_parse_and_print() {
        let cases = [
            (
                "tumble 1h",
                WindowKind::Tumble { size_ms: 3_600_000 },
                "tumble 1h",
            ),
            (
                "hop 1d slide 1h",
                WindowKind::Hop {
                    size_ms: 86_400_000,
                    slide_ms: 3_600_000,
                },
                "hop 1d slide 1h",
            ),
            (
                "hop 30m 10m",
                WindowKind::Hop {
                    size_ms: 1_800_000,
                    slide_ms: 600_000,
                },
                "hop 30m slide 10m",
            ),
            (
                "session 30m",
                WindowKind::Session {
                    gap_ms: 1_800_000,
                    max_ms: DEFAULT_SESSION_MAX_MS,
                },
                "session 30m max 1d",
            ),
            (
                "session 20m max 6h",
                WindowKind::Session {
                    gap_ms: 1_200_000,
                    max_ms: 21_600_000,
                },
                "session 20m max 6h",
            ),
        ];
        for (text, kind, shown) in cases {
            assert_eq!(WindowKind::parse(text).unwrap(), kind, "{text}");
            assert_eq!(kind.to_string(), shown);
        }
        for bad in [
            "hop 1h slide 25m",
            "hop 10m slide 1h",
            "session 1h max 10m",
            "tumble 0s",
            "sliding 1h",
        ] {
            assert!(WindowKind::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    fn job(name: &str, input: &str, window: &str) -> Job {
        let text = GOOD
            .replace("name: volume", &format!("name: {name}"))
            .replace("input: events", &format!("input: {input}"))
            .replace("tumble 10m", window);
        Job::parse(Path::new(&format!("{name}.sql")), &text).unwrap()
    }

    #[test]
    fn job_graph_orders_roll_ups_after_their_input() {
        let set = JobSet::from_jobs(
            Path::new("."),
            vec![
                job("daily", "job:hourly", "hop 1d slide 1h"),
                job("hourly", "job:volume", "tumble 1h"),
                job("sessions", "job:volume", "session 30m max 1d"),
                job("volume", "events", "tumble 10m"),
            ],
        )
        .unwrap();
        let order: Vec<(usize, &str)> = set
            .levels()
            .into_iter()
            .map(|(l, j)| (l, j.name.as_str()))
            .collect();
        assert_eq!(
            order,
            vec![(0, "volume"), (1, "hourly"), (2, "daily"), (1, "sessions")]
        );
        assert_eq!(set.window_ms, 600_000);
        assert_eq!(set.horizon_ms("volume"), 86_400_000 + 1_800_000);
        assert_eq!(set.horizon_ms("hourly"), 86_400_000);
        assert_eq!(set.horizon_ms("daily"), 0);
        // daily (1 d) over hourly (1 h) over volume (10 min): a day's window
        // of hours of 10-minute windows reaches back 1 d + 1 h + 10 min.
        assert_eq!(set.history_of("volume"), 600_000);
        assert_eq!(set.history_of("daily"), 86_400_000 + 3_600_000 + 600_000);
        assert_eq!(set.history_of("sessions"), 86_400_000 + 1_800_000 + 600_000);
        assert_eq!(set.history_ms(), 86_400_000 + 3_600_000 + 600_000);
    }

    #[test]
    fn job_graph_errors_name_the_problem() {
        let cases = [
            (
                vec![
                    job("a", "job:b", "tumble 1h"),
                    job("b", "job:a", "tumble 1h"),
                    job("v", "events", "tumble 10m"),
                ],
                "cycle: a <- b <- a",
            ),
            (
                vec![
                    job("a", "job:nope", "tumble 1h"),
                    job("v", "events", "tumble 10m"),
                ],
                "job:nope: no such job",
            ),
            (
                vec![
                    job("a", "job:a", "tumble 1h"),
                    job("v", "events", "tumble 10m"),
                ],
                "cycle: a <- a",
            ),
            (
                vec![
                    job("v", "events", "tumble 10m"),
                    job("w", "events", "tumble 1h"),
                ],
                "share one tumbling window",
            ),
            (
                vec![job("v", "events", "hop 1h slide 10m")],
                "use `tumble SIZE`",
            ),
            (
                vec![
                    job("v", "events", "tumble 10m"),
                    job("h", "job:v", "tumble 15m"),
                ],
                "whole windows",
            ),
            (
                vec![
                    job("v", "events", "tumble 10m"),
                    job("h", "job:v", "hop 1h slide 10m"),
                    job("d", "job:h", "tumble 1d"),
                ],
                "reads a tumbling job",
            ),
            (
                vec![
                    job("h", "job:x", "tumble 1h"),
                    job("x", "job:h", "tumble 1h"),
                ],
                "no job reads `events`",
            ),
        ];
        for (jobs, expected) in cases {
            let e = JobSet::from_jobs(Path::new("."), jobs)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e} should contain {expected}");
        }
    }

    #[test]
    fn header_errors_are_specific() {
        let cases = [
            (GOOD.replace("-- name: volume\n", ""), "lacks `-- name"),
            (
                GOOD.replace("tumble 10m", "slide 10m 1m"),
                "expected `tumble",
            ),
            (
                GOOD.replace("input: events", "input: raw"),
                "expected `events` (raw events) or `job:NAME`",
            ),
            (
                GOOD.replace("name: volume", "name: 2x"),
                "starting with a letter",
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
        let mut outputs = Vec::new();
        for j in &set.jobs {
            outputs.push((j.name.clone(), run_job(&ctx, j).await.unwrap()));
        }
        let out = merge_outputs(&outputs, &["b".into(), "c".into()]).unwrap();
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

    /// The same rows in another order (another plan of the same SQL) give
    /// the same output, byte for byte; a key twice is refused wherever the
    /// two rows are.
    #[tokio::test]
    async fn job_output_is_in_key_order_whatever_the_plan_emits() {
        let ctx = crate::join::window_context();
        let job = Job::parse(
            Path::new("v.sql"),
            &GOOD.replace(
                "SELECT account_id, count(*) AS requests FROM events GROUP BY account_id",
                "SELECT account_id, requests FROM events",
            ),
        )
        .unwrap();
        let run = |rows: &'static str| {
            let ctx = ctx.clone();
            let job = job.clone();
            async move {
                ctx.deregister_table("events").unwrap();
                ctx.sql(&format!(
                    "CREATE VIEW events AS SELECT column1 AS account_id, column2 AS requests \
                     FROM (VALUES {rows})"
                ))
                .await
                .unwrap();
                run_job(&ctx, &job).await
            }
        };
        let a = run("('c', 3.5), ('a', 0.1), ('b', 2)").await.unwrap();
        let b = run("('b', 2), ('c', 3.5), ('a', 0.1)").await.unwrap();
        assert_eq!(a, b);
        let keys: Vec<_> = a.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(keys, ["a", "b", "c"]);
        let req = a.column(1).as_primitive::<Float64Type>();
        assert_eq!(req.values().to_vec(), [0.1, 2.0, 3.5]);
        for rows in ["('b', 1), ('a', 2), ('b', 3)", "('a', 1), ('a', 2)"] {
            let err = run(rows).await.unwrap_err().to_string();
            assert!(
                err.contains("\"a\" appears twice") || err.contains("\"b\" appears twice"),
                "{err}"
            );
        }
    }
}
