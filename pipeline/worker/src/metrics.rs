//! Counters of what the worker did. Every message consumed ends up in exactly
//! one of: a row of some window, a DLQ record (by reason), or "already
//! handled" (re-read after a restart, its window was emitted before).
//!
//! The stream's imperfections are counted too, so an operator can see them:
//! events out of order (older than the newest seen on their partition),
//! duplicate deliveries (dropped before the jobs), requests whose response
//! never came within `max_response_delay`, responses that answer no request
//! (request lost or late, or the response too slow), events of accounts
//! without an account record, and account versions read.

use std::collections::BTreeMap;
use std::fmt;

use crate::decode::RejectKind;
use crate::process::WindowResult;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub requests_consumed: u64,
    pub responses_consumed: u64,
    pub accounts_in_table: u64,
    /// Account versions in the table (accounts plus their updates).
    pub account_versions: u64,
    pub rejected: BTreeMap<RejectKind, u64>,
    pub already_handled: u64,
    /// Events late for an emitted window but within its lateness: taken
    /// into a revision of its scores instead of the DLQ.
    pub late_revising: u64,
    pub windows_closed: u64,
    pub scores_emitted: u64,
    /// Of `scores_emitted`, revisions (revision > 0) of an earlier window's
    /// scores.
    pub scores_revised: u64,
    pub scores_by_level: BTreeMap<&'static str, u64>,
    pub requests_scored: u64,
    pub requests_without_response: u64,
    pub events_unknown_account: u64,
    pub duplicate_requests: u64,
    pub duplicate_responses: u64,
    pub unmatched_responses: u64,
    pub out_of_order_requests: u64,
    pub out_of_order_responses: u64,
    pub commits: u64,
    /// Times partitions were paused because open windows held more rows
    /// than `[worker] max_buffered_rows`.
    pub pauses: u64,
}

impl Metrics {
    /// Count an emitted window and its scores (all of them delivered).
    pub fn count_window(&mut self, r: &WindowResult) {
        if !r.boundary_only {
            self.windows_closed += 1;
        }
        self.scores_emitted += r.scores.len() as u64;
        self.scores_revised += r.revised;
        self.requests_scored += r.requests;
        self.requests_without_response += r.without_response;
        self.events_unknown_account += r.unknown_account;
        self.duplicate_requests += r.duplicates;
        self.duplicate_responses += r.duplicate_responses;
        self.unmatched_responses += r.unmatched_responses;
        for s in &r.scores {
            *self.scores_by_level.entry(s.level.as_str()).or_default() += 1;
        }
    }

    pub fn reject(&mut self, kind: RejectKind) {
        *self.rejected.entry(kind).or_default() += 1;
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn dlq_count(&self, kind: RejectKind) -> u64 {
        self.rejected.get(&kind).copied().unwrap_or(0)
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "consumed requests={} responses={} (out of order: requests={} responses={}); accounts in table={} (versions={}); windows closed={}; scores={} (",
            self.requests_consumed,
            self.responses_consumed,
            self.out_of_order_requests,
            self.out_of_order_responses,
            self.accounts_in_table,
            self.account_versions,
            self.windows_closed,
            self.scores_emitted
        )?;
        let levels: Vec<String> = self
            .scores_by_level
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        write!(f, "{}", levels.join(" "))?;
        write!(
            f,
            "); requests scored={} (no response={}, unknown account={}, duplicates dropped={}); responses unmatched={} duplicates dropped={}; already handled={}; dlq={}",
            self.requests_scored,
            self.requests_without_response,
            self.events_unknown_account,
            self.duplicate_requests,
            self.unmatched_responses,
            self.duplicate_responses,
            self.already_handled,
            self.rejected_total()
        )?;
        if !self.rejected.is_empty() {
            let r: Vec<String> = self
                .rejected
                .iter()
                .map(|(k, v)| format!("{}={v}", k.as_str()))
                .collect();
            write!(f, " ({})", r.join(" "))?;
        }
        write!(
            f,
            "; late within lateness={} (revised scores={}); commits={} pauses={}",
            self.late_revising, self.scores_revised, self.commits, self.pauses
        )
    }
}

/// Wall-clock time spent in each stage of the worker loop, summed over the
/// run. Kept apart from [`Metrics`], which is a function of the input only:
/// these vary from run to run. `distill-watch bench` prints them.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Avro → Arrow, and the checks of each record.
    pub decode: std::time::Duration,
    /// Placing decoded rows in their windows (watermarks, duplicates, late
    /// events, memory budget).
    pub window: std::time::Duration,
    /// Request ⋈ response and the account table: the `events` table.
    pub join_enrich: std::time::Duration,
    /// Raw jobs over the base window's events.
    pub jobs: std::time::Duration,
    /// Revisions of emitted windows by late events (raw jobs again).
    pub revisions: std::time::Duration,
    /// Roll-up jobs closing at the boundary.
    pub rollups: std::time::Duration,
    /// Merging job outputs and applying the scoring model.
    pub score: std::time::Duration,
    /// Member rows for the cluster stage.
    pub members: std::time::Duration,
    /// Encoding scores and committing cycles to the sink.
    pub sink: std::time::Duration,
    /// Wall time of closing windows, from the join to member rows: those
    /// stages are summed over partition pairs, which score in parallel on
    /// a multi-threaded runtime, so they can add up to more than this.
    pub closing_wall: std::time::Duration,
}

impl StageTimes {
    /// Every stage with its name, in pipeline order.
    pub fn stages(&self) -> [(&'static str, std::time::Duration); 9] {
        [
            ("decode", self.decode),
            ("window", self.window),
            ("join + enrich", self.join_enrich),
            ("raw jobs", self.jobs),
            ("revisions", self.revisions),
            ("roll-ups", self.rollups),
            ("scoring", self.score),
            ("member rows", self.members),
            ("sink", self.sink),
        ]
    }

    pub fn total(&self) -> std::time::Duration {
        self.stages().iter().map(|(_, d)| *d).sum()
    }
}

impl std::ops::AddAssign for StageTimes {
    fn add_assign(&mut self, o: StageTimes) {
        self.decode += o.decode;
        self.window += o.window;
        self.join_enrich += o.join_enrich;
        self.jobs += o.jobs;
        self.revisions += o.revisions;
        self.rollups += o.rollups;
        self.score += o.score;
        self.members += o.members;
        self.sink += o.sink;
        self.closing_wall += o.closing_wall;
    }
}
