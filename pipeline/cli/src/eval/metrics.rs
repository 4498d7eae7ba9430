//! Detection quality from labelled accounts and their scores.
//!
//! Pure functions over the ground truth and the decoded `RiskScore` records,
//! so every number in the report is unit-tested on small hand-made cases.
//!
//! Definitions (also in `docs/DETECTION.md`):
//! - an account is **flagged** at a level when some window scored it at that
//!   level or above;
//! - **recall** of a style: flagged accounts / accounts of that style in the
//!   truth (accounts never scored count as not flagged);
//! - a **campaign is detected** when at least one of its accounts is flagged;
//! - **time to detect**: from the account's first request (event time) to the
//!   end of its first flagged window, the earliest event time at which that
//!   score can exist (windows are emitted when they close). Median and p90
//!   use the nearest-rank method over the flagged accounts;
//! - **false positives per 1,000** of a benign population: flagged accounts
//!   × 1,000 / accounts;
//! - **precision**: flagged campaign accounts / all flagged labelled accounts.
//!   Scored accounts missing from the truth are reported apart, not counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use distill_watch_traffic::TruthRow;

/// Risk levels in order; the score records name them.
pub const LEVELS: [&str; 4] = ["low", "elevated", "high", "critical"];

pub fn level_rank(level: &str) -> Option<usize> {
    LEVELS.iter().position(|l| *l == level)
}

/// The fields of a `RiskScore` the evaluation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    pub account_id: String,
    pub window_start: i64,
    pub window_end: i64,
    pub score: f64,
    pub level: String,
    /// (feature, value, contribution), largest contribution first.
    pub reasons: Vec<(String, f64, f64)>,
    /// Requests of the account in the window (own scores; a member score
    /// carries the member's requests in the cluster window).
    pub event_count: i64,
    /// A member score (it names a cluster).
    pub member: bool,
}

/// One account's scores, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSummary {
    pub windows: usize,
    pub max_score: f64,
    /// The score row with the highest score (ties: see `tie_first`).
    pub top: ScoreRow,
    /// Earliest window start scored (a fallback for the first request).
    pub first_window_start: i64,
    /// End of the first window at each level or above, by level rank.
    pub first_end_at: [Option<i64>; 4],
    /// Windows at each level or above, by level rank.
    pub windows_at: [usize; 4],
    /// Requests over the account's own scores, and the distinct UTC hours
    /// they fell in: its rate when active.
    pub requests: i64,
    pub active_hours: BTreeSet<i64>,
}

impl AccountSummary {
    /// Requests per active hour.
    pub fn rate_per_hour(&self) -> Option<f64> {
        (!self.active_hours.is_empty())
            .then(|| self.requests as f64 / self.active_hours.len() as f64)
    }
}

/// Between two rows of equal score, whether `a` is the one to report: the
/// earliest window, then the account's own score before a member score,
/// then the reasons in order, so the choice never depends on the order in
/// which a consumer read the topic's partitions.
fn tie_first(a: &ScoreRow, b: &ScoreRow) -> bool {
    let reasons = |r: &ScoreRow| format!("{:?}", r.reasons);
    (a.window_start, a.member)
        .cmp(&(b.window_start, b.member))
        .then_with(|| reasons(a).cmp(&reasons(b)))
        .is_lt()
}

/// Per-account summaries of a set of scores.
pub fn summarise(scores: &[ScoreRow]) -> BTreeMap<String, AccountSummary> {
    let mut out: BTreeMap<String, AccountSummary> = BTreeMap::new();
    for s in scores {
        let rank = level_rank(&s.level).unwrap_or(0);
        let e = out
            .entry(s.account_id.clone())
            .or_insert_with(|| AccountSummary {
                windows: 0,
                max_score: f64::NEG_INFINITY,
                top: s.clone(),
                first_window_start: s.window_start,
                first_end_at: [None; 4],
                windows_at: [0; 4],
                requests: 0,
                active_hours: BTreeSet::new(),
            });
        e.windows += 1;
        if !s.member && s.event_count > 0 {
            e.requests += s.event_count;
            e.active_hours.insert(s.window_start.div_euclid(3_600_000));
        }
        if s.score > e.max_score || (s.score == e.max_score && tie_first(s, &e.top)) {
            e.max_score = s.score;
            e.top = s.clone();
        }
        e.first_window_start = e.first_window_start.min(s.window_start);
        for r in 0..=rank {
            e.windows_at[r] += 1;
            let f = &mut e.first_end_at[r];
            *f = Some(f.map_or(s.window_end, |x| x.min(s.window_end)));
        }
    }
    out
}

/// Nearest-rank quantile of sorted values (`q` in (0, 1]).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Quality at one level for one attack style.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StyleQuality {
    pub flagged: usize,
    pub recall: f64,
    pub campaigns_detected: usize,
    /// Campaigns with more than half of their accounts flagged: how a
    /// hydra (thousands of accounts, each of little weight) is judged.
    pub campaigns_mostly_flagged: usize,
    /// Time to detect in minutes, over flagged accounts with a valid time.
    pub ttd_median_min: Option<f64>,
    pub ttd_p90_min: Option<f64>,
    /// All valid times to detect (minutes), sorted, for plots.
    #[serde(skip)]
    pub ttd_min: Vec<f64>,
    /// Flagged accounts whose first flagged window ended at or before their
    /// first request: impossible, so the truth or the scores are wrong.
    pub impossible: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StyleRow {
    pub style: String,
    pub accounts: usize,
    pub campaigns: usize,
    /// Median over its accounts of requests per active hour.
    pub rate_per_hour: Option<f64>,
    /// `high-rate` (at least [`HIGH_RATE_PER_HOUR`]) or `low-and-slow`.
    pub class: String,
    pub high: StyleQuality,
    pub elevated: StyleQuality,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PopulationRow {
    pub population: String,
    pub accounts: usize,
    pub flagged_high: usize,
    pub fp_per_1000_high: f64,
    pub flagged_elevated: usize,
    pub fp_per_1000_elevated: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overall {
    pub campaign_accounts: usize,
    pub benign_accounts: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    /// None when nothing was flagged.
    pub precision: Option<f64>,
    pub recall: f64,
}

/// Scored accounts that the truth does not list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unlabelled {
    pub accounts: usize,
    pub flagged_high: usize,
}

/// One point of the precision/recall curve over a score threshold applied
/// to each account's highest score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    pub threshold: f64,
    pub precision: Option<f64>,
    pub recall: f64,
    pub flagged: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quality {
    pub styles: Vec<StyleRow>,
    pub populations: Vec<PopulationRow>,
    pub high: Overall,
    pub elevated: Overall,
    pub unlabelled: Unlabelled,
    pub curve: Vec<CurvePoint>,
    /// Highest score per account, by group (style or population), for plots.
    #[serde(skip)]
    pub max_scores: Vec<(String, bool, Vec<f64>)>,
}

const HIGH: usize = 2;
const ELEVATED: usize = 1;

/// A style whose accounts send at least this many requests per active hour
/// (one a minute) is high-rate: detection is expected within minutes.
/// Below it, low-and-slow: within hours.
pub const HIGH_RATE_PER_HOUR: f64 = 60.0;

/// Compute every figure of the report.
pub fn evaluate(truth: &[TruthRow], scores: &BTreeMap<String, AccountSummary>) -> Quality {
    let labelled: BTreeSet<&str> = truth.iter().map(|t| t.account_id.as_str()).collect();
    let mut by_group: BTreeMap<(bool, &str), Vec<&TruthRow>> = BTreeMap::new();
    for t in truth {
        by_group
            .entry((t.label.is_campaign(), t.label.group.as_str()))
            .or_default()
            .push(t);
    }
    let flagged_at = |t: &TruthRow, rank: usize| {
        scores
            .get(&t.account_id)
            .is_some_and(|s| s.first_end_at[rank].is_some())
    };
    let style_quality = |rows: &[&TruthRow], rank: usize| {
        let mut flagged = 0;
        let mut detected: BTreeSet<&str> = BTreeSet::new();
        let mut per_campaign: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for t in rows {
            if let Some(c) = &t.label.campaign {
                let e = per_campaign.entry(c.as_str()).or_default();
                e.1 += 1;
                if flagged_at(t, rank) {
                    e.0 += 1;
                }
            }
        }
        let mut ttd = Vec::new();
        let mut impossible = 0;
        for t in rows {
            let Some(s) = scores.get(&t.account_id) else {
                continue;
            };
            let Some(end) = s.first_end_at[rank] else {
                continue;
            };
            flagged += 1;
            if let Some(c) = &t.label.campaign {
                detected.insert(c);
            }
            let first = t.first_request_ms.unwrap_or(s.first_window_start);
            if end <= first {
                impossible += 1;
            } else {
                ttd.push((end - first) as f64 / 60_000.0);
            }
        }
        ttd.sort_by(f64::total_cmp);
        StyleQuality {
            flagged,
            recall: ratio(flagged, rows.len()).unwrap_or(0.0),
            campaigns_detected: detected.len(),
            campaigns_mostly_flagged: per_campaign.values().filter(|(f, n)| 2 * f > *n).count(),
            ttd_median_min: quantile(&ttd, 0.5),
            ttd_p90_min: quantile(&ttd, 0.9),
            ttd_min: ttd,
            impossible,
        }
    };
    let mut styles = Vec::new();
    let mut populations = Vec::new();
    let mut max_scores = Vec::new();
    for ((campaign, group), rows) in &by_group {
        let maxes: Vec<f64> = rows
            .iter()
            .map(|t| scores.get(&t.account_id).map_or(0.0, |s| s.max_score))
            .collect();
        max_scores.push((group.to_string(), *campaign, maxes));
        if *campaign {
            let campaigns: BTreeSet<&str> = rows
                .iter()
                .filter_map(|t| t.label.campaign.as_deref())
                .collect();
            let mut rates: Vec<f64> = rows
                .iter()
                .filter_map(|t| scores.get(&t.account_id)?.rate_per_hour())
                .collect();
            rates.sort_by(f64::total_cmp);
            let rate_per_hour = quantile(&rates, 0.5);
            styles.push(StyleRow {
                style: group.to_string(),
                accounts: rows.len(),
                campaigns: campaigns.len(),
                rate_per_hour,
                class: if rate_per_hour.is_some_and(|r| r >= HIGH_RATE_PER_HOUR) {
                    "high-rate"
                } else {
                    "low-and-slow"
                }
                .to_string(),
                high: style_quality(rows, HIGH),
                elevated: style_quality(rows, ELEVATED),
            });
        } else {
            let fh = rows.iter().filter(|t| flagged_at(t, HIGH)).count();
            let fe = rows.iter().filter(|t| flagged_at(t, ELEVATED)).count();
            populations.push(PopulationRow {
                population: group.to_string(),
                accounts: rows.len(),
                flagged_high: fh,
                fp_per_1000_high: per_1000(fh, rows.len()),
                flagged_elevated: fe,
                fp_per_1000_elevated: per_1000(fe, rows.len()),
            });
        }
    }
    let overall = |rank: usize| {
        let campaign_accounts = truth.iter().filter(|t| t.label.is_campaign()).count();
        let tp = truth
            .iter()
            .filter(|t| t.label.is_campaign() && flagged_at(t, rank))
            .count();
        let fp = truth
            .iter()
            .filter(|t| !t.label.is_campaign() && flagged_at(t, rank))
            .count();
        Overall {
            campaign_accounts,
            benign_accounts: truth.len() - campaign_accounts,
            true_positives: tp,
            false_positives: fp,
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, campaign_accounts).unwrap_or(0.0),
        }
    };
    let unlabelled: Vec<&AccountSummary> = scores
        .iter()
        .filter(|(a, _)| !labelled.contains(a.as_str()))
        .map(|(_, s)| s)
        .collect();
    Quality {
        styles,
        populations,
        high: overall(HIGH),
        elevated: overall(ELEVATED),
        unlabelled: Unlabelled {
            accounts: unlabelled.len(),
            flagged_high: unlabelled
                .iter()
                .filter(|s| s.first_end_at[HIGH].is_some())
                .count(),
        },
        curve: curve(truth, scores),
        max_scores,
    }
}

/// Precision and recall if an account were flagged when its highest score
/// reaches each threshold in 0.00, 0.01, ..., 1.00.
pub fn curve(truth: &[TruthRow], scores: &BTreeMap<String, AccountSummary>) -> Vec<CurvePoint> {
    let max: HashMap<&str, f64> = truth
        .iter()
        .map(|t| {
            (
                t.account_id.as_str(),
                scores
                    .get(&t.account_id)
                    .map_or(f64::NEG_INFINITY, |s| s.max_score),
            )
        })
        .collect();
    let positives = truth.iter().filter(|t| t.label.is_campaign()).count();
    (0..=100)
        .map(|i| {
            let threshold = i as f64 / 100.0;
            let (mut tp, mut fp) = (0, 0);
            for t in truth {
                if max[t.account_id.as_str()] >= threshold {
                    if t.label.is_campaign() {
                        tp += 1;
                    } else {
                        fp += 1;
                    }
                }
            }
            CurvePoint {
                threshold,
                precision: ratio(tp, tp + fp),
                recall: ratio(tp, positives).unwrap_or(0.0),
                flagged: tp + fp,
            }
        })
        .collect()
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn per_1000(a: usize, b: usize) -> f64 {
    ratio(a, b).unwrap_or(0.0) * 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use distill_watch_traffic::Label;

    const MIN: i64 = 60_000;

    fn truth(id: &str, label: Label, first: Option<i64>) -> TruthRow {
        TruthRow {
            account_id: id.into(),
            label,
            first_request_ms: first,
        }
    }

    fn score(id: &str, start_min: i64, score: f64, level: &str) -> ScoreRow {
        ScoreRow {
            account_id: id.into(),
            window_start: start_min * MIN,
            window_end: (start_min + 10) * MIN,
            score,
            level: level.into(),
            reasons: Vec::new(),
            event_count: 3,
            member: false,
        }
    }

    #[test]
    fn the_top_row_among_equal_scores_does_not_depend_on_reading_order() {
        let member = |cluster: &str, value: f64| ScoreRow {
            member: true,
            reasons: vec![(format!("cluster.members@{cluster}"), value, 0.15)],
            ..score("a", 60, 1.0, "critical")
        };
        let rows = vec![
            member("ip_prefix:1", 50.0),
            member("payment:2", 150.0),
            score("a", 60, 1.0, "critical"),
            member("org:3", 55.0),
            score("a", 70, 1.0, "critical"),
        ];
        let mut reversed = rows.clone();
        reversed.reverse();
        let (x, y) = (summarise(&rows), summarise(&reversed));
        assert_eq!(x["a"].top, y["a"].top);
        // The earliest window, the account's own score first.
        assert!(!x["a"].top.member && x["a"].top.window_start == 60 * MIN);
        let members: Vec<ScoreRow> = rows.iter().filter(|r| r.member).cloned().collect();
        let mut shuffled = members.clone();
        shuffled.rotate_left(1);
        assert_eq!(summarise(&members)["a"].top, summarise(&shuffled)["a"].top);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7.0], 0.9), Some(7.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.9), Some(4.0));
        // Ties: equal values are counted, not merged.
        assert_eq!(quantile(&[5.0, 5.0, 5.0, 9.0], 0.5), Some(5.0));
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&ten, 0.9), Some(9.0));
    }

    #[test]
    fn first_flag_is_the_earliest_window_at_or_above_the_level() {
        let s = summarise(&[
            score("a", 30, 0.9, "critical"),
            score("a", 10, 0.65, "high"),
            score("a", 0, 0.4, "elevated"),
            score("a", 20, 0.9, "critical"),
        ]);
        let a = &s["a"];
        assert_eq!(a.windows, 4);
        assert_eq!(a.first_end_at[ELEVATED], Some(10 * MIN));
        assert_eq!(a.first_end_at[HIGH], Some(20 * MIN));
        assert_eq!(a.first_end_at[3], Some(30 * MIN));
        assert_eq!(a.windows_at, [4, 4, 3, 2]);
        // Ties on the highest score keep the earliest window.
        assert_eq!(a.top.window_start, 20 * MIN);
        assert_eq!(a.max_score, 0.9);
    }

    #[test]
    fn recall_campaigns_ttd_and_false_positives() {
        let t = vec![
            truth("h1", Label::campaign("hydra", "c1"), Some(2 * MIN)),
            truth("h2", Label::campaign("hydra", "c1"), Some(5 * MIN)),
            truth("h3", Label::campaign("hydra", "c2"), Some(0)),
            // Never scored at all: counts as missed.
            truth("h4", Label::campaign("hydra", "c3"), Some(0)),
            truth("b1", Label::benign("chat"), Some(0)),
            truth("b2", Label::benign("chat"), Some(0)),
            truth("e1", Label::benign("enterprise"), None),
        ];
        let s = summarise(&[
            score("h1", 0, 0.7, "high"),
            score("h2", 0, 0.5, "elevated"),
            score("h2", 40, 0.8, "critical"),
            score("h3", 0, 0.1, "low"),
            score("b1", 0, 0.61, "high"),
            score("b2", 0, 0.35, "elevated"),
            score("e1", 20, 0.2, "low"),
            score("stranger", 0, 0.9, "critical"),
        ]);
        let q = evaluate(&t, &s);
        let hydra = q.styles.iter().find(|r| r.style == "hydra").unwrap();
        assert_eq!((hydra.accounts, hydra.campaigns), (4, 3));
        assert_eq!(hydra.high.flagged, 2);
        assert_eq!(hydra.high.recall, 0.5);
        assert_eq!(hydra.high.campaigns_detected, 1);
        // h1: window ends at 10m, first request at 2m -> 8m; h2: 50m - 5m = 45m.
        assert_eq!(hydra.high.ttd_min, vec![8.0, 45.0]);
        assert_eq!(hydra.high.ttd_median_min, Some(8.0));
        assert_eq!(hydra.high.ttd_p90_min, Some(45.0));
        assert_eq!(hydra.elevated.flagged, 2);
        assert_eq!(hydra.elevated.ttd_min, vec![5.0, 8.0]);

        let chat = q
            .populations
            .iter()
            .find(|r| r.population == "chat")
            .unwrap();
        assert_eq!((chat.flagged_high, chat.flagged_elevated), (1, 2));
        assert_eq!(chat.fp_per_1000_high, 500.0);
        let ent = q
            .populations
            .iter()
            .find(|r| r.population == "enterprise")
            .unwrap();
        assert_eq!((ent.flagged_high, ent.fp_per_1000_elevated), (0, 0.0));

        assert_eq!((q.high.true_positives, q.high.false_positives), (2, 1));
        assert_eq!(q.high.precision, Some(2.0 / 3.0));
        assert_eq!(q.high.recall, 0.5);
        assert_eq!(
            (q.elevated.true_positives, q.elevated.false_positives),
            (2, 2)
        );
        assert_eq!(q.unlabelled.accounts, 1);
        assert_eq!(q.unlabelled.flagged_high, 1);
    }

    #[test]
    fn nothing_flagged_has_no_precision_and_no_times() {
        let t = vec![
            truth("c", Label::campaign("logit", "l1"), Some(0)),
            truth("b", Label::benign("chat"), Some(0)),
        ];
        let q = evaluate(&t, &summarise(&[score("c", 0, 0.2, "low")]));
        assert_eq!(q.high.precision, None);
        assert_eq!(q.high.recall, 0.0);
        let logit = &q.styles[0];
        assert_eq!(logit.high.ttd_median_min, None);
        assert_eq!(logit.high.campaigns_detected, 0);
    }

    #[test]
    fn a_flag_before_the_first_request_is_impossible_and_excluded_from_times() {
        let t = vec![
            // Truth says the first request came after the flagged window ended.
            truth("c", Label::campaign("cot", "k"), Some(30 * MIN)),
            // Exactly at the window's end: still impossible (the window
            // holds requests before its end only).
            truth("d", Label::campaign("cot", "k"), Some(10 * MIN)),
            // No first request in the truth: the first scored window stands in.
            truth("e", Label::campaign("cot", "k"), None),
        ];
        let q = evaluate(
            &t,
            &summarise(&[
                score("c", 0, 0.7, "high"),
                score("d", 0, 0.7, "high"),
                score("e", 20, 0.1, "low"),
                score("e", 30, 0.7, "high"),
            ]),
        );
        let cot = &q.styles[0];
        assert_eq!(cot.high.flagged, 3);
        assert_eq!(cot.high.impossible, 2);
        // e: first window starts at 20m, flagged window ends at 40m.
        assert_eq!(cot.high.ttd_min, vec![20.0]);
    }

    #[test]
    fn the_curve_counts_accounts_at_or_above_each_threshold() {
        let t = vec![
            truth("c1", Label::campaign("x", "k"), None),
            truth("c2", Label::campaign("x", "k"), None),
            truth("b1", Label::benign("p"), None),
        ];
        let s = summarise(&[
            score("c1", 0, 0.5, "elevated"),
            score("c2", 0, 0.9, "critical"),
            score("b1", 0, 0.5, "elevated"),
        ]);
        let c = curve(&t, &s);
        assert_eq!(c.len(), 101);
        let at = |x: f64| c.iter().find(|p| (p.threshold - x).abs() < 1e-9).unwrap();
        assert_eq!((at(0.5).flagged, at(0.5).recall), (3, 1.0));
        assert_eq!(at(0.5).precision, Some(2.0 / 3.0));
        assert_eq!((at(0.51).flagged, at(0.51).precision), (1, Some(1.0)));
        assert_eq!(at(0.95).precision, None);
        // Accounts never scored are below every threshold, 0 included.
        let t2 = vec![truth("z", Label::campaign("x", "k"), None)];
        assert_eq!(curve(&t2, &BTreeMap::new())[0].recall, 0.0);
    }
}
