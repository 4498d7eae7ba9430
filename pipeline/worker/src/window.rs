//! Event-time tumbling windows, one set per partition pair.
//!
//! Requests and responses are co-partitioned and keyed by account, so every
//! event of an account lands in the same partition number of both topics and
//! partition `p` of each forms one independent task, as in Kafka Streams.
//! Each side keeps its own watermark (newest event time seen minus the
//! allowed out-of-orderness). A window closes when the request watermark has
//! passed its end and the response watermark has passed its end plus the
//! longest response delay, so every response its requests can join with has
//! been seen.
//!
//! Determinism. Whether a row is placed or late is judged from its own side's
//! watermark over the rows before it in its partition, and a window closes
//! only when both sides' own watermarks have passed it, so no row judged in
//! time can find its window already closed. The rows of every window are
//! therefore a function of the two partitions' contents alone: however the
//! topics interleave, however fast the worker runs, live or replayed. There is
//! no idle timeout for the same reason: a wall-clock rule would let a quiet
//! partition's timing decide what a window holds. The price is latency: a
//! partition pair whose traffic stops keeps its newest windows open until
//! events beyond them arrive on both topics, or the input is declared
//! finished (`flush`, at the end of a bounded run).
//!
//! Restarts keep that property: a [`Resume`] checkpoint carries, per side,
//! the offset to re-read from and the newest event time before it, so a new
//! owner's watermark replays exactly as the previous owner's did.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Int64Type, TimestampMillisecondType, UInt32Type};

use crate::decode::{MSG_COL, OFFSET_COL};

/// Which topic of the pair a batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Requests,
    Responses,
}

impl Side {
    /// Both sides, in index order.
    pub const BOTH: [Side; 2] = [Side::Requests, Side::Responses];

    /// Position in per-side arrays.
    pub fn idx(self) -> usize {
        match self {
            Side::Requests => 0,
            Side::Responses => 1,
        }
    }

    /// The partner topic of the pair.
    pub fn other(self) -> Side {
        match self {
            Side::Requests => Side::Responses,
            Side::Responses => Side::Requests,
        }
    }
}

/// Static window parameters, in event-time milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec {
    pub size_ms: i64,
    pub out_of_orderness_ms: i64,
    pub max_response_delay_ms: i64,
    /// How long after its end a window still takes late events (the
    /// longest lateness of the jobs): they revise its scores.
    pub lateness_ms: i64,
}

impl WindowSpec {
    pub fn start_of(&self, t: i64) -> i64 {
        t.div_euclid(self.size_ms) * self.size_ms
    }
}

/// What the previous owner of a partition had done when it last committed,
/// read back from its checkpoint (see `checkpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Every window ending at or before this was emitted.
    pub emitted_until: i64,
    /// The previous owner had read (and sent to the DLQ what it rejected)
    /// everything before this offset.
    pub read_to: i64,
    /// Where to re-read from: the oldest offset an open window held, or the
    /// read position when none did. `None` in checkpoints of older versions.
    pub offset: Option<i64>,
    /// Newest event time among this side's rows before `offset`: the
    /// watermark the re-read starts from.
    pub max_before: Option<i64>,
    /// How many (job, window end) entries of held roll-up rows the pair had
    /// (see `rollup`): what the new owner must find in the checkpoint topic.
    pub rollups: u64,
}

impl Resume {
    const PREFIX_V1: &'static str = "dw1;";
    const PREFIX: &'static str = "dw2;";

    /// Checkpoint value; parsed back by [`Resume::parse`].
    pub fn encode(&self) -> String {
        let opt = |v: Option<i64>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
        format!(
            "{}emitted_until={};read_to={};offset={};max_before={};rollups={}",
            Self::PREFIX,
            self.emitted_until,
            self.read_to,
            opt(self.offset),
            opt(self.max_before),
            self.rollups,
        )
    }

    pub fn parse(s: &str) -> Option<Resume> {
        let rest = s
            .strip_prefix(Self::PREFIX)
            .or_else(|| s.strip_prefix(Self::PREFIX_V1))?;
        let opt = |v: &str| -> Option<Option<i64>> {
            if v == "none" {
                Some(None)
            } else {
                v.parse().ok().map(Some)
            }
        };
        let (mut emitted_until, mut read_to, mut offset, mut max_before) = (None, None, None, None);
        let mut rollups = 0;
        for part in rest.split(';') {
            match part.split_once('=')? {
                ("emitted_until", v) => emitted_until = v.parse().ok(),
                ("read_to", v) => read_to = v.parse().ok(),
                ("offset", v) => offset = Some(opt(v)?),
                ("max_before", v) => max_before = Some(opt(v)?),
                ("rollups", v) => rollups = v.parse().ok()?,
                _ => {}
            }
        }
        Some(Resume {
            emitted_until: emitted_until?,
            read_to: read_to?,
            offset: offset.flatten(),
            max_before: max_before.flatten(),
            rollups,
        })
    }
}

#[derive(Debug, Default)]
struct Clock {
    max_event_time: Option<i64>,
    /// Next offset to read: everything before it was processed.
    position: Option<i64>,
    /// Offsets before this were processed by a previous owner.
    resumed_read_to: Option<i64>,
    /// Offsets before this are not needed by any open window (a previous
    /// owner's checkpoint said so); rows there are skipped.
    resume_from: Option<i64>,
}

impl Clock {
    fn watermark(&self, ooo: i64) -> i64 {
        self.max_event_time
            .map_or(i64::MIN, |t| t.saturating_sub(ooo))
    }
}

#[derive(Debug, Default)]
struct Pane {
    sides: [Vec<RecordBatch>; 2],
    min_offset: [Option<i64>; 2],
    /// Per side, the newest event time before the row at `min_offset`: what
    /// a checkpoint at that offset must carry to replay the watermark.
    max_before: [Option<i64>; 2],
    /// Request ids of this pane's responses that the previous window's join
    /// already matched (a response can answer a request of either window).
    matched_by_previous: HashSet<String>,
}

/// An emitted window kept for revisions: the rows it was first scored
/// with (its requests; its responses and the next window's that its
/// requests could join).
#[derive(Debug, Default)]
struct Retained {
    requests: Vec<RecordBatch>,
    responses: Vec<RecordBatch>,
    min_offset: [Option<i64>; 2],
    max_before: [Option<i64>; 2],
}

/// Rows that arrived after a window was emitted but within its lateness,
/// each tagged with the boundary whose processing takes it in: the next
/// boundary after its side's watermark when it was read. Every row tagged
/// `B` is read before both watermarks pass `B`, so a revision at `B`
/// holds the same rows however the topics interleave.
#[derive(Debug, Default)]
struct LateRows {
    rows: Vec<(i64, Side, RecordBatch)>,
    min_offset: [Option<i64>; 2],
    max_before: [Option<i64>; 2],
}

/// A new revision of an emitted window, due at boundary `tag`.
#[derive(Debug)]
pub struct Revision {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    /// The rows the window was first scored with.
    pub requests: Vec<RecordBatch>,
    pub responses: Vec<RecordBatch>,
    /// Late rows taken in at or before `tag`, with the boundary of each.
    pub late: Vec<(i64, Side, RecordBatch)>,
    /// The boundary this revision is emitted at.
    pub tag: i64,
}

/// A window whose rows are complete.
#[derive(Debug)]
pub struct ClosedWindow {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    /// Requests with event time in the window.
    pub requests: Vec<RecordBatch>,
    /// Responses with event time in this window or the next one: all a
    /// request of this window can join with. The first `own_responses`
    /// batches hold this window's own responses, the rest the next one's.
    pub responses: Vec<RecordBatch>,
    pub own_responses: usize,
    /// Request ids of this window's own responses already matched by the
    /// previous window (see [`PartitionWindows::note_matched`]).
    pub matched_by_previous: HashSet<String>,
}

/// How the rows of one ingested batch were placed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placed {
    /// `_msg` indices of rows too late for their window.
    pub late: Vec<u32>,
    /// The side's watermark when each of `late` was judged (same order):
    /// what its DLQ record says, the same however the input was batched.
    pub late_watermark: Vec<i64>,
    /// Rows already handled by a previous owner of the partition.
    pub already_handled: usize,
    pub accepted: usize,
    /// Of `accepted`, rows late for an emitted window but within its
    /// lateness: they revise it.
    pub revising: usize,
    /// Rows older than the newest event time already seen on their side of
    /// the partition (placed normally when within the bound).
    pub out_of_order: usize,
}

/// Open windows of one partition pair.
#[derive(Debug)]
pub struct PartitionWindows {
    pub partition: i32,
    spec: WindowSpec,
    panes: BTreeMap<i64, Pane>,
    /// Emitted windows still within their lateness, by start.
    retained: BTreeMap<i64, Retained>,
    /// Late rows within lateness, by the start of the window they revise.
    late: BTreeMap<i64, LateRows>,
    clocks: [Clock; 2],
    /// Every window ending at or before this has been emitted.
    emitted_until: i64,
}

impl PartitionWindows {
    pub fn new(partition: i32, spec: WindowSpec) -> Self {
        PartitionWindows {
            partition,
            spec,
            panes: BTreeMap::new(),
            retained: BTreeMap::new(),
            late: BTreeMap::new(),
            clocks: [Clock::default(), Clock::default()],
            emitted_until: i64::MIN,
        }
    }

    /// Continue where a previous owner committed. Call before ingesting.
    pub fn resume(&mut self, side: Side, r: Resume) {
        self.emitted_until = self.emitted_until.max(r.emitted_until);
        let c = &mut self.clocks[side.idx()];
        c.resumed_read_to = Some(r.read_to);
        if r.offset.is_some() {
            c.resume_from = r.offset;
            c.max_event_time = r.max_before;
        }
    }

    pub fn emitted_until(&self) -> i64 {
        self.emitted_until
    }

    pub fn open_windows(&self) -> usize {
        self.panes.len()
    }

    pub fn buffered_rows(&self) -> usize {
        self.held_batches().map(|b| b.num_rows()).sum()
    }

    /// Every batch open, retained and late windows hold.
    fn held_batches(&self) -> impl Iterator<Item = &RecordBatch> {
        self.panes
            .values()
            .flat_map(|p| p.sides.iter().flatten())
            .chain(
                self.retained
                    .values()
                    .flat_map(|r| r.requests.iter().chain(&r.responses)),
            )
            .chain(self.late.values().flat_map(|l| l.rows.iter().map(|r| &r.2)))
    }

    /// Whether emitted windows are kept for revisions, or late rows wait.
    pub fn keeps_windows(&self) -> bool {
        !self.retained.is_empty() || !self.late.is_empty()
    }

    /// Bytes of the rows open windows hold (Arrow buffers).
    pub fn buffered_bytes(&self) -> usize {
        self.held_batches().map(|b| b.get_array_memory_size()).sum()
    }

    /// Record that everything before `next_offset` on `side` was read
    /// (including messages that were rejected and never became rows).
    pub fn advance_position(&mut self, side: Side, next_offset: i64) {
        let c = &mut self.clocks[side.idx()];
        c.position = Some(c.position.map_or(next_offset, |p| p.max(next_offset)));
    }

    /// Whether a previous owner already read the message at `offset` (and
    /// sent it to the DLQ if it rejected it): it must not be sent again.
    pub fn previously_read(&self, side: Side, offset: i64) -> bool {
        let c = &self.clocks[side.idx()];
        c.resumed_read_to.is_some_and(|r| offset < r) || c.resume_from.is_some_and(|r| offset < r)
    }

    pub fn watermark(&self, side: Side) -> i64 {
        self.clocks[side.idx()].watermark(self.spec.out_of_orderness_ms)
    }

    /// Place the rows of `batch` (this partition only, in offset order) into
    /// their windows. `batch` must have `event_time`, `_offset` and `_msg`.
    ///
    /// A row later than its side's watermark allows goes to the DLQ, unless
    /// a window it belongs to was emitted less than the lateness ago: then
    /// it waits, tagged, for that window's next revision.
    pub fn ingest(
        &mut self,
        side: Side,
        batch: &RecordBatch,
    ) -> Result<Placed, arrow::error::ArrowError> {
        let mut placed = Placed::default();
        if batch.num_rows() == 0 {
            return Ok(placed);
        }
        let times = column(batch, "event_time")?
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let offsets = column(batch, OFFSET_COL)?
            .as_primitive::<Int64Type>()
            .clone();
        let msgs = column(batch, MSG_COL)?.as_primitive::<UInt32Type>().clone();
        let spec = self.spec;
        let (size, delay, lateness) = (spec.size_ms, spec.max_response_delay_ms, spec.lateness_ms);
        let emitted_until = self.emitted_until;
        let clock = &mut self.clocks[side.idx()];
        // Rows by destination, in offset order within each, with the newest
        // event time before each group's first row.
        let mut to_pane: BTreeMap<i64, (Option<i64>, Vec<u32>)> = BTreeMap::new();
        let mut to_retained: BTreeMap<(i64, bool), (Option<i64>, Vec<u32>)> = BTreeMap::new();
        let mut to_late: BTreeMap<(i64, i64), (Option<i64>, Vec<u32>)> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            let t = times.value(row);
            let offset = offsets.value(row);
            if clock.resume_from.is_some_and(|r| offset < r) {
                // Before the checkpoint: every window that needed it was
                // emitted, and the checkpoint's watermark already covers it.
                placed.already_handled += 1;
                continue;
            }
            let wm = clock.watermark(spec.out_of_orderness_ms);
            let max_before = clock.max_event_time;
            let start = spec.start_of(t);
            let end = start + size;
            // The earliest window that can need this row (a response can
            // answer a request of the window before its own).
            let needed_end = match side {
                Side::Requests => end,
                Side::Responses => spec.start_of(t - delay) + size,
            };
            let closes_at = match side {
                Side::Requests => needed_end,
                Side::Responses => needed_end + delay,
            };
            if clock.max_event_time.is_some_and(|m| t < m) {
                placed.out_of_order += 1;
            }
            clock.max_event_time = Some(clock.max_event_time.map_or(t, |m| m.max(t)));
            let previously = clock.resumed_read_to.is_some_and(|r| offset < r);
            let late_by_watermark = closes_at <= wm;
            // A row read before is judged as it was then (its watermark
            // replays); a new one is also late for a window already emitted
            // at the end of input (a flush).
            let on_time = !late_by_watermark && (previously || needed_end > emitted_until);
            // Where an on-time row goes: its own window, and for a response
            // that a request of the window before can answer, that window's
            // retained rows too when it was emitted already (a re-read).
            let mut add = |start: i64, own: bool| {
                let end = start + size;
                if end > emitted_until {
                    to_pane
                        .entry(start)
                        .or_insert_with(|| (max_before, Vec::new()))
                        .1
                        .push(row as u32);
                    true
                } else if end + lateness > emitted_until && lateness > 0 {
                    to_retained
                        .entry((start, own))
                        .or_insert_with(|| (max_before, Vec::new()))
                        .1
                        .push(row as u32);
                    true
                } else {
                    false
                }
            };
            if on_time {
                let mut kept = add(start, true);
                if side == Side::Responses && needed_end == start && start <= emitted_until {
                    // Re-read: the window before was emitted with it.
                    kept |= add(start - size, false);
                }
                if kept {
                    placed.accepted += 1;
                } else {
                    // Read before, its windows emitted and past their lateness.
                    placed.already_handled += 1;
                }
                continue;
            }
            // Late for the window that needed it first. Its own window may
            // still take it (a response late only for the window before).
            let own_late = match side {
                Side::Requests => true,
                Side::Responses => end + delay <= wm,
            };
            let mut kept = lateness > 0 && !own_late && add(start, true);
            // The boundary that takes it in: the next one after its side's
            // watermark (which the other side cannot have passed yet).
            let adjusted = match side {
                Side::Requests => wm,
                Side::Responses => wm.saturating_sub(delay),
            };
            let tag = spec.start_of(adjusted).saturating_add(size);
            let mut targets = Vec::new();
            if own_late {
                targets.push(start);
            }
            if side == Side::Responses && needed_end == start {
                targets.push(start - size);
            }
            for x in targets {
                let x_end = x + size;
                let open_for_it =
                    lateness > 0 && tag <= x_end + lateness && x_end + lateness > emitted_until;
                if open_for_it && (previously || tag > emitted_until) {
                    to_late
                        .entry((x, tag))
                        .or_insert_with(|| (max_before, Vec::new()))
                        .1
                        .push(row as u32);
                    kept = true;
                }
            }
            if kept {
                placed.accepted += 1;
                if !previously {
                    placed.revising += 1;
                }
            } else if previously {
                // Late then too: it is in the DLQ already.
                placed.already_handled += 1;
            } else {
                placed.late.push(msgs.value(row));
                placed.late_watermark.push(wm);
            }
        }
        let take = |rows: Vec<u32>| -> Result<(i64, RecordBatch), arrow::error::ArrowError> {
            let first_offset = offsets.value(rows[0] as usize);
            Ok((
                first_offset,
                take_record_batch(batch, &UInt32Array::from(rows))?,
            ))
        };
        let i = side.idx();
        for (start, (max_before, rows)) in to_pane {
            let (first_offset, taken) = take(rows)?;
            let pane = self.panes.entry(start).or_default();
            pane.sides[i].push(taken);
            if pane.min_offset[i].is_none() {
                pane.min_offset[i] = Some(first_offset);
                pane.max_before[i] = max_before;
            }
        }
        for ((start, own), (max_before, rows)) in to_retained {
            let (first_offset, taken) = take(rows)?;
            let r = self.retained.entry(start).or_default();
            match side {
                Side::Requests => r.requests.push(taken),
                Side::Responses => r.responses.push(taken),
            }
            // The next window's responses are held by that window.
            if own && r.min_offset[i].is_none() {
                r.min_offset[i] = Some(first_offset);
                r.max_before[i] = max_before;
            }
        }
        for ((start, tag), (max_before, rows)) in to_late {
            let (first_offset, taken) = take(rows)?;
            let l = self.late.entry(start).or_default();
            l.rows.push((tag, side, taken));
            if l.min_offset[i].is_none() {
                l.min_offset[i] = Some(first_offset);
                l.max_before[i] = max_before;
            }
        }
        Ok(placed)
    }

    /// Close and return the oldest window if it is complete. With `flush`,
    /// close it regardless (end of input). Windows close one at a time so that
    /// the caller can [`note_matched`](Self::note_matched) on the next pane
    /// before that one closes too.
    pub fn close_next(&mut self, flush: bool) -> Option<ClosedWindow> {
        let size = self.spec.size_ms;
        let delay = self.spec.max_response_delay_ms;
        let &start = self.panes.keys().next()?;
        let wm_req = self.watermark(Side::Requests);
        let wm_resp = self.watermark(Side::Responses);
        if !(flush || (wm_req >= start + size && wm_resp.saturating_sub(delay) >= start + size)) {
            return None;
        }
        let pane = self.panes.remove(&start).expect("first key exists");
        let [requests, mut responses] = pane.sides;
        let own_responses = responses.len();
        if let Some(next) = self.panes.get(&(start + size)) {
            // Only those a request of this window can join with: which later
            // ones have arrived by now depends on timing.
            for b in &next.sides[Side::Responses.idx()] {
                match responses_before(b, start + size + delay) {
                    Ok(Some(b)) => responses.push(b),
                    Ok(None) => {}
                    // Every placed batch has event_time (ingest read it).
                    Err(_) => responses.push(b.clone()),
                }
            }
        }
        self.emitted_until = self.emitted_until.max(start + size);
        if self.spec.lateness_ms > 0 {
            self.retained.insert(
                start,
                Retained {
                    requests: requests.clone(),
                    responses: responses.clone(),
                    min_offset: pane.min_offset,
                    max_before: pane.max_before,
                },
            );
        }
        Some(ClosedWindow {
            partition: self.partition,
            start,
            end: start + size,
            requests,
            responses,
            own_responses,
            matched_by_previous: pane.matched_by_previous,
        })
    }

    /// The revisions due at boundary `tag`: every emitted window that late
    /// rows tagged `tag` belong to, with its first rows and every late row
    /// up to `tag`. Oldest window first.
    pub fn revisions_at(&self, tag: i64) -> Vec<Revision> {
        self.late
            .iter()
            .filter(|(_, l)| l.rows.iter().any(|r| r.0 == tag))
            .map(|(&start, _)| self.window_data(start, tag))
            .collect()
    }

    /// An emitted window's rows with its late rows tagged up to `tag`.
    pub fn window_data(&self, start: i64, tag: i64) -> Revision {
        let (requests, responses) = self
            .retained
            .get(&start)
            .map(|r| (r.requests.clone(), r.responses.clone()))
            .unwrap_or_default();
        let late = self
            .late
            .get(&start)
            .map(|l| l.rows.iter().filter(|r| r.0 <= tag).cloned().collect())
            .unwrap_or_default();
        Revision {
            partition: self.partition,
            start,
            end: start + self.spec.size_ms,
            requests,
            responses,
            late,
            tag,
        }
    }

    /// Whether the window starting at `start` was emitted and is kept for
    /// revisions (it had rows, or late rows came for it).
    pub fn is_retained(&self, start: i64) -> bool {
        self.retained.contains_key(&start) || self.late.contains_key(&start)
    }

    /// Forget windows whose lateness has passed at boundary `boundary`.
    pub fn expire(&mut self, boundary: i64) {
        let keep_after = boundary - self.spec.size_ms - self.spec.lateness_ms;
        self.retained = self.retained.split_off(&(keep_after + 1));
        self.late = self.late.split_off(&(keep_after + 1));
    }

    /// The last boundary a kept window can still be revised at.
    pub fn last_revision_boundary(&self) -> Option<i64> {
        let last = self.retained.keys().chain(self.late.keys()).max()?;
        Some(last + self.spec.size_ms + self.spec.lateness_ms)
    }

    /// At the end of input, once every window is closed: the boundary
    /// through which nothing read can be needed again (the end of the
    /// window holding the newest event time seen).
    pub fn flush_until(&self) -> Option<i64> {
        let max = self.clocks.iter().filter_map(|c| c.max_event_time).max()?;
        Some(self.spec.start_of(max) + self.spec.size_ms)
    }

    /// Every window ending at or before `boundary` was emitted (a boundary
    /// without a base window of its own, whose roll-ups were evaluated).
    pub fn advance_emitted(&mut self, boundary: i64) {
        self.emitted_until = self.emitted_until.max(boundary);
    }

    /// End of the oldest open window.
    pub fn first_pane_end(&self) -> Option<i64> {
        self.panes.keys().next().map(|s| s + self.spec.size_ms)
    }

    /// The last boundary both sides' watermarks have passed: every window
    /// ending there or before is complete, whether it holds rows or not.
    pub fn closable_until(&self) -> Option<i64> {
        let wm = self.watermark(Side::Requests).min(
            self.watermark(Side::Responses)
                .saturating_sub(self.spec.max_response_delay_ms),
        );
        (wm > i64::MIN / 2).then(|| self.spec.start_of(wm))
    }

    /// Record that the window before `pane_start` matched these request ids
    /// among the responses of the pane at `pane_start`, so that pane does not
    /// count them as unmatched when it closes.
    pub fn note_matched(&mut self, pane_start: i64, request_ids: Vec<String>) {
        if let Some(p) = self.panes.get_mut(&pane_start) {
            p.matched_by_previous.extend(request_ids);
        }
    }

    /// Close every complete window, oldest first (tests and tools that do
    /// not track matches across windows).
    pub fn close_ready(&mut self, flush: bool) -> Vec<ClosedWindow> {
        let closed = std::iter::from_fn(|| self.close_next(flush)).collect();
        if let Some(b) = self.flush_until().filter(|_| flush) {
            self.advance_emitted(b);
        }
        closed
    }

    /// The oldest offset of `side` an open window still holds, with the
    /// newest event time before it; or the read position and the newest
    /// event time when nothing is held.
    fn held(&self, side: Side) -> Option<(i64, Option<i64>)> {
        let i = side.idx();
        self.panes
            .values()
            .map(|p| (p.min_offset[i], p.max_before[i]))
            .chain(
                self.retained
                    .values()
                    .map(|r| (r.min_offset[i], r.max_before[i])),
            )
            .chain(
                self.late
                    .values()
                    .map(|l| (l.min_offset[i], l.max_before[i])),
            )
            .filter_map(|(o, m)| Some((o?, m)))
            .min_by_key(|(o, _)| *o)
            .or_else(|| {
                // A side that read nothing yet since a resume stays where
                // the checkpoint put it, so a commit can still carry its
                // checkpoint (with this owner's emission progress).
                let c = &self.clocks[i];
                Some((c.position.or(c.resume_from)?, c.max_event_time))
            })
    }

    /// Offset to commit for `side`: the oldest offset an open window still
    /// holds, or the read position when nothing is held.
    pub fn commit_offset(&self, side: Side) -> Option<i64> {
        self.held(side).map(|(o, _)| o)
    }

    /// Checkpoint to write with the commit of `side`. `read_to` never moves
    /// back behind what a previous owner had read: a commit made while
    /// re-reading its offsets (say, after a DLQ record) must not forget that
    /// the rest up to its `read_to` was handled too.
    pub fn checkpoint(&self, side: Side) -> Option<Resume> {
        let clock = &self.clocks[side.idx()];
        let read_to = clock
            .position
            .or(clock.resume_from)?
            .max(clock.resumed_read_to.unwrap_or(i64::MIN));
        let (offset, max_before) = self.held(side)?;
        Some(Resume {
            emitted_until: self.emitted_until,
            read_to,
            offset: Some(offset),
            max_before,
            rollups: 0,
        })
    }
}

/// The rows of `batch` with event time before `until`; `None` if none.
fn responses_before(
    batch: &RecordBatch,
    until: i64,
) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
    let times = column(batch, "event_time")?.as_primitive::<TimestampMillisecondType>();
    let keep: arrow::array::BooleanArray = times
        .iter()
        .map(|t| Some(t.is_some_and(|t| t < until)))
        .collect();
    match keep.true_count() {
        0 => Ok(None),
        n if n == batch.num_rows() => Ok(Some(batch.clone())),
        _ => arrow::compute::filter_record_batch(batch, &keep).map(Some),
    }
}

/// A column by name, or a schema error naming it.
pub(crate) fn column<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a arrow::array::ArrayRef, arrow::error::ArrowError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| arrow::error::ArrowError::SchemaError(format!("batch lacks column {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::Rng;
    use arrow::array::{Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    const MIN: i64 = 60_000;

    fn spec() -> WindowSpec {
        WindowSpec {
            size_ms: 10 * MIN,
            out_of_orderness_ms: 30_000,
            max_response_delay_ms: 2 * MIN,
            lateness_ms: 0,
        }
    }

    /// Rows (event_time, offset); `_msg` = offset.
    fn batch(rows: &[(i64, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
                false,
            ),
            Field::new(OFFSET_COL, DataType::Int64, false),
            Field::new(MSG_COL, DataType::UInt32, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampMillisecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())
                        .with_timezone("+00:00"),
                ),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(UInt32Array::from(
                    rows.iter().map(|r| r.1 as u32).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn rows(w: &ClosedWindow, side: Side) -> usize {
        match side {
            Side::Requests => w.requests.iter().map(|b| b.num_rows()).sum(),
            Side::Responses => w.responses.iter().map(|b| b.num_rows()).sum(),
        }
    }

    #[test]
    fn window_closes_only_after_both_watermarks_pass() {
        let mut pw = PartitionWindows::new(0, spec());
        pw.ingest(Side::Requests, &batch(&[(MIN, 0), (9 * MIN, 1)]))
            .unwrap();
        pw.ingest(Side::Responses, &batch(&[(MIN + 500, 0), (11 * MIN, 1)]))
            .unwrap();
        // Requests reach 10m30s: request watermark = 10m, response side only 10.5m.
        pw.ingest(Side::Requests, &batch(&[(10 * MIN + 30_000, 2)]))
            .unwrap();
        assert!(
            pw.close_ready(false).is_empty(),
            "responses up to 12m not yet seen"
        );
        pw.ingest(Side::Responses, &batch(&[(12 * MIN + 30_000, 2)]))
            .unwrap();
        let closed = pw.close_ready(false);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].start, closed[0].end), (0, 10 * MIN));
        assert_eq!(rows(&closed[0], Side::Requests), 2);
        // Its own response, plus the next pane's response at 11m; the one at
        // 12m30s is past the response delay and cannot join.
        assert_eq!(rows(&closed[0], Side::Responses), 2);
        assert_eq!(pw.emitted_until(), 10 * MIN);
    }

    #[test]
    fn commit_offset_holds_back_to_oldest_open_row() {
        let mut pw = PartitionWindows::new(0, spec());
        pw.ingest(
            Side::Requests,
            &batch(&[(MIN, 5), (11 * MIN, 6), (2 * MIN, 7)]),
        )
        .unwrap();
        pw.advance_position(Side::Requests, 8);
        assert_eq!(pw.commit_offset(Side::Requests), Some(5));
        pw.ingest(Side::Requests, &batch(&[(25 * MIN, 8)])).unwrap();
        pw.advance_position(Side::Requests, 9);
        pw.ingest(Side::Responses, &batch(&[(25 * MIN, 3)]))
            .unwrap();
        pw.advance_position(Side::Responses, 4);
        let closed = pw.close_ready(false);
        assert_eq!(
            closed.iter().map(|w| w.start).collect::<Vec<_>>(),
            vec![0, 10 * MIN]
        );
        // Offsets 5..8 were all in closed windows; 8 is in the open 20m window.
        assert_eq!(pw.commit_offset(Side::Requests), Some(8));
        let meta = pw.checkpoint(Side::Requests).unwrap();
        assert_eq!(Resume::parse(&meta.encode()), Some(meta));
        assert_eq!(
            meta,
            Resume {
                emitted_until: 20 * MIN,
                read_to: 9,
                offset: Some(8),
                max_before: Some(11 * MIN),
                rollups: 0,
            }
        );
    }

    #[test]
    fn late_rows_are_reported_not_placed() {
        let mut pw = PartitionWindows::new(0, spec());
        // 20s out of order: fine.
        let placed = pw
            .ingest(
                Side::Requests,
                &batch(&[(5 * MIN, 0), (5 * MIN - 20_000, 1)]),
            )
            .unwrap();
        assert_eq!((placed.accepted, placed.late.len()), (2, 0));
        // After 12m the watermark is 11m30s: the [0,10m) window is past.
        let placed = pw
            .ingest(Side::Requests, &batch(&[(12 * MIN, 2), (9 * MIN, 3)]))
            .unwrap();
        assert_eq!(placed.late, vec![3]);
        let placed = pw
            .ingest(Side::Requests, &batch(&[(30 * MIN, 4), (11 * MIN, 5)]))
            .unwrap();
        assert_eq!(placed.late, vec![5]);
        assert_eq!(placed.accepted, 1);
    }

    #[test]
    fn resumed_partition_skips_rows_the_previous_owner_handled() {
        let mut pw = PartitionWindows::new(0, spec());
        pw.resume(
            Side::Requests,
            Resume {
                emitted_until: 10 * MIN,
                read_to: 100,
                offset: None,
                max_before: None,
                rollups: 0,
            },
        );
        let placed = pw
            .ingest(
                Side::Requests,
                &batch(&[(9 * MIN, 90), (11 * MIN, 91), (9 * MIN, 100)]),
            )
            .unwrap();
        assert_eq!(placed.already_handled, 1);
        assert_eq!(placed.accepted, 1);
        assert_eq!(placed.late, vec![100]);
    }

    #[test]
    fn checkpoint_while_re_reading_keeps_the_previous_read_to() {
        let mut pw = PartitionWindows::new(0, spec());
        pw.resume(
            Side::Requests,
            Resume {
                emitted_until: 10 * MIN,
                read_to: 100,
                offset: None,
                max_before: None,
                rollups: 0,
            },
        );
        pw.ingest(Side::Requests, &batch(&[(9 * MIN, 90), (11 * MIN, 91)]))
            .unwrap();
        pw.advance_position(Side::Requests, 92);
        assert_eq!(
            pw.checkpoint(Side::Requests),
            Some(Resume {
                emitted_until: 10 * MIN,
                read_to: 100,
                offset: Some(91),
                max_before: Some(9 * MIN),
                rollups: 0,
            })
        );
        pw.advance_position(Side::Requests, 120);
        assert_eq!(pw.checkpoint(Side::Requests).unwrap().read_to, 120);
    }

    #[test]
    fn checkpoints_round_trip_and_older_ones_still_parse() {
        let r = Resume {
            emitted_until: 600_000,
            read_to: 42,
            offset: Some(40),
            max_before: None,
            rollups: 17,
        };
        assert_eq!(Resume::parse(&r.encode()), Some(r));
        assert_eq!(
            Resume::parse("dw1;emitted_until=5;read_to=7"),
            Some(Resume {
                emitted_until: 5,
                read_to: 7,
                offset: None,
                max_before: None,
                rollups: 0,
            })
        );
        assert_eq!(Resume::parse("dw2;emitted_until=5"), None);
        assert_eq!(Resume::parse("garbage"), None);
    }

    #[test]
    fn a_quiet_side_holds_windows_open_until_the_input_ends() {
        let mut pw = PartitionWindows::new(0, spec());
        pw.ingest(Side::Requests, &batch(&[(MIN, 0), (55 * MIN, 1)]))
            .unwrap();
        pw.advance_position(Side::Requests, 2);
        // No response event ever: however long the wait, nothing closes.
        assert!(pw.close_ready(false).is_empty());
        assert_eq!(pw.close_ready(true).len(), 2);
    }

    #[test]
    fn a_response_early_in_the_oldest_open_window_is_kept_after_a_takeover() {
        // The previous owner emitted [0, 10m); a response at 10m30s belongs to
        // the open [10m, 20m) window (and could also have answered a request
        // of the emitted one). Re-read by the next owner, it must be placed.
        let mut first = PartitionWindows::new(0, spec());
        first
            .ingest(
                Side::Requests,
                &batch(&[(9 * MIN, 0), (10 * MIN + 20_000, 1), (11 * MIN, 2)]),
            )
            .unwrap();
        first
            .ingest(
                Side::Responses,
                &batch(&[
                    (9 * MIN + 1, 0),
                    (10 * MIN + 30_000, 1),
                    (12 * MIN + 40_000, 2),
                ]),
            )
            .unwrap();
        first.advance_position(Side::Requests, 3);
        first.advance_position(Side::Responses, 3);
        let closed = first.close_ready(false);
        assert_eq!(closed.len(), 1);
        let cps = Side::BOTH.map(|s| first.checkpoint(s).unwrap());
        assert_eq!(cps[1].offset, Some(1), "the open window holds response 1");
        let mut next = PartitionWindows::new(0, spec());
        for (side, cp) in Side::BOTH.into_iter().zip(cps) {
            next.resume(side, cp);
        }
        let placed = next
            .ingest(
                Side::Responses,
                &batch(&[(10 * MIN + 30_000, 1), (12 * MIN + 40_000, 2)]),
            )
            .unwrap();
        assert_eq!((placed.accepted, placed.already_handled), (2, 0));
        next.ingest(
            Side::Requests,
            &batch(&[(10 * MIN + 20_000, 1), (11 * MIN, 2)]),
        )
        .unwrap();
        let a = first.close_ready(true);
        let b = next.close_ready(true);
        assert_eq!(shape(&a), shape(&b));
        assert_eq!(rows(&b[0], Side::Responses), 2);
    }

    /// (start, request offsets, response offsets) of each window.
    fn shape(ws: &[ClosedWindow]) -> Vec<(i64, Vec<i64>, Vec<i64>)> {
        let offs = |bs: &[RecordBatch]| {
            let mut v: Vec<i64> = bs
                .iter()
                .flat_map(|b| {
                    b.column_by_name(OFFSET_COL)
                        .unwrap()
                        .as_primitive::<Int64Type>()
                        .values()
                        .to_vec()
                })
                .collect();
            v.sort();
            v
        };
        ws.iter()
            .map(|w| (w.start, offs(&w.requests), offs(&w.responses)))
            .collect()
    }

    /// Both sides of a partition: requests in event-time order with jitter
    /// up to 90s (many beyond the 30s bound), responses 0..3m later.
    fn stream(rng: &mut Rng, n: usize) -> [Vec<(i64, i64)>; 2] {
        let mut req = Vec::new();
        let mut resp = Vec::new();
        let mut t = 0;
        for _ in 0..n {
            t += rng.below(20_000) as i64;
            // A quarter of the requests lag by up to 90s: many beyond the bound.
            let lag = if rng.below(4) == 0 { 90_000 } else { 20_000 };
            let jittered = t - rng.below(lag) as i64;
            req.push((jittered, req.len() as i64));
            resp.push(jittered + rng.below(180_000) as i64);
        }
        resp.sort();
        // Reorder responses too, some by several places.
        for i in 1..resp.len() {
            match rng.below(10) {
                0 | 1 => resp.swap(i - 1, i),
                2 if i >= 8 => resp.swap(i - 8, i),
                _ => {}
            }
        }
        let resp = resp
            .into_iter()
            .enumerate()
            .map(|(o, t)| (t, o as i64))
            .collect();
        [req, resp]
    }

    /// Feed both sides in chunks, interleaved by `rng`, from `from` offsets;
    /// stop after `stop_after` chunks (None: to the end, then flush).
    fn drive(
        pw: &mut PartitionWindows,
        input: &[Vec<(i64, i64)>; 2],
        from: [usize; 2],
        rng: &mut Rng,
        stop_after: Option<usize>,
        late: &mut Vec<(usize, u32)>,
    ) -> Vec<ClosedWindow> {
        let mut at = from;
        let mut out = Vec::new();
        let mut chunks = 0;
        while at[0] < input[0].len() || at[1] < input[1].len() {
            if stop_after == Some(chunks) {
                return out;
            }
            let i = if at[0] >= input[0].len() {
                1
            } else if at[1] >= input[1].len() {
                0
            } else {
                rng.below(2) as usize
            };
            let side = Side::BOTH[i];
            let n = 1 + rng.below(7) as usize;
            let end = (at[i] + n).min(input[i].len());
            let placed = pw.ingest(side, &batch(&input[i][at[i]..end])).unwrap();
            late.extend(placed.late.into_iter().map(|m| (i, m)));
            pw.advance_position(side, end as i64);
            at[i] = end;
            chunks += 1;
            while let Some(w) = pw.close_next(false) {
                out.push(w);
            }
        }
        out.extend(pw.close_ready(true));
        out
    }

    #[test]
    fn a_takeover_at_any_point_emits_what_an_uninterrupted_run_emits() {
        let mut total_late = 0;
        for seed in 0..200u64 {
            let mut rng = Rng(seed);
            let input = stream(&mut rng, 150);
            let mut whole = PartitionWindows::new(0, spec());
            let mut late_reference = Vec::new();
            let reference = shape(&drive(
                &mut whole,
                &input,
                [0, 0],
                &mut Rng(seed + 1),
                None,
                &mut late_reference,
            ));
            assert!(reference.len() >= 3, "seed {seed}: too few windows to test");
            let cut = 1 + rng.below(40) as usize;
            let mut first = PartitionWindows::new(0, spec());
            let mut late = Vec::new();
            let mut got = shape(&drive(
                &mut first,
                &input,
                [0, 0],
                &mut Rng(seed + 2),
                Some(cut),
                &mut late,
            ));
            let sides = Side::BOTH;
            let cps = sides.map(|s| first.checkpoint(s));
            let mut next = PartitionWindows::new(0, spec());
            let mut from = [0, 0];
            for (i, cp) in cps.into_iter().enumerate() {
                if let Some(cp) = cp {
                    next.resume(sides[i], cp);
                    // The consumer restarts at the committed offset.
                    from[i] = cp.offset.unwrap() as usize;
                }
            }
            got.extend(shape(&drive(
                &mut next,
                &input,
                from,
                &mut Rng(seed + 3),
                None,
                &mut late,
            )));
            late.sort();
            late_reference.sort();
            assert_eq!(
                late, late_reference,
                "seed {seed}: late rows (to the DLQ), each once"
            );
            total_late += late.len();
            assert_eq!(got, reference, "seed {seed}, cut after {cut} chunks");
        }
        assert!(
            total_late > 100,
            "the streams must exercise lateness: {total_late}"
        );
    }

    #[test]
    fn out_of_order_rows_are_counted_per_side() {
        let mut pw = PartitionWindows::new(0, spec());
        let placed = pw
            .ingest(
                Side::Requests,
                &batch(&[(MIN, 0), (MIN - 5_000, 1), (MIN, 2), (2 * MIN, 3)]),
            )
            .unwrap();
        // Only the row older than the newest before it; equal times are in order.
        assert_eq!(placed.out_of_order, 1);
        let placed = pw.ingest(Side::Requests, &batch(&[(MIN + 1, 4)])).unwrap();
        assert_eq!(
            placed.out_of_order, 1,
            "the newest seen carries across batches"
        );
        let placed = pw.ingest(Side::Responses, &batch(&[(MIN, 0)])).unwrap();
        assert_eq!(placed.out_of_order, 0, "each side has its own newest");
    }

    #[test]
    fn windows_close_one_at_a_time_and_carry_matches_into_the_next() {
        let mut pw = PartitionWindows::new(0, spec());
        pw.ingest(Side::Requests, &batch(&[(MIN, 0), (11 * MIN, 1)]))
            .unwrap();
        pw.ingest(Side::Responses, &batch(&[(2 * MIN, 0), (10 * MIN + 1, 1)]))
            .unwrap();
        let first = pw.close_next(true).unwrap();
        assert_eq!((first.start, first.own_responses), (0, 1));
        assert_eq!(
            rows(&first, Side::Responses),
            2,
            "own pane plus the next one's"
        );
        pw.note_matched(first.end, vec!["r1".into()]);
        let second = pw.close_next(true).unwrap();
        assert_eq!(second.start, 10 * MIN);
        assert!(second.matched_by_previous.contains("r1"));
        assert!(pw.close_next(true).is_none());
    }

    #[test]
    fn flush_closes_everything() {
        let mut pw = PartitionWindows::new(0, spec());
        pw.ingest(Side::Requests, &batch(&[(MIN, 0), (15 * MIN, 1)]))
            .unwrap();
        assert_eq!(pw.close_ready(true).len(), 2);
        assert_eq!(pw.open_windows(), 0);
    }

    fn spec_late() -> WindowSpec {
        WindowSpec {
            lateness_ms: 20 * MIN,
            ..spec()
        }
    }

    /// Ingest `rows` of `side` and mark them read.
    fn feed(pw: &mut PartitionWindows, side: Side, rows: &[(i64, i64)]) -> Placed {
        let placed = pw.ingest(side, &batch(rows)).unwrap();
        pw.advance_position(side, rows.iter().map(|r| r.1).max().unwrap() + 1);
        placed
    }

    /// Close what is ready and mark the boundaries processed, as the worker
    /// loop does (revisions are collected before each boundary's expiry).
    fn process(pw: &mut PartitionWindows, until: i64) -> Vec<Revision> {
        let mut revisions = Vec::new();
        let mut b = pw.emitted_until().max(0) + 10 * MIN;
        while b <= until {
            if pw.first_pane_end() == Some(b) {
                pw.close_next(false).unwrap();
            }
            revisions.extend(pw.revisions_at(b));
            pw.advance_emitted(b);
            pw.expire(b);
            b += 10 * MIN;
        }
        revisions
    }

    /// A revision's window start, boundary and late rows (tag, rows).
    type Shape = (i64, i64, Vec<(i64, usize)>);

    fn late_rows(r: &Revision) -> Vec<(i64, usize)> {
        r.late
            .iter()
            .map(|(tag, _, b)| (*tag, b.num_rows()))
            .collect()
    }

    #[test]
    fn late_within_lateness_revises_and_beyond_goes_to_the_dlq() {
        let mut pw = PartitionWindows::new(0, spec_late());
        feed(&mut pw, Side::Requests, &[(MIN, 0), (12 * MIN, 1)]);
        feed(
            &mut pw,
            Side::Responses,
            &[(MIN + 1_000, 0), (14 * MIN + 31_000, 1)],
        );
        assert!(process(&mut pw, 10 * MIN).is_empty());
        assert_eq!(pw.emitted_until(), 10 * MIN);
        // 5m, read at a request watermark of 11m30s: late for [0, 10m),
        // taken in at the next boundary, 20m, within 10m + 20m.
        let p = feed(&mut pw, Side::Requests, &[(5 * MIN, 2)]);
        assert_eq!((p.revising, p.accepted, p.late.len()), (1, 1, 0));
        // Exactly at the end of the lateness: the boundary 30m is the last
        // that may revise [0, 10m).
        feed(&mut pw, Side::Requests, &[(21 * MIN, 3)]);
        feed(&mut pw, Side::Responses, &[(23 * MIN, 2)]);
        let p = feed(&mut pw, Side::Requests, &[(6 * MIN, 4)]);
        assert_eq!(p.revising, 1, "tag 30m = end + lateness: still taken");
        let revisions = process(&mut pw, 20 * MIN);
        assert_eq!(revisions.len(), 1);
        assert_eq!((revisions[0].start, revisions[0].tag), (0, 20 * MIN));
        assert_eq!(late_rows(&revisions[0]), vec![(20 * MIN, 1)]);
        assert_eq!(
            revisions[0]
                .requests
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>(),
            1
        );
        // One more boundary: beyond it nothing may revise [0, 10m) any more.
        feed(&mut pw, Side::Requests, &[(31 * MIN, 5)]);
        feed(&mut pw, Side::Responses, &[(33 * MIN, 3)]);
        let revisions = process(&mut pw, 30 * MIN);
        assert_eq!(revisions.len(), 1);
        assert_eq!(late_rows(&revisions[0]), vec![(20 * MIN, 1), (30 * MIN, 1)]);
        let p = feed(&mut pw, Side::Requests, &[(7 * MIN, 6)]);
        assert_eq!(
            (p.revising, p.late),
            (0, vec![6]),
            "tag 40m > 10m + 20m: DLQ"
        );
        assert!(!pw.is_retained(0), "expired once its lateness passed");
    }

    #[test]
    fn a_new_owner_keeps_the_late_rows_of_revisions_already_emitted() {
        let run = |pw: &mut PartitionWindows, from: [i64; 2]| -> Vec<Revision> {
            let req = [
                (MIN, 0),
                (12 * MIN, 1),
                (5 * MIN, 2),
                (22 * MIN, 3),
                (8 * MIN, 4),
                (33 * MIN, 5),
            ];
            let resp = [
                (MIN + 1_000, 0),
                (14 * MIN + 31_000, 1),
                (24 * MIN + 31_000, 2),
                (34 * MIN + 31_000, 3),
            ];
            let mut revisions = Vec::new();
            // Interleaved as the windows need: each boundary's rows first.
            for (r, q) in [(0..2, 0..2), (2..4, 2..3), (4..6, 3..4)] {
                let reqs: Vec<_> = req[r].iter().filter(|x| x.1 >= from[0]).copied().collect();
                let resps: Vec<_> = resp[q].iter().filter(|x| x.1 >= from[1]).copied().collect();
                if !reqs.is_empty() {
                    feed(pw, Side::Requests, &reqs);
                }
                if !resps.is_empty() {
                    feed(pw, Side::Responses, &resps);
                }
                let until = pw.closable_until().unwrap_or(i64::MIN);
                revisions.extend(process(pw, until));
            }
            revisions
        };
        let mut whole = PartitionWindows::new(0, spec_late());
        let reference: Vec<Shape> = run(&mut whole, [0, 0])
            .iter()
            .map(|r| (r.start, r.tag, late_rows(r)))
            .collect();
        assert_eq!(
            reference,
            vec![
                (0, 20 * MIN, vec![(20 * MIN, 1)]),
                (0, 30 * MIN, vec![(20 * MIN, 1), (30 * MIN, 1)])
            ]
        );
        // Stopped after the first revision: a new owner resumes from the
        // checkpoints and emits the second with both late rows.
        let mut first = PartitionWindows::new(0, spec_late());
        let req = [(MIN, 0), (12 * MIN, 1), (5 * MIN, 2), (22 * MIN, 3)];
        feed(&mut first, Side::Requests, &req[..2]);
        feed(
            &mut first,
            Side::Responses,
            &[(MIN + 1_000, 0), (14 * MIN + 31_000, 1)],
        );
        process(&mut first, 10 * MIN);
        feed(&mut first, Side::Requests, &req[2..]);
        feed(&mut first, Side::Responses, &[(24 * MIN + 31_000, 2)]);
        assert_eq!(process(&mut first, 20 * MIN).len(), 1);
        let cps = Side::BOTH.map(|s| first.checkpoint(s).unwrap());
        assert_eq!(
            cps[0].offset,
            Some(0),
            "late rows and their window hold the offsets back"
        );
        let mut next = PartitionWindows::new(0, spec_late());
        for (side, cp) in Side::BOTH.into_iter().zip(cps) {
            next.resume(side, cp);
        }
        let resumed: Vec<Shape> = run(&mut next, [0, 0])
            .iter()
            .map(|r| (r.start, r.tag, late_rows(r)))
            .collect();
        assert_eq!(resumed, reference[1..]);
    }
}
