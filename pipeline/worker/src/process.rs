//! One closed window → risk scores: join, enrich, run the jobs, score.
//!
//! Pure with respect to its inputs (the window's rows, the account table, the
//! jobs and the model), which is what makes live and replayed scores equal.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use datafusion::datasource::MemTable;

use crate::decode::{DecodeError, RecordDecoder};
use crate::enrich::{enrich, AccountTable, EnrichError};
use crate::jobs::{merge_outputs, run_bound, run_job, Job, JobError, JobInput, JobSet};
use crate::join::{join_window, prepare_join, window_context, JoinError};
use crate::metrics::StageTimes;
use crate::plan::{JobPlans, Prepared};
use crate::rollup::{input_schema, RollupRecord, Rollups};
use crate::schemas::SchemaSet;
use crate::score::{RiskScore, ScoreError, ScoringModel};
use crate::window::{ClosedWindow, PartitionWindows, Revision, Side};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Jobs(#[from] JobError),
    #[error(transparent)]
    Model(#[from] ScoreError),
    #[error("scoring model {model} uses features no job produces: {missing:?}")]
    MissingFeatures { model: String, missing: Vec<String> },
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error(transparent)]
    Enrich(#[from] EnrichError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("no job named {0:?}")]
    UnknownJob(String),
}

/// What came out of one window.
#[derive(Debug, Default)]
pub struct WindowResult {
    pub scores: Vec<RiskScore>,
    pub requests: u64,
    pub without_response: u64,
    pub unknown_account: u64,
    pub duplicates: u64,
    /// Responses of this window delivered more than once (copies dropped).
    pub duplicate_responses: u64,
    /// Responses of this window that answer no request of this window or
    /// the previous one (request lost, late, or response too slow).
    pub unmatched_responses: u64,
    /// Request ids of the next window's responses that this window matched:
    /// give them to [`PartitionWindows::note_matched`] before it closes.
    ///
    /// [`PartitionWindows::note_matched`]: crate::window::PartitionWindows::note_matched
    pub matched_next: Vec<String>,
    /// Changes to the roll-ups' held rows, to persist with this cycle.
    pub rollup_records: Vec<RollupRecord>,
    /// A boundary without a base window of its own (roll-ups only).
    pub boundary_only: bool,
    /// Of `scores`, revisions (revision > 0) of earlier windows.
    pub revised: u64,
    /// Member rows of the base window for the cluster stage (when
    /// [`Detector::publish_members`] is on).
    pub members: Vec<crate::cluster::MemberRow>,
    /// Time spent per stage on this boundary.
    pub times: StageTimes,
}

/// Jobs + scoring model, checked against each other at load time.
pub struct Detector {
    pub jobs: JobSet,
    pub model: ScoringModel,
    /// Model version plus a digest of the jobs, written into every score.
    pub model_version: String,
    pub request_schema: SchemaRef,
    pub response_schema: SchemaRef,
    pub max_response_delay_ms: i64,
    /// Schema of the `events` table the jobs read.
    pub events_schema: SchemaRef,
    /// Every feature the jobs produce, in output order.
    pub features: Vec<String>,
    /// Compute member rows for the cluster stage at each first emission.
    pub publish_members: bool,
    /// Request ⋈ response, planned once.
    join: Prepared,
}

impl Detector {
    pub async fn load(
        jobs_dir: &Path,
        model_path: &Path,
        max_response_delay_ms: i64,
    ) -> Result<Self, ProcessError> {
        let jobs = JobSet::load(jobs_dir)?;
        let model = ScoringModel::load(model_path)?;
        let set = SchemaSet::builtin();
        let request_schema = RecordDecoder::new(&set.request, 1, 0)?.output_schema();
        let response_schema = RecordDecoder::new(&set.response, 1, 0)?.output_schema();
        let join = prepare_join(&request_schema, &response_schema, max_response_delay_ms).await?;
        let mut d = Detector {
            model_version: format!("{}+jobs.{:08x}", model.model_version, jobs.digest() as u32),
            jobs,
            model,
            request_schema,
            response_schema,
            max_response_delay_ms,
            events_schema: Arc::new(arrow::datatypes::Schema::empty()),
            features: Vec::new(),
            publish_members: false,
            join,
        };
        let plans;
        (d.events_schema, d.features, plans) = d.dry_run().await?;
        d.jobs.plans = plans;
        let missing = d.model.missing_features(&d.features);
        if !missing.is_empty() {
            return Err(ProcessError::MissingFeatures {
                model: model_path.display().to_string(),
                missing,
            });
        }
        Ok(d)
    }

    /// Plan every job once, over the real `events` schema or its roll-up
    /// input's, and run it over empty input: proves the SQL is valid; returns
    /// the `events` schema, the features and the plans.
    async fn dry_run(&self) -> Result<(SchemaRef, Vec<String>, JobPlans), ProcessError> {
        let events = self
            .events(
                Vec::new(),
                Vec::new(),
                &AccountTable::default(),
                0,
                self.jobs.window_ms,
            )
            .await?
            .0;
        let schema = events.schema();
        let mut outputs: Vec<(String, RecordBatch)> = Vec::new();
        let mut schemas: BTreeMap<String, SchemaRef> = BTreeMap::new();
        let mut plans = JobPlans::new();
        for job in &self.jobs.jobs {
            let input = input_table_schema(job, &schema, &schemas)?;
            let plan = Prepared::plan(window_context(), &job.sql, &[(job.table(), input)])
                .await
                .map_err(|source| JobError::Sql {
                    job: job.name.clone(),
                    source,
                })?;
            let out = run_bound(job, Some(&plan), Vec::new()).await?;
            schemas.insert(job.name.clone(), out.schema());
            outputs.push((job.name.clone(), out));
            plans.insert(job.name.clone(), Arc::new(plan));
        }
        let out = merge_outputs(&outputs, &[])?;
        let features = out
            .schema()
            .fields()
            .iter()
            .skip(1)
            .map(|f| f.name().clone())
            .collect();
        Ok((schema, features, plans))
    }

    /// The logical and physical plan of one job over empty input, as
    /// DataFusion's EXPLAIN prints them.
    pub async fn explain(&self, name: &str) -> Result<String, ProcessError> {
        let target = self
            .jobs
            .get(name)
            .ok_or_else(|| ProcessError::UnknownJob(name.to_string()))?;
        let mut schemas: BTreeMap<String, SchemaRef> = BTreeMap::new();
        for job in &self.jobs.jobs {
            let ctx = empty_input(job, &self.events_schema, &schemas)?;
            if job.name == target.name {
                let df = ctx
                    .sql(&format!("EXPLAIN {}", strip_comments(&job.sql)))
                    .await?;
                let batches = df.collect().await?;
                return Ok(arrow::util::pretty::pretty_format_batches(&batches)?.to_string());
            }
            schemas.insert(job.name.clone(), run_job(&ctx, job).await?.schema());
        }
        Err(ProcessError::UnknownJob(name.to_string()))
    }

    /// The `events` table of a window: joined, deduplicated, enriched.
    /// Also returns (duplicates dropped, rows with unknown account).
    pub async fn events(
        &self,
        requests: Vec<RecordBatch>,
        responses: Vec<RecordBatch>,
        accounts: &AccountTable,
        start: i64,
        end: i64,
    ) -> Result<(RecordBatch, u64, u64), ProcessError> {
        let raw_requests: usize = requests.iter().map(|b| b.num_rows()).sum();
        let joined =
            join_window(&self.join, requests, responses, self.max_response_delay_ms).await?;
        let duplicates = (raw_requests - joined.num_rows()) as u64;
        let (events, unknown) = enrich(&joined, accounts, start, end)?;
        Ok((events, duplicates, unknown as u64))
    }

    /// Score the boundary at `end`: the base window ending there (if it
    /// had events), the revisions of emitted windows that late rows tagged
    /// `end` belong to, and every roll-up window closing there.
    pub async fn score_boundary(
        &self,
        w: Option<ClosedWindow>,
        end: i64,
        windows: &PartitionWindows,
        state: &mut BoundaryState,
        accounts: &AccountTable,
    ) -> Result<WindowResult, ProcessError> {
        let mut result = WindowResult {
            boundary_only: w.is_none(),
            ..Default::default()
        };
        let mut raw_outputs = Vec::new();
        let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let mut window_events = None;
        if let Some(w) = w {
            // This window's own responses, before the join consumes them.
            let mut own_rows = 0;
            let mut own_ids: HashSet<String> = HashSet::new();
            for b in &w.responses[..w.own_responses.min(w.responses.len())] {
                let ids = b
                    .column_by_name("request_id")
                    .expect("responses have request_id")
                    .as_string::<i32>();
                own_rows += b.num_rows();
                own_ids.extend(ids.iter().flatten().map(str::to_string));
            }
            let t = Instant::now();
            let (events, duplicates, unknown) = self
                .events(w.requests, w.responses, accounts, w.start, w.end)
                .await?;
            result.times.join_enrich += t.elapsed();
            let (matched_own, matched_next) = matched_responses(&events, w.end);
            result.unmatched_responses = own_ids
                .iter()
                .filter(|id| {
                    !matched_own.contains(id.as_str()) && !w.matched_by_previous.contains(*id)
                })
                .count() as u64;
            result.duplicate_responses = (own_rows - own_ids.len()) as u64;
            result.duplicates = duplicates;
            result.matched_next = matched_next;
            result.requests = events.num_rows() as u64;
            result.unknown_account = unknown;
            counts = account_counts(&events, &mut result.without_response);
            if events.num_rows() > 0 {
                if self.publish_members {
                    window_events = Some(events.clone());
                }
                let t = Instant::now();
                raw_outputs = self.run_raw(events, |_| true).await?;
                result.times.jobs += t.elapsed();
                if self.jobs.max_lateness_ms() > 0 {
                    state.raw.insert(end, raw_outputs.clone());
                }
            }
        }
        let t = Instant::now();
        for rev in windows.revisions_at(end) {
            let mut scores = self.score_revision(rev, state, accounts).await?;
            result.revised += scores.iter().filter(|s| s.revision > 0).count() as u64;
            result.scores.append(&mut scores);
        }
        // Outputs of raw jobs whose lateness has passed for a window: final,
        // for the roll-ups.
        let mut settled = Vec::new();
        for job in self
            .jobs
            .jobs
            .iter()
            .filter(|j| j.input == JobInput::Events)
        {
            let window_end = end - job.lateness_ms;
            let out = if job.lateness_ms == 0 {
                raw_outputs
                    .iter()
                    .find(|(n, _)| *n == job.name)
                    .map(|(_, b)| b.clone())
            } else {
                self.latest_output(job, window_end, end, windows, state, accounts)
                    .await?
            };
            if let Some(b) = out {
                settled.push((job.name.clone(), window_end, b));
            }
        }
        result.times.revisions += t.elapsed();
        let t = Instant::now();
        let b = state.rollups.boundary(&self.jobs, end, settled).await?;
        result.times.rollups += t.elapsed();
        result.rollup_records = b.records;
        let keep_after = end - self.jobs.max_lateness_ms();
        state.raw = state.raw.split_off(&(keep_after + 1));
        let mut outputs = raw_outputs;
        outputs.extend(b.outputs);
        if outputs.is_empty() {
            return Ok(result);
        }
        let t = Instant::now();
        let accounts_in_window: Vec<String> = counts.keys().cloned().collect();
        let features = merge_outputs(&outputs, &accounts_in_window)?;
        let counts: BTreeMap<&str, (i64, i64)> =
            counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let start = end - self.jobs.window_ms;
        let mut first = self
            .model
            .score(&features, &counts, start, end, &self.model_version);
        result.times.score += t.elapsed();
        if let Some(events) = window_events {
            let t = Instant::now();
            result.members = crate::cluster::member_rows(&events, &first, start, end);
            result.times.members += t.elapsed();
        }
        // First emissions before the revisions of older windows.
        first.append(&mut result.scores);
        result.scores = first;
        Ok(result)
    }

    /// Run the jobs over raw events selected by `which` on `events`.
    pub async fn run_raw(
        &self,
        events: RecordBatch,
        which: impl Fn(&Job) -> bool,
    ) -> Result<Vec<(String, RecordBatch)>, ProcessError> {
        let mut out = Vec::new();
        for job in self
            .jobs
            .jobs
            .iter()
            .filter(|j| j.input == JobInput::Events && which(j))
        {
            out.push((
                job.name.clone(),
                self.jobs.run(job, vec![events.clone()]).await?,
            ));
        }
        Ok(out)
    }

    /// Each raw job's output for a revised window: its rows plus the late
    /// rows within that job's own lateness. Also the per-account counts of
    /// the window with every late row taken in.
    ///
    /// `previous`: the newest outputs of this window, if still known. A job
    /// whose lateness lets it see none of the late rows has the same input
    /// as then, so its output is taken from there instead of run again (most
    /// jobs have no lateness, and re-running all of them was most of a
    /// revision's cost).
    async fn revised_outputs(
        &self,
        rev: &Revision,
        accounts: &AccountTable,
        previous: Option<&Vec<(String, RecordBatch)>>,
    ) -> Result<(Vec<(String, RecordBatch)>, BTreeMap<String, (i64, i64)>), ProcessError> {
        // Jobs grouped by how far their lateness lets them see.
        let mut by_cap: BTreeMap<i64, Vec<&Job>> = BTreeMap::new();
        for job in self
            .jobs
            .jobs
            .iter()
            .filter(|j| j.input == JobInput::Events)
        {
            by_cap
                .entry(rev.tag.min(rev.end + job.lateness_ms))
                .or_default()
                .push(job);
        }
        let mut outputs = Vec::new();
        let mut counts = BTreeMap::new();
        let last_cap = by_cap.keys().next_back().copied();
        for (cap, jobs) in by_cap {
            let sees_late = rev.late.iter().any(|(tag, _, _)| *tag <= cap);
            if !sees_late && Some(cap) != last_cap {
                let known: Option<Vec<(String, RecordBatch)>> = jobs
                    .iter()
                    .map(|j| previous?.iter().find(|(n, _)| *n == j.name).cloned())
                    .collect();
                if let Some(mut known) = known {
                    outputs.append(&mut known);
                    continue;
                }
            }
            let (mut requests, mut responses) = (rev.requests.clone(), rev.responses.clone());
            for (tag, side, rows) in &rev.late {
                if *tag <= cap {
                    match side {
                        Side::Requests => requests.push(rows.clone()),
                        Side::Responses => responses.push(rows.clone()),
                    }
                }
            }
            let (events, _, _) = self
                .events(requests, responses, accounts, rev.start, rev.end)
                .await?;
            if Some(cap) == last_cap {
                counts = account_counts(&events, &mut 0);
            }
            let names: BTreeSet<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
            outputs.extend(
                self.run_raw(events, |j| names.contains(j.name.as_str()))
                    .await?,
            );
        }
        // In the jobs' order, as a first emission has them.
        outputs.sort_by_key(|(n, _)| self.jobs.jobs.iter().position(|j| j.name == *n));
        Ok((outputs, counts))
    }

    /// The revised scores of one window: complete records for the accounts
    /// late rows tagged with this boundary belong to, each with the number
    /// of boundaries that have revised it so far.
    async fn score_revision(
        &self,
        rev: Revision,
        state: &mut BoundaryState,
        accounts: &AccountTable,
    ) -> Result<Vec<RiskScore>, ProcessError> {
        let (raw, counts) = self
            .revised_outputs(&rev, accounts, state.raw.get(&rev.end))
            .await?;
        state.raw.insert(rev.end, raw.clone());
        // Revisions per account: the distinct boundaries its late rows came in.
        let mut tags: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for (tag, _, rows) in &rev.late {
            let ids = rows
                .column_by_name("account_id")
                .expect("events have account_id")
                .as_string::<i32>();
            for id in ids.iter().flatten() {
                tags.entry(id.to_string()).or_default().insert(*tag);
            }
        }
        let touched: Vec<String> = tags
            .iter()
            .filter(|(a, t)| t.contains(&rev.tag) && counts.contains_key(*a))
            .map(|(a, _)| a.clone())
            .collect();
        if touched.is_empty() {
            return Ok(Vec::new());
        }
        // Accounts the window's first emission scored: its requests' and
        // those of the roll-up windows that closed with it.
        let rollups = state.rollups.as_of(&self.jobs, rev.end).await?;
        let mut first: BTreeSet<String> = BTreeSet::new();
        for b in rev.requests.iter().chain(rollups.iter().map(|(_, b)| b)) {
            if let Some(ids) = b.column_by_name("account_id") {
                first.extend(ids.as_string::<i32>().iter().flatten().map(str::to_string));
            }
        }
        let mut outputs = raw;
        outputs.extend(rollups);
        let features = merge_outputs(&outputs, &touched)?;
        let keep: arrow::array::BooleanArray = features
            .column(0)
            .as_string::<i32>()
            .iter()
            .map(|a| Some(a.is_some_and(|a| touched.iter().any(|t| t == a))))
            .collect();
        let features = arrow::compute::filter_record_batch(&features, &keep)?;
        let counts: BTreeMap<&str, (i64, i64)> =
            counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let mut scores =
            self.model
                .score(&features, &counts, rev.start, rev.end, &self.model_version);
        for s in &mut scores {
            // An account the first emission did not score gets its first
            // record (revision 0) from its first late event.
            let revisions = tags.get(&s.account_id).map_or(0, |t| t.len());
            let unscored = usize::from(!first.contains(&s.account_id));
            s.revision = revisions.saturating_sub(unscored) as i32;
        }
        Ok(scores)
    }

    /// A raw job's newest output for the window ending at `window_end`, at
    /// boundary `boundary`: as last computed, or (after a restart) from the
    /// window's kept rows and its late rows taken in by then.
    async fn latest_output(
        &self,
        job: &Job,
        window_end: i64,
        boundary: i64,
        windows: &PartitionWindows,
        state: &mut BoundaryState,
        accounts: &AccountTable,
    ) -> Result<Option<RecordBatch>, ProcessError> {
        let outputs = match state.raw.entry(window_end) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let start = window_end - self.jobs.window_ms;
                if !windows.is_retained(start) {
                    return Ok(None);
                }
                let rev = windows.window_data(start, boundary);
                e.insert(self.revised_outputs(&rev, accounts, None).await?.0)
            }
        };
        Ok(outputs
            .iter()
            .find(|(n, _)| *n == job.name)
            .map(|(_, b)| b.clone()))
    }
}

/// (requests, joined responses) per account of an `events` table; adds
/// the requests without a response to `without_response`.
fn account_counts(
    events: &RecordBatch,
    without_response: &mut u64,
) -> BTreeMap<String, (i64, i64)> {
    let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    if events.num_rows() == 0 {
        return counts;
    }
    let ids = events
        .column_by_name("account_id")
        .expect("join keeps account_id")
        .as_string::<i32>();
    let has_response = events
        .column_by_name("has_response")
        .expect("join adds has_response")
        .as_boolean();
    for i in 0..events.num_rows() {
        let e = counts.entry(ids.value(i).to_string()).or_default();
        e.0 += 1;
        if has_response.value(i) && !has_response.is_null(i) {
            e.1 += 1;
        } else {
            *without_response += 1;
        }
    }
    counts
}

/// What a partition pair carries from boundary to boundary besides its
/// windows: the roll-ups' held rows, and the newest raw-job outputs of
/// windows still within their lateness.
#[derive(Debug, Default)]
pub struct BoundaryState {
    pub rollups: Rollups,
    /// By window end.
    pub raw: BTreeMap<i64, Vec<(String, RecordBatch)>>,
}

/// Schema of `job`'s input table: the `events` schema, or (roll-ups) its
/// input job's output schema (in `outputs`, by name) with the window bounds.
fn input_table_schema(
    job: &Job,
    events: &SchemaRef,
    outputs: &BTreeMap<String, SchemaRef>,
) -> Result<SchemaRef, ProcessError> {
    Ok(match &job.input {
        JobInput::Events => events.clone(),
        JobInput::Job(up) => input_schema(
            outputs
                .get(up)
                .ok_or_else(|| ProcessError::UnknownJob(up.clone()))?,
        ),
    })
}

/// A context with `job`'s input table registered, empty (see
/// [`input_table_schema`]).
fn empty_input(
    job: &Job,
    events: &SchemaRef,
    outputs: &BTreeMap<String, SchemaRef>,
) -> Result<datafusion::prelude::SessionContext, ProcessError> {
    let input = input_table_schema(job, events, outputs)?;
    let ctx = window_context();
    ctx.register_table(
        job.table(),
        Arc::new(MemTable::try_new(
            input.clone(),
            vec![vec![RecordBatch::new_empty(input)]],
        )?),
    )?;
    Ok(ctx)
}

/// SQL without its `--` comment lines (EXPLAIN must lead the statement).
fn strip_comments(sql: &str) -> String {
    sql.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Request ids of the joined rows that found their response, split by
/// whether the response lies in this window (before `end`) or the next.
fn matched_responses(events: &RecordBatch, end: i64) -> (HashSet<&str>, Vec<String>) {
    let mut own = HashSet::new();
    let mut next = Vec::new();
    if events.num_rows() == 0 {
        return (own, next);
    }
    let ids = events
        .column_by_name("request_id")
        .expect("join keeps request_id")
        .as_string::<i32>();
    let times = events
        .column_by_name("response_time")
        .expect("join adds response_time")
        .as_primitive::<TimestampMillisecondType>();
    for i in 0..events.num_rows() {
        if times.is_null(i) {
            continue;
        }
        if times.value(i) < end {
            own.insert(ids.value(i));
        } else {
            next.push(ids.value(i).to_string());
        }
    }
    (own, next)
}
