//! `demo`, `gen` and `topics create`: the commands that set up a broker,
//! topics and traffic around the worker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use distill_watch::config::Config;
use distill_watch_traffic::{Label, Traffic};

use crate::eval::metrics::{summarise, AccountSummary, ScoreRow};
use crate::eval::{self, Origin, TrafficFacts};
use crate::flags::{DemoArgs, GenArgs};
use crate::session;

pub async fn create_topics(cfg: &Config, partitions: i32) -> Result<()> {
    let specs = session::topic_specs(cfg, partitions);
    session::create(cfg, &specs).await?;
    for s in &specs {
        println!(
            "topic {:<32} partitions={:<3}{}",
            s.name,
            s.partitions,
            if s.compacted {
                " cleanup.policy=compact"
            } else {
                ""
            }
        );
    }
    Ok(())
}

pub async fn gen(cfg: &Config, args: &GenArgs) -> Result<()> {
    // Before anything is generated or written: a refused password or
    // certificate ends the command at once.
    distill_watch::connect::check_async(cfg, distill_watch::connect::TIMEOUT).await?;
    let (scenario, seed) = session::scenario(&args.traffic, "demo")?;
    let traffic = session::generate(&scenario, seed, args.traffic.scale);
    traffic
        .write_truth_csv(&args.truth)
        .with_context(|| format!("writing {}", args.truth.display()))?;
    session::write(cfg, &traffic).await?;
    eprintln!("ground truth: {}", args.truth.display());
    Ok(())
}

pub async fn run(mut cfg: Config, args: &DemoArgs) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // Our own broker, or theirs with topics no earlier run has touched.
    let broker = match &args.broker {
        Some(addr) => {
            cfg.kafka.bootstrap_servers = addr.clone();
            session::suffix_topics(&mut cfg, &format!("demo-{}", session::run_suffix()), true);
            None
        }
        None => {
            eprintln!("[1/5] starting the local broker");
            Some(session::local_broker(&mut cfg)?)
        }
    };
    eprintln!("      broker at {}", cfg.kafka.bootstrap_servers);

    eprintln!("[2/5] creating topics");
    session::create(&cfg, &session::topic_specs(&cfg, session::PARTITIONS)).await?;

    let (scenario, seed) = session::scenario(&args.traffic, "demo")?;
    eprintln!(
        "[3/5] generating scenario {} (seed {seed}, {:.0} h of event time, scale {})",
        scenario.name,
        scenario.duration_ms as f64 / 3_600_000.0,
        args.traffic.scale
    );
    let traffic = session::generate(&scenario, seed, args.traffic.scale);
    traffic.write_truth_csv(&args.out.join("ground-truth.csv"))?;
    session::write(&cfg, &traffic).await?;

    eprintln!("[4/5] scoring: the worker reads every event and emits each window as it closes");
    let expected = (traffic.requests.len() + traffic.responses.len()) as u64;
    let metrics = session::score(&cfg, Some(expected)).await?;

    eprintln!("[5/5] reading {} back", cfg.topics.scores);
    let (scores, versions) = session::read_scores(&cfg, &cfg.topics.scores)?;
    let ranked = Report::new(&scores, &traffic);
    ranked.write_csv(&args.out.join("account-risk.csv"))?;
    println!();
    print!("{}", ranked.table(args.top));
    println!();
    if cfg.clusters.enabled {
        let clusters = session::read_clusters(&cfg, &cfg.topics.clusters)?;
        print!("{}", cluster_table(&clusters, &ranked.truth, args.top));
        println!();
    }
    let origin = Origin {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        scenario: Some((
            scenario.name.clone(),
            seed,
            args.traffic.scale,
            scenario.duration_ms as f64 / 3_600_000.0,
        )),
        traffic: Some(TrafficFacts::of(&traffic)),
        scores_topic: cfg.topics.scores.clone(),
        counters: session::counter_rows(&metrics),
        fault_checks: eval::fault_checks(&traffic, &metrics),
    };
    let report = eval::build_report(&cfg, &traffic.truth, &scores, versions, origin, started)?;
    print!("{}", eval::table::render(&report));
    let (json_at, html_at) = eval::write_reports(&report, &args.out, None, None)?;
    println!(
        "\n{} scores over {} accounts; ground truth, per-account maxima and reports ({json_at}, {}) in {}; finished in {:.0}s",
        scores.len(),
        ranked.accounts.len(),
        html_at.display(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    drop(broker);
    Ok(())
}

/// The riskiest clusters (each cluster id once, at its highest score), with
/// what their members are by the ground truth.
fn cluster_table(
    clusters: &[session::ClusterRow],
    truth: &BTreeMap<String, Label>,
    top: usize,
) -> String {
    let mut best: BTreeMap<&str, &session::ClusterRow> = BTreeMap::new();
    for c in clusters {
        let e = best.entry(c.cluster_id.as_str()).or_insert(c);
        if c.score > e.score {
            *e = c;
        }
    }
    let mut ranked: Vec<&session::ClusterRow> = best.into_values().collect();
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.cluster_id.cmp(&b.cluster_id))
    });
    let mut s = String::new();
    let _ = writeln!(
        s,
        "riskiest clusters on {} records of risk.clusters.v1 (highest window of each)",
        clusters.len()
    );
    let _ = writeln!(
        s,
        "{:<44} {:>6} {:<9} {:>7}  {:<34} top reasons",
        "cluster", "score", "level", "members", "members by ground truth"
    );
    for c in ranked.iter().take(top) {
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for m in &c.members {
            let g = truth
                .get(m)
                .map_or("unlabelled".to_string(), |l| l.group.clone());
            *by.entry(g).or_default() += 1;
        }
        let mut by: Vec<(String, usize)> = by.into_iter().collect();
        by.sort_by_key(|g| std::cmp::Reverse(g.1));
        let groups: Vec<String> = by.iter().take(2).map(|(g, n)| format!("{n} {g}")).collect();
        let reasons: Vec<String> = c
            .reasons
            .iter()
            .take(2)
            .map(|(f, v, _)| format!("{f}={}", short(*v)))
            .collect();
        let id: String = c.cluster_id.chars().take(44).collect();
        let _ = writeln!(
            s,
            "{:<44} {:>6.3} {:<9} {:>7}  {:<34} {}",
            id,
            c.score,
            c.level,
            c.member_count,
            groups.join(", "),
            reasons.join(" ")
        );
    }
    s
}

/// The riskiest accounts, with their ground truth beside them.
struct Report {
    accounts: BTreeMap<String, AccountSummary>,
    truth: BTreeMap<String, Label>,
}

impl Report {
    fn new(scores: &[ScoreRow], traffic: &Traffic) -> Report {
        Report {
            accounts: summarise(scores),
            truth: traffic
                .truth
                .iter()
                .map(|t| (t.account_id.clone(), t.label.clone()))
                .collect(),
        }
    }

    /// Highest score first; ties by windows flagged, then account id.
    fn ranked(&self) -> Vec<(&String, &AccountSummary)> {
        let mut v: Vec<_> = self.accounts.iter().collect();
        v.sort_by(|a, b| {
            b.1.max_score
                .total_cmp(&a.1.max_score)
                .then_with(|| b.1.windows_at[HIGH].cmp(&a.1.windows_at[HIGH]))
                .then_with(|| a.0.cmp(b.0))
        });
        v
    }

    fn label(&self, account: &str) -> String {
        match self.truth.get(account) {
            Some(l) if l.is_campaign() => format!("campaign:{}", l.group),
            Some(l) => format!("benign:{}", l.group),
            None => "unknown".into(),
        }
    }

    fn table(&self, top: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>4}  {:<24} {:>5}  {:<8} {:>7}  {:<28} top reasons (feature=value +contribution)",
            "rank", "account", "score", "level", "flagged", "ground truth"
        );
        for (i, (account, a)) in self.ranked().into_iter().take(top).enumerate() {
            let reasons: Vec<String> = a
                .top
                .reasons
                .iter()
                .take(3)
                .map(|(f, v, c)| format!("{f}={} +{c:.2}", short(*v)))
                .collect();
            let _ = writeln!(
                s,
                "{:>4}  {:<24} {:>5.3}  {:<8} {:>3}/{:<3}  {:<28} {}",
                i + 1,
                account,
                a.max_score,
                a.top.level,
                a.windows_at[HIGH],
                a.windows,
                self.label(account),
                reasons.join(", ")
            );
        }
        s
    }

    fn write_csv(&self, path: &Path) -> Result<()> {
        let mut s = String::from(
            "account_id,max_score,level,windows,windows_flagged,ground_truth,top_reasons\n",
        );
        for (account, a) in self.ranked() {
            let reasons: Vec<String> = a
                .top
                .reasons
                .iter()
                .map(|(f, v, c)| format!("{f}={v}:+{c}"))
                .collect();
            let _ = writeln!(
                s,
                "{account},{},{},{},{},{},{}",
                a.max_score,
                a.top.level,
                a.windows,
                a.windows_at[HIGH],
                self.label(account),
                reasons.join(" ")
            );
        }
        std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
    }
}

/// Rank of the `high` level in [`AccountSummary::windows_at`].
const HIGH: usize = 2;

fn short(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
