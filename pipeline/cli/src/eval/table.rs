//! The evaluation as text tables for the terminal (`eval` and `demo`).

use std::fmt::Write as _;

use super::metrics::StyleQuality;
use super::report::EvalReport;

/// A duration in minutes as "30s", "45m", "3h10m" or, from two days on,
/// "2d5h".
pub fn minutes(m: f64) -> String {
    if !m.is_finite() || m < 0.0 {
        return "–".to_string();
    }
    let secs = (m * 60.0).round() as u64;
    if secs < 60 {
        return format!("{secs}s");
    }
    let mins = m.round() as u64;
    let (h, r) = (mins / 60, mins % 60);
    match (h, r) {
        (0, _) => format!("{mins}m"),
        (h, _) if h >= 48 => match h % 24 {
            0 => format!("{}d", h / 24),
            rh => format!("{}d{rh}h", h / 24),
        },
        (h, 0) => format!("{h}h"),
        (h, r) => format!("{h}h{r}m"),
    }
}

fn opt_minutes(m: Option<f64>) -> String {
    m.map_or_else(|| "-".to_string(), minutes)
}

fn opt_ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

fn quality_cells(q: &StyleQuality, campaigns: usize) -> String {
    format!(
        "{:>7} {:>6.3} {:>9} {:>8} {:>8}",
        q.flagged,
        q.recall,
        format!("{}/{}", q.campaigns_detected, campaigns),
        opt_minutes(q.ttd_median_min),
        opt_minutes(q.ttd_p90_min)
    )
}

/// Recall below this, or false positives per 1,000 above `FP_GAP`, is a
/// known gap (the acceptance bar of the evaluation issue).
pub const RECALL_GAP: f64 = 0.95;
pub const FP_GAP: f64 = 1.0;
/// Time-to-detect targets (median, minutes of event time).
pub const TTD_HIGH_RATE_MIN: f64 = 15.0;
pub const TTD_LOW_AND_SLOW_MIN: f64 = 360.0;

pub fn render(r: &EvalReport) -> String {
    let mut s = String::new();
    let q = &r.quality;
    let run = &r.run;
    let _ = write!(s, "detection quality");
    if let (Some(name), Some(seed), Some(scale)) = (&run.scenario, run.seed, run.scale) {
        let _ = write!(s, ": scenario {name}, seed {seed}, scale {scale}");
        if let Some(h) = run.span_hours {
            let _ = write!(s, ", {h:.0} h of event time");
        }
    }
    let _ = writeln!(
        s,
        "\n{} campaign and {} benign accounts; {} scores over {} accounts from {}; model {}",
        q.high.campaign_accounts,
        q.high.benign_accounts,
        run.scores,
        run.accounts_scored,
        run.scores_topic,
        if run.model_versions.is_empty() {
            "-".to_string()
        } else {
            run.model_versions.join(", ")
        }
    );
    let _ = writeln!(
        s,
        "flagged = scored at the level or above in some window (high >= {:.2}, elevated >= {:.2}); time to detect = first request -> end of first flagged window\n",
        r.levels.high, r.levels.elevated
    );
    let _ = writeln!(
        s,
        "{:<22} {:>9} {:>8} | {:^43} | {:^43}",
        "attack style", "campaigns", "accounts", "at high", "at elevated"
    );
    let sub = format!(
        "{:>7} {:>6} {:>9} {:>8} {:>8}",
        "flagged", "recall", "campaigns", "TTD p50", "TTD p90"
    );
    let _ = writeln!(s, "{:<22} {:>9} {:>8} | {sub} | {sub}", "", "", "");
    for st in &q.styles {
        let gap = if st.high.recall < RECALL_GAP
            && !(st.style.starts_with("hydra") && st.high.campaigns_mostly_flagged == st.campaigns)
        {
            "  <- gap"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "{:<22} {:>9} {:>8} | {} | {}{gap}",
            st.style,
            st.campaigns,
            st.accounts,
            quality_cells(&st.high, st.campaigns),
            quality_cells(&st.elevated, st.campaigns)
        );
        let impossible = st.high.impossible.max(st.elevated.impossible);
        if impossible > 0 {
            let _ = writeln!(
                s,
                "{:<22} {impossible} flagged before their first request: check the truth's first_request_ms",
                ""
            );
        }
    }
    let _ = writeln!(
        s,
        "\ntargets at high: recall >= {RECALL_GAP} per style (hydra styles: every campaign with most of its accounts flagged); time to detect p50 <= {} for high-rate styles (>= {:.0} requests per active hour), <= {} for low-and-slow",
        minutes(TTD_HIGH_RATE_MIN),
        super::metrics::HIGH_RATE_PER_HOUR,
        minutes(TTD_LOW_AND_SLOW_MIN)
    );
    for st in &q.styles {
        let hydra = st.style.starts_with("hydra");
        let (measure, ok) = if hydra {
            (
                format!(
                    "{}/{} campaigns mostly flagged",
                    st.high.campaigns_mostly_flagged, st.campaigns
                ),
                st.high.campaigns_mostly_flagged == st.campaigns,
            )
        } else {
            (
                format!("recall {:.3}", st.high.recall),
                st.high.recall >= RECALL_GAP,
            )
        };
        let target = if st.class == "high-rate" {
            TTD_HIGH_RATE_MIN
        } else {
            TTD_LOW_AND_SLOW_MIN
        };
        let ttd_ok = st.high.ttd_median_min.is_some_and(|t| t <= target);
        let _ = writeln!(
            s,
            "  {:<20} {:<13} {:>8}/h  {:<34} {:<4}  TTD p50 {:>7} (target {}) {}",
            st.style,
            st.class,
            st.rate_per_hour.map_or("-".into(), |r| format!("{r:.1}")),
            measure,
            if ok { "ok" } else { "MISS" },
            opt_minutes(st.high.ttd_median_min),
            minutes(target),
            if ttd_ok { "ok" } else { "MISS" }
        );
    }
    let _ = writeln!(
        s,
        "\n{:<22} {:>8} | {:>7} {:>12} | {:>7} {:>12}",
        "benign population", "accounts", "flagged", "FP per 1,000", "flagged", "FP per 1,000"
    );
    let _ = writeln!(
        s,
        "{:<22} {:>8} | {:^20} | {:^20}",
        "", "", "at high", "at elevated"
    );
    for p in &q.populations {
        let gap = if p.fp_per_1000_high > FP_GAP {
            "  <- gap"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "{:<22} {:>8} | {:>7} {:>12.1} | {:>7} {:>12.1}{gap}",
            p.population,
            p.accounts,
            p.flagged_high,
            p.fp_per_1000_high,
            p.flagged_elevated,
            p.fp_per_1000_elevated
        );
    }
    for (name, o) in [("high", &q.high), ("elevated", &q.elevated)] {
        let _ = writeln!(
            s,
            "\nat {name}: precision {} ({} of {} flagged accounts are campaign accounts), recall {:.3} ({} of {} campaign accounts), {} false positives among {} benign accounts",
            opt_ratio(o.precision),
            o.true_positives,
            o.true_positives + o.false_positives,
            o.recall,
            o.true_positives,
            o.campaign_accounts,
            o.false_positives,
            o.benign_accounts
        );
    }
    if !r.fault_checks.is_empty() {
        let wrong: Vec<&(String, u64, u64)> =
            r.fault_checks.iter().filter(|(_, i, c)| i != c).collect();
        let injected: Vec<String> = r
            .injected
            .iter()
            .skip(1)
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{n} {what}"))
            .collect();
        let _ = writeln!(s, "\nstreaming faults injected: {}", injected.join(", "));
        if wrong.is_empty() {
            let _ = writeln!(
                s,
                "the worker counted each one as injected ({} counters checked)",
                r.fault_checks.len()
            );
        }
        for (what, injected, counted) in wrong {
            let _ = writeln!(
                s,
                "MISMATCH {what}: injected {injected}, the worker counted {counted}"
            );
        }
    }
    if q.unlabelled.accounts > 0 {
        let _ = writeln!(
            s,
            "\n{} scored accounts are not in the ground truth ({} flagged at high): left out of every figure above",
            q.unlabelled.accounts, q.unlabelled.flagged_high
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_read_naturally() {
        assert_eq!(minutes(0.4), "24s");
        assert_eq!(minutes(45.0), "45m");
        assert_eq!(minutes(190.0), "3h10m");
        assert_eq!(minutes(1440.0 + 125.0), "26h5m");
        assert_eq!(minutes(3.0 * 1440.0 + 125.0), "3d2h");
    }
}
