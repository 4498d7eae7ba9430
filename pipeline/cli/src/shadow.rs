//! `distill-watch shadow`: a candidate jobs directory and scoring model
//! beside the live ones over the same range of history (two replays of it,
//! nothing published), and what would change: accounts whose level moves,
//! new and lost flags, per attack style or population when a ground truth
//! is given.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use distill_watch::process::Detector;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use distill_watch::config::Config;
use distill_watch::replay::{format_ms, Output, Plan, ReplayError};
use distill_watch::score::{Level, RiskScore};

use crate::flags::ShadowArgs;
use crate::replay::{parse_range, run_shown};

/// Scores kept in memory, for the comparison.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<RiskScore>>>);

#[async_trait::async_trait]
impl Output for Collect {
    async fn write(&mut self, scores: &[RiskScore]) -> Result<(), ReplayError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(scores);
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), ReplayError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory (nothing published)".into()
    }
}

impl Collect {
    fn take(&self) -> Vec<RiskScore> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

pub async fn run(cfg: Config, args: &ShadowArgs) -> Result<()> {
    let mut candidate = cfg.clone();
    if let Some(dir) = &args.jobs {
        candidate.jobs.dir = dir.clone();
        candidate.jobs.scoring = dir.join("scoring.toml");
    }
    if let Some(model) = &args.scoring {
        candidate.jobs.scoring = model.clone();
    }
    if candidate.jobs.dir == cfg.jobs.dir && candidate.jobs.scoring == cfg.jobs.scoring {
        bail!("give the candidate: --scoring FILE and/or --jobs DIR (they name the live ones now)");
    }
    let flag = Level::parse(&args.flag_level).with_context(|| {
        format!(
            "--flag-level {:?}: low, elevated, high or critical",
            args.flag_level
        )
    })?;
    let truth = match &args.truth {
        Some(p) => Some(distill_watch_traffic::truth::read_csv(p)?),
        None => None,
    };
    let (from, to) = parse_range(&args.from, args.to.as_deref())?;
    let live_detector = distill_watch::worker::load_detector(&cfg)
        .await
        .context("the live jobs and model")?;
    let cand_detector = distill_watch::worker::load_detector(&candidate)
        .await
        .context("the candidate jobs and model")?;
    if live_detector.model_version == cand_detector.model_version {
        eprintln!(
            "warning: the candidate's model version and jobs digest ({}) are the live ones': its scores are told apart by content only",
            live_detector.model_version
        );
    }
    let mut plan = Plan::new(&cfg, &live_detector.jobs, from, to, None)?.covering(&Plan::new(
        &candidate,
        &cand_detector.jobs,
        from,
        to,
        None,
    )?);
    if args.follow {
        plan = plan.following()?;
    }
    let stop_after = args
        .for_
        .as_deref()
        .map(distill_watch::config::parse_duration)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--for: {e}"))?;
    eprintln!(
        "shadow: {} (live) against {} (candidate), windows from {} to {}; nothing is published",
        live_detector.model_version,
        cand_detector.model_version,
        format_ms(plan.from),
        match plan.to {
            Some(t) => format_ms(t),
            None if plan.follow => "Ctrl-C (following live traffic)".to_string(),
            None => "the end of the topics".to_string(),
        }
    );
    // One stop for both runs: a signal, or --for.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal = crate::stop_signal()?;
    tokio::spawn(async move {
        let timer = async {
            match stop_after {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = signal => {}
            _ = timer => tracing::info!("--for elapsed"),
        }
        let _ = stop_tx.send(true);
    });
    let stop = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    };
    let (live_out, cand_out) = (Collect::default(), Collect::default());
    let bar = std::io::stderr().is_terminal() && !plan.follow;
    let (live_detector, cand_detector) = (Arc::new(live_detector), Arc::new(cand_detector));
    // Owned, so that each run can be a task of its own.
    let run = |cfg: &Config, d: &Arc<Detector>, out: &Collect, label: &'static str| {
        let (cfg, d, out, stop) = (cfg.clone(), d.clone(), out.clone(), stop());
        async move { run_shown(&cfg, &d, plan, Box::new(out), label, bar, stop).await }
    };
    let live_run = run(&cfg, &live_detector, &live_out, "live: ");
    let cand_run = run(&candidate, &cand_detector, &cand_out, "candidate: ");
    // Live traffic: side by side (each on a task, so each gets a core), so
    // both see it as it comes; a range: one after the other, each with the
    // machine to itself.
    let (live_summary, cand_summary) = if plan.follow {
        let (a, b) = (tokio::spawn(live_run), tokio::spawn(cand_run));
        (a.await??, b.await??)
    } else {
        let a = live_run.await?;
        (a, cand_run.await?)
    };
    if !plan.follow && *stop_rx.borrow() {
        bail!("interrupted before both models had scored the range: nothing to compare");
    }
    let (mut live, mut cand) = (live_out.take(), cand_out.take());
    let mut to = plan.to;
    if plan.follow {
        // Each run wrote the windows no pair of its could still revise;
        // compare up to where both got.
        let reached = |v: &[RiskScore]| v.iter().map(|s| s.window_end).max();
        let cut = reached(&live).min(reached(&cand)).unwrap_or(i64::MIN);
        live.retain(|s| s.window_end <= cut);
        cand.retain(|s| s.window_end <= cut);
        to = (cut != i64::MIN).then_some(cut);
    }
    let diff = Diff::new(
        &live,
        &cand,
        flag,
        truth.as_deref(),
        Models {
            live: live_detector.model_version.clone(),
            candidate: cand_detector.model_version.clone(),
            from: format_ms(plan.from),
            to: to.map(format_ms),
            flag_level: flag.as_str().to_string(),
        },
    );
    eprintln!(
        "read {} requests and {} responses twice in {:.1} s and {:.1} s",
        live_summary.metrics.requests_consumed,
        live_summary.metrics.responses_consumed,
        live_summary.elapsed.as_secs_f64(),
        cand_summary.elapsed.as_secs_f64()
    );
    print!("{}", diff.table(args.top));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&diff)?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("the whole comparison: {}", path.display());
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct Models {
    live: String,
    candidate: String,
    from: String,
    to: Option<String>,
    flag_level: String,
}

/// One account, live against candidate: its highest level and score over
/// the range.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountChange {
    pub account_id: String,
    pub live_level: &'static str,
    pub candidate_level: &'static str,
    pub live_score: f64,
    pub candidate_score: f64,
    /// Windows whose final score differs (or exists on one side only).
    pub windows_changed: usize,
    /// The account's attack style or population, with a ground truth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct GroupCounts {
    pub group: String,
    pub campaign: bool,
    pub accounts: usize,
    pub flagged_live: usize,
    pub flagged_candidate: usize,
    pub new_flags: usize,
    pub lost_flags: usize,
}

/// What the candidate changes.
#[derive(Debug, Serialize)]
pub struct Diff {
    models: Models,
    pub accounts: usize,
    pub windows: usize,
    /// Accounts with any window's final score changed.
    pub changed: Vec<AccountChange>,
    /// Of `changed`, those whose highest level moved, and how (`low→high`).
    pub level_changes: BTreeMap<String, usize>,
    pub new_flags: Vec<String>,
    pub lost_flags: Vec<String>,
    pub groups: Vec<GroupCounts>,
}

/// Final score per (account, window start): the highest revision.
fn finals(scores: &[RiskScore]) -> BTreeMap<(&str, i64), &RiskScore> {
    let mut m: BTreeMap<(&str, i64), &RiskScore> = BTreeMap::new();
    for s in scores {
        let e = m
            .entry((s.account_id.as_str(), s.window_start))
            .or_insert(s);
        if s.revision > e.revision {
            *e = s;
        }
    }
    m
}

impl Diff {
    fn new(
        live: &[RiskScore],
        cand: &[RiskScore],
        flag: Level,
        truth: Option<&[distill_watch_traffic::TruthRow]>,
        models: Models,
    ) -> Diff {
        let (l, c) = (finals(live), finals(cand));
        let keys: BTreeSet<(&str, i64)> = l.keys().chain(c.keys()).copied().collect();
        // Per account: (highest live, highest candidate, windows changed).
        type Acc = (Option<(Level, f64)>, Option<(Level, f64)>, usize);
        let mut per: BTreeMap<&str, Acc> = BTreeMap::new();
        let top = |cur: Option<(Level, f64)>, s: Option<&&RiskScore>| match (cur, s) {
            (None, Some(s)) => Some((s.level, s.score)),
            (Some((lv, sc)), Some(s)) => Some((lv.max(s.level), sc.max(s.score))),
            (cur, None) => cur,
        };
        for k in &keys {
            let (ls, cs) = (l.get(k), c.get(k));
            let e = per.entry(k.0).or_default();
            e.0 = top(e.0, ls);
            e.1 = top(e.1, cs);
            let same = match (ls, cs) {
                (Some(a), Some(b)) => {
                    a.score == b.score && a.level == b.level && a.reasons == b.reasons
                }
                _ => false,
            };
            if !same {
                e.2 += 1;
            }
        }
        let truth: BTreeMap<&str, &distill_watch_traffic::TruthRow> = truth
            .unwrap_or_default()
            .iter()
            .map(|t| (t.account_id.as_str(), t))
            .collect();
        let level = |x: Option<(Level, f64)>| x.map_or(Level::Low, |v| v.0);
        let score = |x: Option<(Level, f64)>| x.map_or(0.0, |v| v.1);
        let mut changed = Vec::new();
        let mut level_changes = BTreeMap::new();
        let (mut new_flags, mut lost_flags) = (Vec::new(), Vec::new());
        let mut groups: BTreeMap<(bool, String), GroupCounts> = BTreeMap::new();
        for t in truth.values() {
            let g = groups
                .entry((t.label.is_campaign(), t.label.group.clone()))
                .or_default();
            g.group = t.label.group.clone();
            g.campaign = t.label.is_campaign();
            g.accounts += 1;
        }
        for (account, (lv, cv, n)) in &per {
            let (was, now) = (level(*lv) >= flag, level(*cv) >= flag);
            if was && !now {
                lost_flags.push(account.to_string());
            }
            if now && !was {
                new_flags.push(account.to_string());
            }
            let t = truth.get(account);
            if let Some(t) = t {
                let g = groups
                    .get_mut(&(t.label.is_campaign(), t.label.group.clone()))
                    .expect("every truth row has its group");
                g.flagged_live += usize::from(was);
                g.flagged_candidate += usize::from(now);
                g.new_flags += usize::from(now && !was);
                g.lost_flags += usize::from(was && !now);
            }
            if *n == 0 {
                continue;
            }
            if level(*lv) != level(*cv) {
                *level_changes
                    .entry(format!("{}→{}", level(*lv).as_str(), level(*cv).as_str()))
                    .or_insert(0) += 1;
            }
            changed.push(AccountChange {
                account_id: account.to_string(),
                live_level: level(*lv).as_str(),
                candidate_level: level(*cv).as_str(),
                live_score: score(*lv),
                candidate_score: score(*cv),
                windows_changed: *n,
                group: t.map(|t| t.label.group.clone()),
                campaign: t.map(|t| t.label.is_campaign()),
            });
        }
        // Largest moves first, then by account.
        changed.sort_by(|a, b| {
            let d = |c: &AccountChange| (c.candidate_score - c.live_score).abs();
            d(b).total_cmp(&d(a))
                .then_with(|| a.account_id.cmp(&b.account_id))
        });
        Diff {
            models,
            accounts: per.len(),
            windows: keys.len(),
            changed,
            level_changes,
            new_flags,
            lost_flags,
            groups: groups.into_values().collect(),
        }
    }

    fn table(&self, top: usize) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let m = &self.models;
        let _ = writeln!(
            o,
            "\nlive {} against candidate {}, windows from {} to {}",
            m.live,
            m.candidate,
            m.from,
            m.to.as_deref().unwrap_or("the end of the topics")
        );
        let moved: usize = self.level_changes.values().sum();
        let _ = writeln!(
            o,
            "  {} accounts, {} account windows; scores changed for {} accounts, the highest level of {}",
            self.accounts,
            self.windows,
            self.changed.len(),
            moved
        );
        for (change, n) in &self.level_changes {
            let _ = writeln!(o, "    {change:<22} {n:>6}");
        }
        let _ = writeln!(
            o,
            "  flagged ({} or above): {} new, {} lost",
            m.flag_level,
            self.new_flags.len(),
            self.lost_flags.len()
        );
        if !self.groups.is_empty() {
            let _ = writeln!(
                o,
                "\n  {:<9} {:<24} {:>8} {:>8} {:>9} {:>5} {:>5}",
                "", "style / population", "accounts", "flagged", "candidate", "new", "lost"
            );
            for g in &self.groups {
                let _ = writeln!(
                    o,
                    "  {:<9} {:<24} {:>8} {:>8} {:>9} {:>5} {:>5}",
                    if g.campaign { "campaign" } else { "benign" },
                    g.group,
                    g.accounts,
                    g.flagged_live,
                    g.flagged_candidate,
                    g.new_flags,
                    g.lost_flags
                );
            }
        }
        if !self.changed.is_empty() && top > 0 {
            let _ = writeln!(
                o,
                "\n  largest changes ({} of {}):\n  {:<28} {:>18} {:>18} {:>8}  group",
                top.min(self.changed.len()),
                self.changed.len(),
                "account",
                "live",
                "candidate",
                "windows"
            );
            for c in self.changed.iter().take(top) {
                let _ = writeln!(
                    o,
                    "  {:<28} {:>9} ({:.3}) {:>9} ({:.3}) {:>8}  {}",
                    c.account_id,
                    c.live_level,
                    c.live_score,
                    c.candidate_level,
                    c.candidate_score,
                    c.windows_changed,
                    c.group.as_deref().unwrap_or("")
                );
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(account: &str, start: i64, score: f64, level: Level, revision: i32) -> RiskScore {
        RiskScore {
            account_id: account.into(),
            window_start: start,
            window_end: start + 600_000,
            score,
            level,
            reasons: vec![],
            features: vec![],
            model_version: "m".into(),
            event_count: 1,
            response_count: 1,
            revision,
            cluster_id: None,
        }
    }

    fn models() -> Models {
        Models {
            live: "a".into(),
            candidate: "b".into(),
            from: "x".into(),
            to: None,
            flag_level: "high".into(),
        }
    }

    #[test]
    fn the_diff_names_moved_accounts_new_and_lost_flags_by_their_final_revisions() {
        let live = vec![
            s("same", 0, 0.1, Level::Low, 0),
            s("up", 0, 0.5, Level::Elevated, 0),
            s("up", 600_000, 0.2, Level::Low, 0),
            s("down", 0, 0.7, Level::High, 0),
            // Revised: only the last revision counts.
            s("rev", 0, 0.9, Level::Critical, 0),
            s("rev", 0, 0.2, Level::Low, 1),
        ];
        let cand = vec![
            s("same", 0, 0.1, Level::Low, 0),
            s("up", 0, 0.65, Level::High, 0),
            s("up", 600_000, 0.2, Level::Low, 0),
            s("down", 0, 0.35, Level::Elevated, 0),
            s("rev", 0, 0.2, Level::Low, 0),
            s("only", 0, 0.3, Level::Elevated, 0),
        ];
        let truth = vec![
            distill_watch_traffic::TruthRow {
                account_id: "up".into(),
                label: distill_watch_traffic::Label::campaign("hydra_proxy", "c1"),
                first_request_ms: None,
            },
            distill_watch_traffic::TruthRow {
                account_id: "down".into(),
                label: distill_watch_traffic::Label::benign("chat_user"),
                first_request_ms: None,
            },
        ];
        let d = Diff::new(&live, &cand, Level::High, Some(&truth), models());
        let names: Vec<&str> = d.changed.iter().map(|c| c.account_id.as_str()).collect();
        assert_eq!(names, ["down", "only", "up"], "largest move first");
        assert_eq!(d.changed[2].windows_changed, 1);
        assert_eq!(d.new_flags, ["up"]);
        assert_eq!(d.lost_flags, ["down"]);
        assert_eq!(
            d.level_changes,
            BTreeMap::from([
                ("elevated→high".to_string(), 1),
                ("high→elevated".to_string(), 1),
                ("low→elevated".to_string(), 1),
            ])
        );
        assert_eq!((d.accounts, d.windows), (5, 6));
        let hydra = d.groups.iter().find(|g| g.group == "hydra_proxy").unwrap();
        assert_eq!(
            (
                hydra.accounts,
                hydra.flagged_live,
                hydra.flagged_candidate,
                hydra.new_flags
            ),
            (1, 0, 1, 1)
        );
        let chat = d.groups.iter().find(|g| g.group == "chat_user").unwrap();
        assert_eq!((chat.flagged_live, chat.lost_flags), (1, 1));
        let table = d.table(10);
        assert!(table.contains("1 new, 1 lost"), "{table}");
        assert!(table.contains("hydra_proxy"), "{table}");
    }
}
