//! Streaming faults: how the generated exchanges are delivered.
//!
//! A real gateway does not hand the pipeline a perfectly ordered, complete
//! stream. [`deliver`] decides, per exchange and with its own random stream,
//! at most one fault (so every fault is counted exactly once and the worker's
//! counters can be checked against [`Injected`]):
//!
//! - **reordered**: the request or the response arrives up to `reorder_max`
//!   after its event time, behind newer events, but within the pipeline's
//!   out-of-orderness bound;
//! - **late**: it arrives `late_delay` after its event time, after its window
//!   was emitted (the DLQ's `late_event`);
//! - **duplicate**: it is delivered twice, the copy a few seconds later;
//! - **slow response**: the response finishes after `max_response_delay`, so
//!   the request stays unanswered in its window and the response is unmatched;
//! - **orphan response**: the request event is lost upstream, the response
//!   arrives.
//!
//! [`plan_accounts`] picks accounts updated mid-span and accounts whose record
//! never reaches the accounts topic (their exchanges get no other fault).

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::Rng;

use distill_watch::decode::RejectKind;
use distill_watch::metrics::Metrics;

use crate::dist::{int, pick};
use crate::model::{Account, Req, Resp};
use crate::scenario::Realism;

/// How many of each fault were injected. Compare with the worker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// Exchanges generated (before faults).
    pub exchanges: u64,
    pub reordered_requests: u64,
    pub reordered_responses: u64,
    pub late_requests: u64,
    pub late_responses: u64,
    pub duplicate_requests: u64,
    pub duplicate_responses: u64,
    pub slow_responses: u64,
    pub orphan_responses: u64,
    /// Requests of accounts whose record was never published.
    pub unknown_account_requests: u64,
    pub unknown_accounts: u64,
    /// Accounts given a second version mid-span.
    pub account_updates: u64,
    /// Accounts with a record, and records published (every version of
    /// every such account; populations may add versions of their own).
    pub accounts_published: u64,
    pub account_records: u64,
}

impl Injected {
    /// Requests that reach a window and are scored: delivered once each,
    /// minus the late ones.
    pub fn requests_scored(&self) -> u64 {
        self.exchanges - self.orphan_responses - self.late_requests
    }

    /// Scored requests left without a response: theirs was slow or late.
    pub fn requests_without_response(&self) -> u64 {
        self.slow_responses + self.late_responses
    }

    /// Responses in a window that answer no request there: orphans, slow
    /// ones, and those whose request came too late.
    pub fn unmatched_responses(&self) -> u64 {
        self.orphan_responses + self.slow_responses + self.late_requests
    }

    pub fn late_events(&self) -> u64 {
        self.late_requests + self.late_responses
    }

    /// Each worker counter that must equal what was injected here, as
    /// (what, injected, counted). Out-of-order counts depend on how records
    /// were partitioned and are left to the caller.
    pub fn against(&self, m: &Metrics) -> Vec<(&'static str, u64, u64)> {
        vec![
            (
                "events after their window closed (DLQ late_event, or a revision within lateness)",
                self.late_events(),
                m.dlq_count(RejectKind::LateEvent) + m.late_revising,
            ),
            ("requests scored", self.requests_scored(), m.requests_scored),
            (
                "requests without a response",
                self.requests_without_response(),
                m.requests_without_response,
            ),
            (
                "responses matching no request",
                self.unmatched_responses(),
                m.unmatched_responses,
            ),
            (
                "duplicate requests dropped",
                self.duplicate_requests,
                m.duplicate_requests,
            ),
            (
                "duplicate responses dropped",
                self.duplicate_responses,
                m.duplicate_responses,
            ),
            (
                "requests of accounts without a record",
                self.unknown_account_requests,
                m.events_unknown_account,
            ),
            (
                "accounts read",
                self.accounts_published,
                m.accounts_in_table,
            ),
            (
                "account versions read",
                self.account_records,
                m.account_versions,
            ),
        ]
    }

    /// Every fault, by name, for reports.
    pub fn rows(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("exchanges generated", self.exchanges),
            (
                "requests reordered within the bound",
                self.reordered_requests,
            ),
            (
                "responses reordered within the bound",
                self.reordered_responses,
            ),
            (
                "requests delivered after their window closed",
                self.late_requests,
            ),
            (
                "responses delivered after their window closed",
                self.late_responses,
            ),
            ("requests delivered twice", self.duplicate_requests),
            ("responses delivered twice", self.duplicate_responses),
            (
                "responses slower than max_response_delay",
                self.slow_responses,
            ),
            ("responses whose request was lost", self.orphan_responses),
            ("accounts updated mid-span", self.account_updates),
            ("accounts with no account record", self.unknown_accounts),
            ("requests of those accounts", self.unknown_account_requests),
        ]
    }
}

/// What changes in an account's second version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange {
    /// The organisation passed verification.
    Verified,
    /// A new payment instrument (card replaced, or moved to another card).
    NewCard,
    /// Moved up a tier.
    TierUp,
}

impl AccountChange {
    pub fn apply(self, a: &mut Account, fresh_card: Option<String>) {
        match self {
            AccountChange::Verified => a.verified = true,
            AccountChange::NewCard => {
                if fresh_card.is_some() {
                    a.payment_fingerprint = fresh_card;
                }
            }
            AccountChange::TierUp => {
                a.tier = match a.tier {
                    "free" => "build",
                    "build" => "scale",
                    other => other,
                }
            }
        }
    }
}

/// Accounts picked for updates and for a missing record.
pub struct AccountPlan {
    pub updates: Vec<(String, i64, AccountChange)>,
    pub unknown: Vec<String>,
}

pub fn plan_accounts(
    rng: &mut StdRng,
    realism: &Realism,
    ids: &[String],
    start: i64,
    end: i64,
) -> AccountPlan {
    let mut plan = AccountPlan {
        updates: Vec::new(),
        unknown: Vec::new(),
    };
    if !realism.enabled {
        return plan;
    }
    for id in ids {
        // Both draws happen for every account, so one share does not shift
        // which accounts the other picks.
        let missing = rng.random_bool(realism.unknown_account_share);
        let updated = rng.random_bool(realism.account_update_share);
        let at = int(rng, start + (end - start) / 10, end - (end - start) / 10);
        let change = *pick(
            rng,
            &[
                AccountChange::Verified,
                AccountChange::NewCard,
                AccountChange::TierUp,
            ],
        );
        if missing {
            plan.unknown.push(id.clone());
        } else if updated {
            plan.updates.push((id.clone(), at, change));
        }
    }
    plan
}

/// One delivered copy of event `event` (an index into the exchanges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub event: usize,
    pub deliver_ms: i64,
}

pub struct Delivered {
    /// Request copies in delivery order.
    pub requests: Vec<Delivery>,
    /// Response copies in delivery order.
    pub responses: Vec<Delivery>,
    pub injected: Injected,
}

#[derive(Clone, Copy)]
enum Fault {
    None,
    Orphan,
    Slow,
    Late(bool),
    Duplicate(bool),
    Reorder(bool),
}

/// Decide how each exchange is delivered. `events` must be sorted by request
/// time; slow responses get their new latency written back into it.
pub fn deliver(
    rng: &mut StdRng,
    realism: &Realism,
    events: &mut [(Req, Resp)],
    unknown: &HashSet<&str>,
) -> Delivered {
    let mut inj = Injected {
        exchanges: events.len() as u64,
        ..Injected::default()
    };
    let end = events.iter().map(|(r, _)| r.event_time).max().unwrap_or(0);
    let reorder_max = realism.reorder_max.as_millis() as i64;
    let late_delay = realism.late_delay.as_millis() as i64;
    // A late event must arrive while traffic continues well past it, so that
    // the partition's watermark has certainly passed its window.
    let late_margin = 10 * 60_000;
    let (slow_min, slow_max) = (
        realism.slow_response_min.as_millis() as i64,
        realism.slow_response_max.as_millis() as i64,
    );
    let mut requests = Vec::with_capacity(events.len() + events.len() / 100);
    let mut responses = Vec::with_capacity(events.len() + events.len() / 100);
    for (i, (req, resp)) in events.iter_mut().enumerate() {
        let fault = if !realism.enabled {
            Fault::None
        } else {
            let u: f64 = rng.random();
            let side: bool = rng.random();
            let shares = [
                realism.orphan_response_share,
                realism.slow_response_share,
                realism.late_share,
                realism.duplicate_share,
                realism.reorder_share,
            ];
            let mut acc = 0.0;
            let mut which = shares.len();
            for (k, s) in shares.iter().enumerate() {
                acc += s;
                if u < acc {
                    which = k;
                    break;
                }
            }
            match which {
                0 => Fault::Orphan,
                1 => Fault::Slow,
                2 => Fault::Late(side),
                3 => Fault::Duplicate(side),
                4 => Fault::Reorder(side),
                _ => Fault::None,
            }
        };
        let fault = if unknown.contains(req.account_id.as_str()) {
            inj.unknown_account_requests += 1;
            Fault::None
        } else {
            fault
        };
        let jitter = |rng: &mut StdRng, hi: i64| int(rng, 1_000.min(hi), hi);
        let t_req = req.event_time;
        match fault {
            Fault::Slow => {
                resp.latency_ms = int(rng, slow_min + 1, slow_max);
                inj.slow_responses += 1;
            }
            Fault::Orphan => inj.orphan_responses += 1,
            _ => {}
        }
        let t_resp = resp.event_time(req);
        let mut req_at = vec![t_req];
        let mut resp_at = vec![t_resp];
        match fault {
            Fault::None | Fault::Slow => {}
            Fault::Orphan => req_at.clear(),
            Fault::Late(true) if t_req + late_delay + late_margin < end => {
                req_at[0] = t_req + late_delay;
                inj.late_requests += 1;
            }
            Fault::Late(false) if t_resp + late_delay + late_margin < end => {
                resp_at[0] = t_resp + late_delay;
                inj.late_responses += 1;
            }
            Fault::Late(_) => {}
            Fault::Duplicate(true) => {
                req_at.push(t_req + jitter(rng, reorder_max.min(10_000)));
                inj.duplicate_requests += 1;
            }
            Fault::Duplicate(false) => {
                resp_at.push(t_resp + jitter(rng, reorder_max.min(10_000)));
                inj.duplicate_responses += 1;
            }
            Fault::Reorder(true) => {
                req_at[0] = t_req + jitter(rng, reorder_max);
                inj.reordered_requests += 1;
            }
            Fault::Reorder(false) => {
                resp_at[0] = t_resp + jitter(rng, reorder_max);
                inj.reordered_responses += 1;
            }
        }
        requests.extend(req_at.into_iter().map(|deliver_ms| Delivery {
            event: i,
            deliver_ms,
        }));
        responses.extend(resp_at.into_iter().map(|deliver_ms| Delivery {
            event: i,
            deliver_ms,
        }));
    }
    // Stable sorts on delivery time: ties keep request-time order, which is
    // total (exchanges are sorted by time and id).
    requests.sort_by_key(|d| d.deliver_ms);
    responses.sort_by_key(|d| d.deliver_ms);
    Delivered {
        requests,
        responses,
        injected: inj,
    }
}
