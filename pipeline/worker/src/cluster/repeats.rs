//! Member rows a features partition shows twice.
//!
//! The account stage emits a member row once, at its window's first
//! emission, in the transaction that also carries its mark, so on Apache
//! Kafka a `read_committed` reader never sees one twice. A broker that
//! shows aborted records (nisshi does, see
//! integration-tests/tests/broker_behaviour.rs) shows the rows of a
//! transaction that was open when its worker died, and the next owner of
//! that input partition emits them again. Adding both would count the
//! member twice (its requests, its per-minute series), so the cluster
//! record would depend on when a worker died.
//!
//! Two rules drop the second copy, both exact and both no-ops on a broker
//! that hides aborted records:
//!
//! - An upstream partition's mark `through = t` follows every row of the
//!   windows it emitted up to `t` (one producer, in order), so a row of
//!   that upstream whose window ends at or before a mark already read is
//!   a repeat.
//! - Rows after an upstream's last mark are remembered by identity
//!   (window end, account, key kind: an account has one key per kind and
//!   window) until the next mark, so a repeat of an unfinished cycle is
//!   seen too. That memory is one upstream cycle's rows, not a window's.
//!
//! A new owner of the features partition starts with nothing
//! remembered, re-reading from the oldest row an open window holds: a
//! row read before that offset is in windows already emitted, so a repeat
//! of it is skipped as a row after close, and the original of any other
//! repeat is read again before it.

use std::collections::{BTreeMap, BTreeSet};

use super::keys::MemberRow;

#[derive(Debug, Clone, Default)]
pub struct Repeats {
    /// Latest `through` read from each upstream partition.
    marks: BTreeMap<i32, i64>,
    /// Rows read from each upstream since its latest mark.
    pending: BTreeMap<i32, BTreeSet<(i64, String, String)>>,
}

impl Repeats {
    /// A mark of `upstream` read.
    pub fn mark(&mut self, upstream: i32, through: i64) {
        let m = self.marks.entry(upstream).or_insert(i64::MIN);
        *m = (*m).max(through);
        if let Some(rows) = self.pending.get_mut(&upstream) {
            let later = rows.split_off(&(through.saturating_add(1), String::new(), String::new()));
            *rows = later;
        }
    }

    /// Whether `row` of `upstream` was read before; remembers it if not.
    pub fn is_repeat(&mut self, upstream: i32, row: &MemberRow) -> bool {
        if self
            .marks
            .get(&upstream)
            .is_some_and(|t| row.window_end <= *t)
        {
            return true;
        }
        !self.pending.entry(upstream).or_default().insert((
            row.window_end,
            row.account_id.clone(),
            row.kind.clone(),
        ))
    }

    /// Rows remembered since their upstream's latest mark.
    pub fn pending_rows(&self) -> usize {
        self.pending.values().map(BTreeSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(account: &str, kind: &str, end: i64) -> MemberRow {
        MemberRow {
            kind: kind.into(),
            key: format!("{kind}-key"),
            account_id: account.into(),
            window_start: end - 600_000,
            window_end: end,
            requests: 3,
            output_tokens: 0,
            minute_counts: vec![],
            templates: vec![],
            tool_requests: 0,
            tool_schemas: vec![],
            account_age_days: None,
            signup_day: None,
            signup_channel: None,
            verified: false,
            own_score: 0.0,
        }
    }

    /// One features partition's records: `Some(row)` or a mark.
    enum Rec {
        /// Upstream, account, key kind, window end.
        Row(i32, &'static str, &'static str, i64),
        Mark(i32, i64),
    }

    /// Offsets of the rows `r` accepts, reading `recs` from `from`.
    fn accepted(r: &mut Repeats, recs: &[Rec]) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, rec) in recs.iter().enumerate() {
            match rec {
                Rec::Row(u, account, kind, end) => {
                    if !r.is_repeat(*u, &row(account, kind, *end)) {
                        out.push(i);
                    }
                }
                Rec::Mark(u, t) => r.mark(*u, *t),
            }
        }
        out
    }

    /// A worker of upstream 0 died with part of its cycle visible; the
    /// next owner emitted the cycle again (and upstream 1 interleaved).
    fn died_mid_cycle() -> Vec<Rec> {
        use Rec::*;
        vec![
            Row(0, "a", "ip", 600_000),
            Row(0, "a", "payment", 600_000),
            Mark(0, 600_000),
            // The dead worker's unfinished cycle: two of its three rows.
            Row(0, "b", "ip", 1_200_000),
            Row(1, "x", "ip", 1_200_000),
            Row(0, "c", "ip", 1_200_000),
            Mark(1, 1_200_000),
            // The next owner: the whole cycle again, then its mark.
            Row(0, "b", "ip", 1_200_000),
            Row(0, "c", "ip", 1_200_000),
            Row(0, "d", "ip", 1_200_000),
            Mark(0, 1_200_000),
            Row(0, "e", "ip", 1_800_000),
        ]
    }

    #[test]
    fn an_unfinished_cycle_emitted_again_is_counted_once() {
        let recs = died_mid_cycle();
        let mut r = Repeats::default();
        assert_eq!(accepted(&mut r, &recs), vec![0, 1, 3, 4, 5, 9, 11]);
        assert_eq!(r.pending_rows(), 1, "only e waits for a mark");
    }

    #[test]
    fn rows_of_windows_an_upstream_already_marked_are_repeats() {
        use Rec::*;
        // The dead worker's whole transaction was visible, mark included;
        // the next owner started from its previous checkpoint.
        let recs = vec![
            Row(0, "a", "ip", 600_000),
            Row(0, "b", "ip", 1_200_000),
            Mark(0, 1_200_000),
            Row(0, "a", "ip", 600_000),
            Row(0, "b", "ip", 1_200_000),
            Row(0, "c", "ip", 1_800_000),
            Mark(0, 1_800_000),
        ];
        let mut r = Repeats::default();
        assert_eq!(accepted(&mut r, &recs), vec![0, 1, 5]);
    }
}
