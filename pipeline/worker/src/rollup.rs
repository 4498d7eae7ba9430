//! Roll-ups: jobs over other jobs' output (`-- input: job:NAME`), with
//! tumbling, hopping and session windows, evaluated at window boundaries.
//!
//! Raw events are held only for the base window (the tumbling window of the
//! jobs over `events`). A longer horizon keeps *their output* instead: one
//! row per account per base window, the partial aggregate of that pane, as
//! Arroyo keeps partials per bin. A roll-up's SQL combines them (`sum` of
//! counts, `max` of maxima, `count(*)` of active panes...), so a day-long
//! window holds at most one row per account per 10 minutes, however many
//! events those accounts sent.
//!
//! A hopping roll-up that declares `-- panes: sum` reads coarser partials
//! still: one row per account per slide, summed once per pane and reused by
//! every window that covers it.
//!
//! Every window is aligned to the epoch and ends on a base-window boundary.
//! At each boundary `E`, in dependency order, a job's windows ending at `E`
//! are evaluated over the held rows of its input job: the tumbling window
//! `[E−size, E)` when `E` is a multiple of the size, the hopping window
//! `[E−size, E)` when `E` is a multiple of the slide, and every session that
//! closes at `E`. The result depends only on the held rows, which depend only
//! on the input events, so roll-ups are as deterministic as the base windows.
//!
//! Settled values: a raw job with a lateness `L` hands its window ending at
//! `T` to the roll-ups at boundary `T + L`, once no revision can change it,
//! and a roll-up of it evaluates its windows ending at `E − L` at boundary
//! `E`. Held rows are kept `L` longer too, so that a revision of a base
//! window can show again the roll-up windows that closed with it
//! ([`Rollups::as_of`]).
//!
//! Sessions: per key, input rows less than `gap` apart form a session. A
//! session never spans a multiple of `max` since the epoch (with `max 1d`, a
//! UTC day), which bounds both its length and what must be held, and makes a
//! session's end independent of how far back the held rows reach. It closes
//! at `min(last row's end + gap, next multiple of max)`.
//!
//! Held rows survive a restart through the checkpoint topic (see
//! `checkpoint`): each boundary's new rows and evictions travel in the same
//! cycle as the checkpoint that says the boundary was processed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMillisecondArray,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};

use crate::jobs::{Job, JobError, JobInput, JobSet, Panes, WindowKind};
use crate::window::column;

pub const WINDOW_START: &str = "window_start";
pub const WINDOW_END: &str = "window_end";

/// The `[start, end)` windows of a tumbling window of `size` that contain
/// event time `t` (exactly one).
pub fn tumbling_window(size_ms: i64, t: i64) -> (i64, i64) {
    let start = t.div_euclid(size_ms) * size_ms;
    (start, start + size_ms)
}

/// The `[start, end)` hopping windows of `size` every `slide` that contain
/// event time `t`, oldest first (`size / slide` of them).
pub fn hopping_windows(size_ms: i64, slide_ms: i64, t: i64) -> Vec<(i64, i64)> {
    let last_start = t.div_euclid(slide_ms) * slide_ms;
    let mut out = Vec::new();
    let mut start = last_start - size_ms + slide_ms;
    while start <= last_start {
        out.push((start, start + size_ms));
        start += slide_ms;
    }
    out
}

/// One key's session over its input rows `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub start: i64,
    /// End of its last row.
    pub last_end: i64,
    /// The boundary at which it is complete and emitted.
    pub closes_at: i64,
    /// Indices (into the slice given to [`sessions`]) of its rows.
    pub rows: Vec<usize>,
}

/// Split one key's rows into sessions. `rows` are `[start, end)` intervals in
/// any order; a row joins the session before it if it starts less than `gap`
/// after that session's last end and in the same `max`-aligned block.
pub fn sessions(rows: &[(i64, i64)], gap_ms: i64, max_ms: i64) -> Vec<Session> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (rows[i].0, rows[i].1));
    let block_end = |t: i64| (t.div_euclid(max_ms) + 1) * max_ms;
    let mut out: Vec<Session> = Vec::new();
    for i in order {
        let (start, end) = rows[i];
        match out.last_mut() {
            Some(s) if start - s.last_end < gap_ms && block_end(s.start) >= end => {
                s.last_end = s.last_end.max(end);
                s.rows.push(i);
            }
            _ => out.push(Session {
                start,
                last_end: end,
                closes_at: 0,
                rows: vec![i],
            }),
        }
    }
    for s in &mut out {
        s.closes_at = (s.last_end + gap_ms).min(block_end(s.start));
    }
    out
}

/// A change to the held rows, to persist: rows of `job` for the window
/// ending at `end`, or `None` once they are no longer needed.
#[derive(Debug, Clone)]
pub struct RollupRecord {
    pub job: String,
    pub end: i64,
    pub rows: Option<RecordBatch>,
}

/// What one boundary produced.
#[derive(Debug, Default)]
pub struct BoundaryOutput {
    /// Each job with a window closing at the boundary and its output rows
    /// (key and Float64 features), in dependency order.
    pub outputs: Vec<(String, RecordBatch)>,
    /// Changes to the held rows.
    pub records: Vec<RollupRecord>,
}

/// The held output rows of every job a roll-up reads, per partition pair.
#[derive(Debug, Default)]
pub struct Rollups {
    /// By job, then by the end of the window the rows came from. Rows carry
    /// `window_start` and `window_end` columns after the job's own.
    held: BTreeMap<String, BTreeMap<i64, RecordBatch>>,
    /// What each recent boundary emitted, for [`Rollups::as_of`]: a
    /// revision of a base window shows its roll-up windows again, and
    /// evaluating them anew (a day of held rows each) cost more than the
    /// revision itself. Not persisted: after a restart `as_of` evaluates
    /// them from the held rows, which gives the same rows.
    emitted: BTreeMap<i64, Vec<(String, RecordBatch)>>,
    /// Summed panes for roll-ups with `-- panes: sum`: by input job and
    /// slide, then by the pane's end. Derived from `held` (not persisted;
    /// rebuilt from it after a restart).
    panes: BTreeMap<(String, i64), BTreeMap<i64, RecordBatch>>,
}

impl Rollups {
    /// Rebuild from persisted records (newest per job and end wins).
    pub fn restore(records: impl IntoIterator<Item = RollupRecord>) -> Self {
        let mut r = Rollups::default();
        for rec in records {
            let by_end = r.held.entry(rec.job).or_default();
            match rec.rows {
                Some(b) => {
                    by_end.insert(rec.end, b);
                }
                None => {
                    by_end.remove(&rec.end);
                }
            }
        }
        r.held.retain(|_, m| !m.is_empty());
        r
    }

    /// Number of held (job, window end) entries: what a restore must find.
    pub fn held_entries(&self) -> usize {
        self.held.values().map(|m| m.len()).sum()
    }

    pub fn held_rows(&self) -> usize {
        self.batches().map(|b| b.num_rows()).sum()
    }

    /// Bytes of the held rows and of the summed panes derived from them.
    pub fn held_bytes(&self) -> usize {
        self.batches()
            .chain(self.panes.values().flat_map(|m| m.values()))
            .map(|b| b.get_array_memory_size())
            .sum()
    }

    fn batches(&self) -> impl Iterator<Item = &RecordBatch> {
        self.held.values().flat_map(|m| m.values())
    }

    /// The last boundary at which a held row can still change a window: at
    /// the end of input, boundaries are processed up to here.
    pub fn last_needed_boundary(&self, jobs: &JobSet) -> Option<i64> {
        self.held
            .iter()
            .filter_map(|(job, m)| Some(m.keys().next_back()? + jobs.keep_ms(job)))
            .max()
    }

    /// Evaluate boundary `end`. `settled`: outputs of jobs over raw events
    /// that became final at this boundary, with the end of their window
    /// (`end` minus the job's lateness). Returns the roll-up windows that
    /// close here: those ending at `end` minus their input's settling time.
    pub async fn boundary(
        &mut self,
        jobs: &JobSet,
        end: i64,
        settled: Vec<(String, i64, RecordBatch)>,
    ) -> Result<BoundaryOutput, JobError> {
        let mut out = BoundaryOutput::default();
        for (job, window_end, rows) in settled {
            if jobs.is_input(&job) && rows.num_rows() > 0 {
                let start = window_end - jobs.window_ms;
                self.hold(&job, start, window_end, &rows, &mut out.records)?;
            }
        }
        for job in &jobs.jobs {
            let JobInput::Job(up) = &job.input else {
                continue;
            };
            let closes = end - jobs.settle_ms(up);
            if let (Panes::Sum, WindowKind::Hop { size_ms, slide_ms }) = (job.panes, job.window) {
                if closes_at(&job.window, closes) {
                    self.sum_panes(up, size_ms, slide_ms, closes).map_err(|e| {
                        JobError::Output {
                            job: job.name.clone(),
                            message: e.to_string(),
                        }
                    })?;
                }
            }
            let t = std::time::Instant::now();
            let Some((rows, start)) = self.evaluate(jobs, job, up, closes).await? else {
                continue;
            };
            tracing::debug!(job = %job.name, end, rows = rows.num_rows(), elapsed = ?t.elapsed(), "roll-up window evaluated");
            if jobs.is_input(&job.name) && rows.num_rows() > 0 {
                self.hold(&job.name, start, closes, &rows, &mut out.records)?;
            }
            out.outputs.push((job.name.clone(), rows));
        }
        for (job, by_end) in &mut self.held {
            let keep = by_end.split_off(&(end - jobs.keep_ms(job) + 1));
            for old in std::mem::replace(by_end, keep).into_keys() {
                out.records.push(RollupRecord {
                    job: job.clone(),
                    end: old,
                    rows: None,
                });
            }
        }
        self.held.retain(|_, m| !m.is_empty());
        for ((up, _), by_end) in &mut self.panes {
            *by_end = by_end.split_off(&(end - jobs.keep_ms(up) + 1));
        }
        self.panes.retain(|_, m| !m.is_empty());
        self.emitted = self.emitted.split_off(&(end - jobs.max_lateness_ms()));
        if jobs.max_lateness_ms() > 0 {
            self.emitted.insert(end, out.outputs.clone());
        }
        Ok(out)
    }

    /// The roll-up windows that closed at boundary `end`, again (for a
    /// revision of the base window ending there): the rows they read were
    /// settled then and are still held.
    pub async fn as_of(
        &self,
        jobs: &JobSet,
        end: i64,
    ) -> Result<Vec<(String, RecordBatch)>, JobError> {
        if let Some(emitted) = self.emitted.get(&end) {
            return Ok(emitted.clone());
        }
        let mut out = Vec::new();
        for job in &jobs.jobs {
            let JobInput::Job(up) = &job.input else {
                continue;
            };
            if let Some((rows, _)) = self
                .evaluate(jobs, job, up, end - jobs.settle_ms(up))
                .await?
            {
                out.push((job.name.clone(), rows));
            }
        }
        Ok(out)
    }

    /// Keep `rows` of `job`'s window `[start, end)` for the roll-ups that
    /// read it, and record the change.
    fn hold(
        &mut self,
        job: &str,
        start: i64,
        end: i64,
        rows: &RecordBatch,
        records: &mut Vec<RollupRecord>,
    ) -> Result<(), JobError> {
        let held = with_window(rows, start, end).map_err(|e| JobError::Output {
            job: job.to_string(),
            message: e.to_string(),
        })?;
        // A pane summed before these rows were held would lack them.
        for ((up, slide), by_end) in &mut self.panes {
            if up == job {
                by_end.remove(&((end + slide - 1).div_euclid(*slide) * slide));
            }
        }
        self.held
            .entry(job.to_string())
            .or_default()
            .insert(end, held.clone());
        records.push(RollupRecord {
            job: job.to_string(),
            end,
            rows: Some(held),
        });
        Ok(())
    }

    /// The job's windows closing at `end`, over the held rows of `up`:
    /// its output and the (earliest) window start, or `None` if no window
    /// closes there or it holds no rows.
    async fn evaluate(
        &self,
        jobs: &JobSet,
        job: &Job,
        up: &str,
        end: i64,
    ) -> Result<Option<(RecordBatch, i64)>, JobError> {
        let Some(by_end) = self.held.get(up) else {
            return Ok(None);
        };
        let err = |e: arrow::error::ArrowError| JobError::Output {
            job: job.name.clone(),
            message: e.to_string(),
        };
        let (batches, start): (Vec<RecordBatch>, i64) = match job.window {
            WindowKind::Hop { size_ms, slide_ms } if job.panes == Panes::Sum => {
                if !closes_at(&job.window, end) {
                    return Ok(None);
                }
                let mut b = Vec::new();
                for pane_end in pane_ends(size_ms, slide_ms, end) {
                    let known = self
                        .panes
                        .get(&(up.to_string(), slide_ms))
                        .and_then(|m| m.get(&pane_end));
                    let pane = match known {
                        Some(p) => Some(p.clone()),
                        // As of a boundary before a restart: sum it again.
                        None => sum_pane(by_end, pane_end - slide_ms, pane_end).map_err(err)?,
                    };
                    b.extend(pane);
                }
                (b, end - size_ms)
            }
            WindowKind::Tumble { size_ms } | WindowKind::Hop { size_ms, .. } => {
                if !closes_at(&job.window, end) {
                    return Ok(None);
                }
                let start = end - size_ms;
                // Keyed by the end of their window: rows of [start, end)
                // end in (start, end].
                let b = by_end
                    .range(start + 1..=end)
                    .map(|(_, b)| b.clone())
                    .collect();
                (b, start)
            }
            WindowKind::Session { gap_ms, max_ms } => {
                closing_sessions(by_end, gap_ms, max_ms, end).map_err(err)?
            }
        };
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows == 0 {
            return Ok(None);
        }
        Ok(Some((jobs.run(job, batches).await?, start)))
    }

    /// Sum the panes of the window `[end - size, end)` that are not summed
    /// yet: only the newest one, once the window before was evaluated.
    fn sum_panes(
        &mut self,
        up: &str,
        size_ms: i64,
        slide_ms: i64,
        end: i64,
    ) -> Result<(), arrow::error::ArrowError> {
        let Some(by_end) = self.held.get(up) else {
            return Ok(());
        };
        let panes = self.panes.entry((up.to_string(), slide_ms)).or_default();
        for pane_end in pane_ends(size_ms, slide_ms, end) {
            if panes.contains_key(&pane_end) {
                continue;
            }
            if let Some(p) = sum_pane(by_end, pane_end - slide_ms, pane_end)? {
                panes.insert(pane_end, p);
            }
        }
        Ok(())
    }
}

/// The ends of the slide-long panes of the window `[end - size, end)`,
/// oldest first.
fn pane_ends(size_ms: i64, slide_ms: i64, end: i64) -> impl Iterator<Item = i64> {
    (end - size_ms + slide_ms..=end).step_by(slide_ms as usize)
}

/// One row per key of the held rows of `[start, end)`, each feature summed
/// (NULLs skipped; NULL when all are), with `start` and `end` as its
/// window; keys in order of first appearance, rows in window order, so the
/// sums are the same in every run. `None` when the pane holds no rows.
fn sum_pane(
    by_end: &BTreeMap<i64, RecordBatch>,
    start: i64,
    end: i64,
) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
    let batches: Vec<&RecordBatch> = by_end.range(start + 1..=end).map(|(_, b)| b).collect();
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let schema = first.schema();
    // Key, features, window_start, window_end.
    let features = schema.fields().len().saturating_sub(3);
    for f in schema.fields().iter().skip(1).take(features) {
        if f.data_type() != &DataType::Float64 {
            return Err(arrow::error::ArrowError::InvalidArgumentError(format!(
                "panes sum: feature {} is {}, not Float64",
                f.name(),
                f.data_type()
            )));
        }
    }
    let mut index: std::collections::HashMap<Option<&str>, usize> = Default::default();
    let mut keys: Vec<Option<&str>> = Vec::new();
    let mut sums: Vec<Vec<Option<f64>>> = vec![Vec::new(); features];
    for b in &batches {
        let ids = b.column(0).as_string::<i32>();
        let cols: Vec<&arrow::array::Float64Array> = (1..=features)
            .map(|c| b.column(c).as_primitive::<arrow::datatypes::Float64Type>())
            .collect();
        for r in 0..b.num_rows() {
            let key = ids.is_valid(r).then(|| ids.value(r));
            let row = *index.entry(key).or_insert_with(|| {
                keys.push(key);
                sums.iter_mut().for_each(|s| s.push(None));
                keys.len() - 1
            });
            for (c, col) in cols.iter().enumerate() {
                if col.is_valid(r) {
                    let s = &mut sums[c][row];
                    *s = Some(s.unwrap_or(0.0) + col.value(r));
                }
            }
        }
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(arrow::array::StringArray::from(keys))];
    columns.extend(
        sums.into_iter()
            .map(|s| Arc::new(arrow::array::Float64Array::from(s)) as ArrayRef),
    );
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .take(features + 1)
        .map(|f| f.as_ref().clone())
        .collect();
    let rows = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    with_window(&rows, start, end).map(Some)
}

/// Whether a tumbling or hopping window ends at `end`.
fn closes_at(kind: &WindowKind, end: i64) -> bool {
    match *kind {
        WindowKind::Tumble { size_ms } => end.rem_euclid(size_ms) == 0,
        WindowKind::Hop { slide_ms, .. } => end.rem_euclid(slide_ms) == 0,
        WindowKind::Session { .. } => true,
    }
}

/// The rows of every key's session that closes at `end`, with the earliest
/// such session's start.
fn closing_sessions(
    by_end: &BTreeMap<i64, RecordBatch>,
    gap_ms: i64,
    max_ms: i64,
    end: i64,
) -> Result<(Vec<RecordBatch>, i64), arrow::error::ArrowError> {
    // A session closes at `end` when its last row ends `gap` before, or
    // when `end` is a multiple of `max`. Between multiples, only keys with
    // a row ending at `end - gap` can have one: the others are skipped
    // without splitting their rows into sessions at every boundary.
    let candidates: Option<std::collections::HashSet<&str>> = if end.rem_euclid(max_ms) == 0 {
        None
    } else {
        match by_end.get(&(end - gap_ms)) {
            Some(b) => Some(b.column(0).as_string::<i32>().iter().flatten().collect()),
            None => return Ok((Vec::new(), end)),
        }
    };
    // (batch, row, start, end) per key, of rows up to the boundary.
    let mut by_key: BTreeMap<&str, Vec<(usize, usize, i64, i64)>> = BTreeMap::new();
    let batches: Vec<&RecordBatch> = by_end.range(..=end).map(|(_, b)| b).collect();
    for (bi, b) in batches.iter().enumerate() {
        let keys = b.column(0).as_string::<i32>();
        let starts = column(b, WINDOW_START)?.as_primitive::<TimestampMillisecondType>();
        let ends = column(b, WINDOW_END)?.as_primitive::<TimestampMillisecondType>();
        for r in 0..b.num_rows() {
            if candidates
                .as_ref()
                .is_some_and(|c| !c.contains(keys.value(r)))
            {
                continue;
            }
            by_key
                .entry(keys.value(r))
                .or_default()
                .push((bi, r, starts.value(r), ends.value(r)));
        }
    }
    let mut keep: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); batches.len()];
    let mut first_start = end;
    for rows in by_key.values() {
        let spans: Vec<(i64, i64)> = rows.iter().map(|r| (r.2, r.3)).collect();
        for s in sessions(&spans, gap_ms, max_ms) {
            if s.closes_at == end {
                first_start = first_start.min(s.start);
                for i in s.rows {
                    keep[rows[i].0].insert(rows[i].1);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (b, rows) in batches.iter().zip(keep) {
        if rows.is_empty() {
            continue;
        }
        let mask: BooleanArray = (0..b.num_rows()).map(|r| Some(rows.contains(&r))).collect();
        out.push(filter_record_batch(b, &mask)?);
    }
    Ok((out, first_start))
}

/// `rows` (a job's output) with `window_start` and `window_end` appended.
pub fn with_window(
    rows: &RecordBatch,
    start: i64,
    end: i64,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()));
    let n = rows.num_rows();
    let mut fields: Vec<Field> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(WINDOW_START, ts.clone(), false));
    fields.push(Field::new(WINDOW_END, ts, false));
    let mut cols: Vec<ArrayRef> = rows.columns().to_vec();
    cols.push(Arc::new(
        TimestampMillisecondArray::from(vec![start; n]).with_timezone("+00:00"),
    ));
    cols.push(Arc::new(
        TimestampMillisecondArray::from(vec![end; n]).with_timezone("+00:00"),
    ));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
}

/// The table a roll-up of `upstream` reads, given the upstream's output
/// schema (key and features).
pub fn input_schema(upstream_output: &SchemaRef) -> SchemaRef {
    let empty = RecordBatch::new_empty(upstream_output.clone());
    with_window(&empty, 0, 0)
        .map(|b| b.schema())
        .unwrap_or_else(|_| upstream_output.clone())
}

/// Arrow IPC stream bytes of `batch`: how held rows travel in the
/// checkpoint topic.
pub fn encode_rows(batch: &RecordBatch) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())?;
        w.write(batch)?;
        w.finish()?;
    }
    Ok(buf)
}

pub fn decode_rows(bytes: &[u8]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| arrow::error::ArrowError::IpcError("no batch in held rows".into()))?;
    arrow::compute::concat_batches(&schema, &batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::Float64Type;
    use std::path::Path;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    #[test]
    fn tumbling_windows_include_their_start_and_exclude_their_end() {
        assert_eq!(tumbling_window(10 * MIN, 0), (0, 10 * MIN));
        assert_eq!(tumbling_window(10 * MIN, 10 * MIN - 1), (0, 10 * MIN));
        assert_eq!(tumbling_window(10 * MIN, 10 * MIN), (10 * MIN, 20 * MIN));
        assert_eq!(tumbling_window(10 * MIN, -1), (-10 * MIN, 0));
    }

    #[test]
    fn hopping_windows_share_an_event() {
        // A 30-minute window every 10 minutes: each event is in three.
        let w = hopping_windows(30 * MIN, 10 * MIN, 25 * MIN);
        assert_eq!(
            w,
            vec![(0, 30 * MIN), (10 * MIN, 40 * MIN), (20 * MIN, 50 * MIN)]
        );
        // Exactly on a boundary: the window starting there, not the one ending there.
        let w = hopping_windows(30 * MIN, 10 * MIN, 30 * MIN);
        assert_eq!(w.first(), Some(&(10 * MIN, 40 * MIN)));
        assert_eq!(w.last(), Some(&(30 * MIN, 60 * MIN)));
        assert!(w.iter().all(|(s, e)| *s <= 30 * MIN && 30 * MIN < *e));
        // Slide = size is tumbling.
        assert_eq!(
            hopping_windows(HOUR, HOUR, 90 * MIN),
            vec![(HOUR, 2 * HOUR)]
        );
    }

    #[test]
    fn sessions_merge_across_short_gaps_and_split_at_the_gap() {
        let p = |s: i64| (s * 10 * MIN, (s + 1) * 10 * MIN);
        // Panes 0,1 then 3 (gap of 10 min < 30): one session; 7 is 30 min
        // after 3's end: a new one.
        let rows = [p(3), p(0), p(1), p(7)];
        let s = sessions(&rows, 30 * MIN, 24 * HOUR);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].start, s[0].last_end), (0, 40 * MIN));
        assert_eq!(s[0].rows, vec![1, 2, 0]);
        assert_eq!(s[0].closes_at, 70 * MIN);
        assert_eq!(
            (s[1].start, s[1].last_end, s[1].closes_at),
            (70 * MIN, 80 * MIN, 110 * MIN)
        );
        // A row arriving later that bridges the two merges them into one.
        let s = sessions(&[p(3), p(0), p(1), p(7), p(5)], 30 * MIN, 24 * HOUR);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].start, s[0].last_end), (0, 80 * MIN));
    }

    #[test]
    fn sessions_never_cross_a_multiple_of_max() {
        // Busy every 10 minutes for 3 hours with max 1h: three sessions, each
        // closing at its hour's end, not at last + gap.
        let rows: Vec<(i64, i64)> = (0..18)
            .map(|i| (i * 10 * MIN, (i + 1) * 10 * MIN))
            .collect();
        let s = sessions(&rows, 30 * MIN, HOUR);
        let spans: Vec<(i64, i64, i64)> = s
            .iter()
            .map(|s| (s.start, s.last_end, s.closes_at))
            .collect();
        assert_eq!(
            spans,
            vec![
                (0, HOUR, HOUR),
                (HOUR, 2 * HOUR, 2 * HOUR),
                (2 * HOUR, 3 * HOUR, 3 * HOUR)
            ]
        );
        // Dropping the oldest rows (as eviction does) leaves later sessions
        // and closing boundaries as they were.
        let s2 = sessions(&rows[3..], 30 * MIN, HOUR);
        assert_eq!(
            s2[1..],
            s[1..]
                .iter()
                .map(|x| Session {
                    rows: x.rows.iter().map(|r| r - 3).collect(),
                    ..x.clone()
                })
                .collect::<Vec<_>>()[..]
        );
    }

    fn job(name: &str, input: &str, window: &str, select: &str) -> Job {
        let text = format!(
            "-- name: {name}\n-- input: {input}\n-- key: account_id\n-- window: {window}\n{select}\n"
        );
        Job::parse(Path::new(&format!("{name}.sql")), &text).unwrap()
    }

    fn jobs() -> JobSet {
        JobSet::from_jobs(
            Path::new("."),
            vec![
                job("volume", "events", "tumble 10m", "SELECT account_id, count(*) AS requests FROM events GROUP BY account_id"),
                job(
                    "hourly",
                    "job:volume",
                    "tumble 1h",
                    "SELECT account_id, sum(requests) AS requests_1h, count(*) AS active_panes_1h FROM volume GROUP BY account_id",
                ),
                job(
                    "hop",
                    "job:volume",
                    "hop 30m slide 10m",
                    "SELECT account_id, sum(requests) AS requests_30m FROM volume GROUP BY account_id",
                ),
                Job {
                    panes: Panes::Sum,
                    ..job(
                        "hop_panes",
                        "job:volume",
                        "hop 1h slide 20m",
                        "SELECT account_id, sum(requests) AS requests_1h_panes FROM volume GROUP BY account_id",
                    )
                },
                job(
                    "sessions",
                    "job:volume",
                    "session 20m max 1h",
                    "SELECT account_id, sum(requests) AS session_requests, CAST(max(window_end) AS BIGINT) - CAST(min(window_start) AS BIGINT) AS session_ms FROM volume GROUP BY account_id",
                ),
                job(
                    "daily",
                    "job:hourly",
                    "tumble 1d",
                    "SELECT account_id, sum(requests_1h) AS requests_1d, count(*) AS active_hours_1d FROM hourly GROUP BY account_id",
                ),
            ],
        )
        .unwrap()
    }

    fn volume(rows: &[(&str, f64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("account_id", DataType::Utf8, true),
            Field::new("requests", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    /// (job, account) → feature values, of one boundary's outputs.
    fn values(out: &BoundaryOutput) -> BTreeMap<(String, String), Vec<f64>> {
        let mut m = BTreeMap::new();
        for (job, b) in &out.outputs {
            let keys = b.column(0).as_string::<i32>();
            for r in 0..b.num_rows() {
                let v = (1..b.num_columns())
                    .map(|c| b.column(c).as_primitive::<Float64Type>().value(r))
                    .collect();
                m.insert((job.clone(), keys.value(r).to_string()), v);
            }
        }
        m
    }

    /// Account `a` active in panes 0..=3 and 6 (each pane `i+1` requests),
    /// `b` only in pane 2; boundaries every 10 minutes up to `until`.
    async fn run(rollups: &mut Rollups, from: i64, until: i64) -> BTreeMap<i64, BoundaryOutput> {
        run_jobs(&jobs(), rollups, from, until).await
    }

    async fn run_jobs(
        set: &JobSet,
        rollups: &mut Rollups,
        from: i64,
        until: i64,
    ) -> BTreeMap<i64, BoundaryOutput> {
        let mut out = BTreeMap::new();
        let mut end = from;
        while end <= until {
            let pane = end / (10 * MIN) - 1;
            let mut rows = Vec::new();
            if (0..=3).contains(&pane) || pane == 6 {
                rows.push(("a", (pane + 1) as f64));
            }
            if pane == 2 {
                rows.push(("b", 10.0));
            }
            let raw = if rows.is_empty() {
                vec![]
            } else {
                vec![("volume".to_string(), end, volume(&rows))]
            };
            out.insert(end, rollups.boundary(set, end, raw).await.unwrap());
            end += 10 * MIN;
        }
        out
    }

    #[tokio::test]
    async fn roll_ups_close_on_their_boundaries() {
        let mut r = Rollups::default();
        let out = run(&mut r, 10 * MIN, 26 * HOUR).await;
        let v = |end: i64, job: &str, acct: &str| {
            values(&out[&end])
                .get(&(job.to_string(), acct.to_string()))
                .cloned()
        };
        // Hopping: the 30-minute window ending at 30m holds panes 0..=2.
        assert_eq!(v(30 * MIN, "hop", "a"), Some(vec![1.0 + 2.0 + 3.0]));
        assert_eq!(v(40 * MIN, "hop", "a"), Some(vec![2.0 + 3.0 + 4.0]));
        assert_eq!(v(40 * MIN, "hop", "b"), Some(vec![10.0]));
        // Pane 2 (b's only one) is in three hopping windows, then no more.
        let b_windows: Vec<i64> = out
            .iter()
            .filter(|(_, o)| values(o).contains_key(&("hop".into(), "b".into())))
            .map(|(e, _)| *e)
            .collect();
        assert_eq!(b_windows, vec![30 * MIN, 40 * MIN, 50 * MIN]);
        // Summed 20-minute panes: the hour ending at 40m holds panes 0..=3
        // (and, ending at 80m, pane 6 in the pane of 60-80m).
        assert_eq!(v(40 * MIN, "hop_panes", "a"), Some(vec![10.0]));
        assert_eq!(v(60 * MIN, "hop_panes", "a"), Some(vec![10.0]));
        assert_eq!(v(60 * MIN, "hop_panes", "b"), Some(vec![10.0]));
        assert_eq!(v(80 * MIN, "hop_panes", "a"), Some(vec![3.0 + 4.0 + 7.0]));
        assert_eq!(
            v(50 * MIN, "hop_panes", "a"),
            None,
            "not a multiple of the slide"
        );
        // Tumbling hour: emitted only at the hour, over every pane of it.
        assert_eq!(
            v(HOUR, "hourly", "a"),
            Some(vec![1.0 + 2.0 + 3.0 + 4.0, 4.0])
        );
        assert_eq!(v(50 * MIN, "hourly", "a"), None);
        assert_eq!(v(2 * HOUR, "hourly", "a"), Some(vec![7.0, 1.0]));
        // Sessions: panes 0..=3 (0–40m) close 20m after their end; pane 6
        // (60–70m) starts a new one (20m gap is not < 20m).
        assert_eq!(
            v(60 * MIN, "sessions", "a"),
            Some(vec![10.0, 40.0 * MIN as f64])
        );
        assert_eq!(
            v(90 * MIN, "sessions", "a"),
            Some(vec![7.0, 10.0 * MIN as f64])
        );
        assert_eq!(
            v(50 * MIN, "sessions", "b"),
            Some(vec![10.0, 10.0 * MIN as f64])
        );
        let session_ends: Vec<i64> = out
            .iter()
            .filter(|(_, o)| o.outputs.iter().any(|(j, _)| j == "sessions"))
            .map(|(e, _)| *e)
            .collect();
        assert_eq!(session_ends, vec![50 * MIN, 60 * MIN, 90 * MIN]);
        // A roll-up of a roll-up: the day from the hours.
        assert_eq!(v(24 * HOUR, "daily", "a"), Some(vec![17.0, 2.0]));
        assert_eq!(v(24 * HOUR, "daily", "b"), Some(vec![10.0, 1.0]));
        // Everything was evicted once no window can need it.
        assert_eq!(r.held_entries(), 0);
        let evicted = out
            .values()
            .flat_map(|o| &o.records)
            .filter(|r| r.rows.is_none())
            .count();
        let stored = out
            .values()
            .flat_map(|o| &o.records)
            .filter(|r| r.rows.is_some())
            .count();
        assert_eq!(evicted, stored);
    }

    #[tokio::test]
    async fn a_restore_from_persisted_records_continues_identically() {
        let whole = run(&mut Rollups::default(), 10 * MIN, 26 * HOUR).await;
        for cut in [20 * MIN, 40 * MIN, 70 * MIN, 2 * HOUR] {
            let mut first = Rollups::default();
            let before = run(&mut first, 10 * MIN, cut).await;
            // Persist through the bytes the checkpoint topic carries.
            let records: Vec<RollupRecord> = before
                .values()
                .flat_map(|o| o.records.clone())
                .map(|r| RollupRecord {
                    rows: r
                        .rows
                        .map(|b| decode_rows(&encode_rows(&b).unwrap()).unwrap()),
                    ..r
                })
                .collect();
            let mut restored = Rollups::restore(records);
            assert_eq!(restored.held_entries(), first.held_entries());
            let after = run(&mut restored, cut + 10 * MIN, 26 * HOUR).await;
            for (end, o) in after {
                assert_eq!(
                    values(&o),
                    values(&whole[&end]),
                    "cut {cut}, boundary {end}"
                );
            }
        }
    }

    #[tokio::test]
    async fn as_of_shows_what_a_boundary_emitted_before_and_after_a_restore() {
        // With a lateness on `volume`, revisions show roll-up windows again.
        let late = |j: Job| Job {
            lateness_ms: 20 * MIN,
            ..j
        };
        let set =
            JobSet::from_jobs(Path::new("."), jobs().jobs.into_iter().map(late).collect()).unwrap();
        assert_eq!(set.max_lateness_ms(), 20 * MIN);
        let mut live = Rollups::default();
        let out = run_jobs(&set, &mut live, 10 * MIN, 100 * MIN).await;
        let records: Vec<RollupRecord> = out.values().flat_map(|o| o.records.clone()).collect();
        let restored = Rollups::restore(records);
        let last = *out.keys().next_back().unwrap();
        let mut shown = 0;
        for end in (last - set.max_lateness_ms()..=last).step_by(10 * MIN as usize) {
            let emitted = BoundaryOutput {
                outputs: out[&end].outputs.clone(),
                records: vec![],
            };
            let remembered = BoundaryOutput {
                outputs: live.as_of(&set, end).await.unwrap(),
                records: vec![],
            };
            let evaluated = BoundaryOutput {
                outputs: restored.as_of(&set, end).await.unwrap(),
                records: vec![],
            };
            assert_eq!(values(&remembered), values(&emitted), "boundary {end}");
            assert_eq!(values(&evaluated), values(&emitted), "boundary {end}");
            shown += emitted.outputs.len();
        }
        assert!(shown > 0, "no roll-up window closed in the lateness span");
    }

    #[test]
    fn held_rows_round_trip_through_ipc() {
        let b = with_window(&volume(&[("a", 1.0), ("b", 2.5)]), 0, 10 * MIN).unwrap();
        assert_eq!(decode_rows(&encode_rows(&b).unwrap()).unwrap(), b);
        assert!(decode_rows(b"not ipc").is_err());
    }
}
