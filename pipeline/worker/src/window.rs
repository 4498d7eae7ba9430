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
//! Lateness is judged from the event's own side only, never from the other
//! topic's progress, so the same partition contents yield the same rows in
//! every window, live or replayed, however the two topics interleave.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

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
    fn idx(self) -> usize {
        match self {
            Side::Requests => 0,
            Side::Responses => 1,
        }
    }
}

/// Static window parameters, in event-time milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec {
    pub size_ms: i64,
    pub out_of_orderness_ms: i64,
    pub max_response_delay_ms: i64,
    pub idle_timeout: Duration,
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
    /// The previous owner had read everything before this offset.
    pub read_to: i64,
}

impl Resume {
    const PREFIX: &'static str = "dw1;";

    /// Checkpoint value; parsed back by [`Resume::parse`].
    pub fn encode(&self) -> String {
        format!(
            "{}emitted_until={};read_to={}",
            Self::PREFIX,
            self.emitted_until,
            self.read_to
        )
    }

    pub fn parse(s: &str) -> Option<Resume> {
        let rest = s.strip_prefix(Self::PREFIX)?;
        let mut emitted_until = None;
        let mut read_to = None;
        for part in rest.split(';') {
            match part.split_once('=')? {
                ("emitted_until", v) => emitted_until = v.parse().ok(),
                ("read_to", v) => read_to = v.parse().ok(),
                _ => {}
            }
        }
        Some(Resume {
            emitted_until: emitted_until?,
            read_to: read_to?,
        })
    }
}

#[derive(Debug)]
struct Clock {
    max_event_time: Option<i64>,
    last_activity: Instant,
    /// Next offset to read: everything before it was processed.
    position: Option<i64>,
    /// Offsets before this were processed by a previous owner.
    resumed_read_to: Option<i64>,
    /// Read up to the partition's high watermark: nothing more is there yet.
    caught_up: bool,
}

impl Clock {
    fn new(now: Instant) -> Self {
        Clock {
            max_event_time: None,
            last_activity: now,
            position: None,
            resumed_read_to: None,
            caught_up: false,
        }
    }

    fn watermark(&self, ooo: i64) -> i64 {
        self.max_event_time
            .map_or(i64::MIN, |t| t.saturating_sub(ooo))
    }
}

#[derive(Debug, Default)]
struct Pane {
    sides: [Vec<RecordBatch>; 2],
    min_offset: [Option<i64>; 2],
    /// Request ids of this pane's responses that the previous window's join
    /// already matched (a response can answer a request of either window).
    matched_by_previous: HashSet<String>,
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
    /// Rows already handled by a previous owner of the partition.
    pub already_handled: usize,
    pub accepted: usize,
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
    clocks: [Clock; 2],
    /// Every window ending at or before this has been emitted.
    emitted_until: i64,
}

impl PartitionWindows {
    pub fn new(partition: i32, spec: WindowSpec, now: Instant) -> Self {
        PartitionWindows {
            partition,
            spec,
            panes: BTreeMap::new(),
            clocks: [Clock::new(now), Clock::new(now)],
            emitted_until: i64::MIN,
        }
    }

    /// Continue where a previous owner committed.
    pub fn resume(&mut self, side: Side, r: Resume) {
        self.emitted_until = self.emitted_until.max(r.emitted_until);
        self.clocks[side.idx()].resumed_read_to = Some(r.read_to);
    }

    pub fn emitted_until(&self) -> i64 {
        self.emitted_until
    }

    pub fn open_windows(&self) -> usize {
        self.panes.len()
    }

    pub fn buffered_rows(&self) -> usize {
        self.panes
            .values()
            .flat_map(|p| p.sides.iter().flatten())
            .map(|b| b.num_rows())
            .sum()
    }

    /// Record that everything before `next_offset` on `side` was read
    /// (including messages that were rejected and never became rows).
    pub fn advance_position(&mut self, side: Side, next_offset: i64, now: Instant) {
        let c = &mut self.clocks[side.idx()];
        c.position = Some(c.position.map_or(next_offset, |p| p.max(next_offset)));
        c.last_activity = now;
    }

    pub fn watermark(&self, side: Side) -> i64 {
        self.clocks[side.idx()].watermark(self.spec.out_of_orderness_ms)
    }

    /// Whether `side` has been read up to its partition's high watermark.
    /// Only a caught-up side can count as idle: a side with records waiting
    /// (a replay, a consumer that fetched the other topic first) is slow,
    /// not idle, and must keep holding windows open.
    pub fn set_caught_up(&mut self, side: Side, caught_up: bool) {
        self.clocks[side.idx()].caught_up = caught_up;
    }

    /// Place the rows of `batch` (this partition only, in offset order) into
    /// their windows. `batch` must have `event_time`, `_offset` and `_msg`.
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
        let clock = &mut self.clocks[side.idx()];
        // Rows grouped by window start, in offset order within each window.
        let mut by_window: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            let t = times.value(row);
            let offset = offsets.value(row);
            let wm = clock.watermark(spec.out_of_orderness_ms);
            let start = spec.start_of(t);
            let end = start + spec.size_ms;
            // The earliest window that can still need this row.
            let needed_end = match side {
                Side::Requests => end,
                Side::Responses => spec.start_of(t - spec.max_response_delay_ms) + spec.size_ms,
            };
            let closes_at = match side {
                Side::Requests => needed_end,
                Side::Responses => needed_end + spec.max_response_delay_ms,
            };
            let handled_before = clock.resumed_read_to.is_some_and(|r| offset < r)
                && needed_end <= self.emitted_until;
            if clock.max_event_time.is_some_and(|m| t < m) {
                placed.out_of_order += 1;
            }
            clock.max_event_time = Some(clock.max_event_time.map_or(t, |m| m.max(t)));
            if handled_before {
                placed.already_handled += 1;
            } else if closes_at <= wm
                || end <= self.emitted_until
                || needed_end <= self.emitted_until
            {
                placed.late.push(msgs.value(row));
            } else {
                by_window.entry(start).or_default().push(row as u32);
                placed.accepted += 1;
            }
        }
        for (start, rows) in by_window {
            let first_offset = offsets.value(rows[0] as usize);
            let idx = UInt32Array::from(rows);
            let taken = take_record_batch(batch, &idx)?;
            let pane = self.panes.entry(start).or_default();
            pane.sides[side.idx()].push(taken);
            let m = &mut pane.min_offset[side.idx()];
            *m = Some(m.map_or(first_offset, |o| o.min(first_offset)));
        }
        Ok(placed)
    }

    /// Watermark of `side` for closing purposes: an idle side (caught up
    /// and silent for `idle_timeout`) stops holding the other one back.
    fn effective_watermark(&self, side: Side, now: Instant) -> i64 {
        let own = self.watermark(side);
        let other_side = match side {
            Side::Requests => Side::Responses,
            Side::Responses => Side::Requests,
        };
        let clock = &self.clocks[side.idx()];
        let idle =
            clock.caught_up && now.duration_since(clock.last_activity) >= self.spec.idle_timeout;
        if !idle {
            return own;
        }
        let other = self.watermark(other_side);
        let substitute = match side {
            Side::Requests => other.saturating_sub(self.spec.max_response_delay_ms),
            Side::Responses => other.saturating_add(self.spec.max_response_delay_ms),
        };
        own.max(substitute)
    }

    /// Close and return the oldest window if it is complete. With `flush`,
    /// close it regardless (end of input). Windows close one at a time so that
    /// the caller can [`note_matched`](Self::note_matched) on the next pane
    /// before that one closes too.
    pub fn close_next(&mut self, now: Instant, flush: bool) -> Option<ClosedWindow> {
        let size = self.spec.size_ms;
        let delay = self.spec.max_response_delay_ms;
        let Some(&start) = self.panes.keys().next() else {
            self.flushed(flush);
            return None;
        };
        let wm_req = self.effective_watermark(Side::Requests, now);
        let wm_resp = self.effective_watermark(Side::Responses, now);
        if !(flush || (wm_req >= start + size && wm_resp.saturating_sub(delay) >= start + size)) {
            return None;
        }
        let pane = self.panes.remove(&start).expect("first key exists");
        let [requests, mut responses] = pane.sides;
        let own_responses = responses.len();
        if let Some(next) = self.panes.get(&(start + size)) {
            responses.extend(next.sides[Side::Responses.idx()].iter().cloned());
        }
        self.emitted_until = self.emitted_until.max(start + size);
        if self.panes.is_empty() {
            self.flushed(flush);
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

    /// With everything flushed, nothing before the read position can be
    /// needed again.
    fn flushed(&mut self, flush: bool) {
        if flush {
            if let Some(max) = self.clocks.iter().filter_map(|c| c.max_event_time).max() {
                self.emitted_until = self
                    .emitted_until
                    .max(self.spec.start_of(max) + self.spec.size_ms);
            }
        }
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
    pub fn close_ready(&mut self, now: Instant, flush: bool) -> Vec<ClosedWindow> {
        std::iter::from_fn(|| self.close_next(now, flush)).collect()
    }

    /// Offset to commit for `side`: the oldest offset an open window still
    /// holds, or the read position when nothing is held.
    pub fn commit_offset(&self, side: Side) -> Option<i64> {
        let held = self
            .panes
            .values()
            .filter_map(|p| p.min_offset[side.idx()])
            .min();
        held.or(self.clocks[side.idx()].position)
    }

    /// Checkpoint to write with the commit of `side`. `read_to` never moves
    /// back behind what a previous owner had read: a commit made while
    /// re-reading its offsets (say, after a DLQ record) must not forget that
    /// the rest up to its `read_to` was handled too.
    pub fn checkpoint(&self, side: Side) -> Option<Resume> {
        let clock = &self.clocks[side.idx()];
        let read_to = clock
            .position?
            .max(clock.resumed_read_to.unwrap_or(i64::MIN));
        Some(Resume {
            emitted_until: self.emitted_until,
            read_to,
        })
    }
}

fn column<'a>(
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
    use arrow::array::{Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    const MIN: i64 = 60_000;

    fn spec() -> WindowSpec {
        WindowSpec {
            size_ms: 10 * MIN,
            out_of_orderness_ms: 30_000,
            max_response_delay_ms: 2 * MIN,
            idle_timeout: Duration::from_secs(3600),
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
        let now = Instant::now();
        let mut pw = PartitionWindows::new(0, spec(), now);
        pw.ingest(Side::Requests, &batch(&[(MIN, 0), (9 * MIN, 1)]))
            .unwrap();
        pw.ingest(Side::Responses, &batch(&[(MIN + 500, 0), (11 * MIN, 1)]))
            .unwrap();
        // Requests reach 10m30s: request watermark = 10m, response side only 10.5m.
        pw.ingest(Side::Requests, &batch(&[(10 * MIN + 30_000, 2)]))
            .unwrap();
        assert!(
            pw.close_ready(now, false).is_empty(),
            "responses up to 12m not yet seen"
        );
        pw.ingest(Side::Responses, &batch(&[(12 * MIN + 30_000, 2)]))
            .unwrap();
        let closed = pw.close_ready(now, false);
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].start, closed[0].end), (0, 10 * MIN));
        assert_eq!(rows(&closed[0], Side::Requests), 2);
        // Its own response pane plus the next pane's responses.
        assert_eq!(rows(&closed[0], Side::Responses), 3);
        assert_eq!(pw.emitted_until(), 10 * MIN);
    }

    #[test]
    fn commit_offset_holds_back_to_oldest_open_row() {
        let now = Instant::now();
        let mut pw = PartitionWindows::new(0, spec(), now);
        pw.ingest(
            Side::Requests,
            &batch(&[(MIN, 5), (11 * MIN, 6), (2 * MIN, 7)]),
        )
        .unwrap();
        pw.advance_position(Side::Requests, 8, now);
        assert_eq!(pw.commit_offset(Side::Requests), Some(5));
        pw.ingest(Side::Requests, &batch(&[(25 * MIN, 8)])).unwrap();
        pw.advance_position(Side::Requests, 9, now);
        pw.ingest(Side::Responses, &batch(&[(25 * MIN, 3)]))
            .unwrap();
        pw.advance_position(Side::Responses, 4, now);
        let closed = pw.close_ready(now, false);
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
                read_to: 9
            }
        );
    }

    #[test]
    fn late_rows_are_reported_not_placed() {
        let now = Instant::now();
        let mut pw = PartitionWindows::new(0, spec(), now);
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
        let now = Instant::now();
        let mut pw = PartitionWindows::new(0, spec(), now);
        pw.resume(
            Side::Requests,
            Resume {
                emitted_until: 10 * MIN,
                read_to: 100,
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
        let now = Instant::now();
        let mut pw = PartitionWindows::new(0, spec(), now);
        pw.resume(
            Side::Requests,
            Resume {
                emitted_until: 10 * MIN,
                read_to: 100,
            },
        );
        pw.ingest(Side::Requests, &batch(&[(9 * MIN, 90), (11 * MIN, 91)]))
            .unwrap();
        pw.advance_position(Side::Requests, 92, now);
        assert_eq!(
            pw.checkpoint(Side::Requests),
            Some(Resume {
                emitted_until: 10 * MIN,
                read_to: 100
            })
        );
        pw.advance_position(Side::Requests, 120, now);
        assert_eq!(pw.checkpoint(Side::Requests).unwrap().read_to, 120);
    }

    #[test]
    fn idle_response_side_stops_holding_windows_open() {
        let now = Instant::now();
        let mut s = spec();
        s.idle_timeout = Duration::from_secs(5);
        let mut pw = PartitionWindows::new(0, s, now);
        pw.ingest(Side::Requests, &batch(&[(MIN, 0), (15 * MIN, 1)]))
            .unwrap();
        pw.advance_position(Side::Requests, 2, now + Duration::from_secs(10));
        assert!(pw
            .close_ready(now + Duration::from_secs(1), false)
            .is_empty());
        // Silent, but with records waiting: slow, not idle.
        assert!(pw
            .close_ready(now + Duration::from_secs(10), false)
            .is_empty());
        pw.set_caught_up(Side::Responses, true);
        let closed = pw.close_ready(now + Duration::from_secs(10), false);
        assert_eq!(closed.len(), 1);
    }

    #[test]
    fn out_of_order_rows_are_counted_per_side() {
        let now = Instant::now();
        let mut pw = PartitionWindows::new(0, spec(), now);
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
        let now = Instant::now();
        let mut pw = PartitionWindows::new(0, spec(), now);
        pw.ingest(Side::Requests, &batch(&[(MIN, 0), (11 * MIN, 1)]))
            .unwrap();
        pw.ingest(Side::Responses, &batch(&[(2 * MIN, 0), (10 * MIN + 1, 1)]))
            .unwrap();
        let first = pw.close_next(now, true).unwrap();
        assert_eq!((first.start, first.own_responses), (0, 1));
        assert_eq!(
            rows(&first, Side::Responses),
            2,
            "own pane plus the next one's"
        );
        pw.note_matched(first.end, vec!["r1".into()]);
        let second = pw.close_next(now, true).unwrap();
        assert_eq!(second.start, 10 * MIN);
        assert!(second.matched_by_previous.contains("r1"));
        assert!(pw.close_next(now, true).is_none());
    }

    #[test]
    fn flush_closes_everything() {
        let now = Instant::now();
        let mut pw = PartitionWindows::new(0, spec(), now);
        pw.ingest(Side::Requests, &batch(&[(MIN, 0), (15 * MIN, 1)]))
            .unwrap();
        assert_eq!(pw.close_ready(now, true).len(), 2);
        assert_eq!(pw.open_windows(), 0);
    }
}
