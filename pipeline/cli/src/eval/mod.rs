//! `distill-watch eval`: score labelled traffic, report detection quality.
//!
//! Two inputs: a scenario generated here (the default: the `eval` scenario
//! on a local broker), or a provider's own labelled traffic already on a
//! broker, described by a ground-truth CSV (`--truth`), either still to be
//! scored or with its scores already written (`--scores-topic`). Scores are
//! always read from Kafka and decoded like any consumer would.

pub mod html;
pub mod metrics;
pub mod report;
pub mod table;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use distill_watch::config::Config;
use distill_watch::score::ScoringModel;
use distill_watch_traffic::{truth, Traffic, TruthRow};

use crate::flags::EvalArgs;
use crate::session;
use metrics::{evaluate, summarise, ScoreRow};
use report::{EvalReport, Levels, RunInfo};

/// Where the inputs of an evaluation came from, for the report.
pub struct Origin {
    pub command: String,
    pub scenario: Option<(String, u64, f64, f64)>,
    pub traffic: Option<TrafficFacts>,
    pub scores_topic: String,
    pub counters: Vec<(String, u64)>,
    pub fault_checks: Vec<(String, u64, u64)>,
}

/// What is known about generated traffic.
pub struct TrafficFacts {
    pub exchanges: u64,
    pub injected: Vec<(String, u64)>,
}

impl TrafficFacts {
    pub fn of(t: &Traffic) -> TrafficFacts {
        TrafficFacts {
            exchanges: t.injected.exchanges,
            injected: t
                .injected
                .rows()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }
}

/// Build the report from truth and scores.
pub fn build_report(
    cfg: &Config,
    truth: &[TruthRow],
    scores: &[ScoreRow],
    model_versions: Vec<String>,
    origin: Origin,
    started: Instant,
) -> Result<EvalReport> {
    let model = ScoringModel::load(&cfg.jobs.scoring).with_context(|| {
        format!(
            "reading level thresholds from {}",
            cfg.jobs.scoring.display()
        )
    })?;
    let summaries = summarise(scores);
    let quality = evaluate(truth, &summaries);
    let (scenario, seed, scale, span) = match origin.scenario {
        Some((n, seed, scale, span)) => (Some(n), Some(seed), Some(scale), Some(span)),
        None => (None, None, None, None),
    };
    let report = EvalReport {
        run: RunInfo {
            command: origin.command,
            scenario,
            seed,
            scale,
            span_hours: span,
            exchanges: origin.traffic.as_ref().map(|t| t.exchanges),
            scores_topic: origin.scores_topic,
            scores: scores.len(),
            accounts_scored: summaries.len(),
            model_versions,
            elapsed_s: started.elapsed().as_secs_f64(),
        },
        levels: Levels {
            elevated: model.levels.elevated,
            high: model.levels.high,
            critical: model.levels.critical,
        },
        quality,
        injected: origin.traffic.map(|t| t.injected).unwrap_or_default(),
        counters: origin.counters,
        fault_checks: origin.fault_checks,
    };
    Ok(report)
}

/// Write the JSON and HTML reports; returns their paths.
pub fn write_reports(
    report: &EvalReport,
    out: &Path,
    json: Option<&Path>,
    html_path: Option<&Path>,
) -> Result<(String, PathBuf)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let text = serde_json::to_string_pretty(report)?;
    let json_at = match json {
        Some(p) if p == Path::new("-") => {
            println!("{text}");
            "stdout".to_string()
        }
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
            p.display().to_string()
        }
        None => {
            let p = out.join("eval.json");
            std::fs::write(&p, &text).with_context(|| format!("writing {}", p.display()))?;
            p.display().to_string()
        }
    };
    let html_at = html_path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out.join("eval.html"));
    std::fs::write(&html_at, html::render(report))
        .with_context(|| format!("writing {}", html_at.display()))?;
    Ok((json_at, html_at))
}

/// The worker's counters beside the faults the generator injected.
pub fn fault_checks(
    traffic: &Traffic,
    m: &distill_watch::metrics::Metrics,
) -> Vec<(String, u64, u64)> {
    traffic
        .injected
        .against(m)
        .into_iter()
        .map(|(what, injected, counted)| (what.to_string(), injected, counted))
        .collect()
}

/// One line per labelled account: its label, highest score, when it was
/// first flagged at `high`, and the reasons of its highest-scoring record
/// (with the cluster that record came from, for a member score).
fn write_accounts(path: &Path, scores: &[ScoreRow], truth: &[TruthRow]) -> Result<()> {
    use std::io::Write;
    let summaries = summarise(scores);
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(
        out,
        "account_id,label,group,first_request_ms,max_score,level,first_high_end_ms,top_window_start,top_reasons"
    )?;
    for t in truth {
        let s = summaries.get(&t.account_id);
        let reasons = s
            .map(|s| {
                s.top
                    .reasons
                    .iter()
                    .map(|(f, v, c)| format!("{f}={v:.3}:{c:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            t.account_id,
            if t.label.is_campaign() {
                "campaign"
            } else {
                "benign"
            },
            t.label.group,
            t.first_request_ms
                .map(|x| x.to_string())
                .unwrap_or_default(),
            s.map_or(String::new(), |s| format!("{:.4}", s.max_score)),
            s.map_or("", |s| s.top.level.as_str()),
            s.and_then(|s| s.first_end_at[2])
                .map(|x| x.to_string())
                .unwrap_or_default(),
            s.map_or(String::new(), |s| s.top.window_start.to_string()),
            reasons
        )?;
    }
    Ok(())
}

/// Every cluster record as a JSON line, with what its members are by the
/// ground truth (population or campaign style → count): what a cluster
/// model is calibrated on.
fn write_clusters(path: &Path, clusters: &[session::ClusterRow], truth: &[TruthRow]) -> Result<()> {
    use std::collections::{BTreeMap, HashMap};
    use std::io::Write;
    let labels: HashMap<&str, &TruthRow> =
        truth.iter().map(|t| (t.account_id.as_str(), t)).collect();
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for c in clusters {
        let mut composition: BTreeMap<String, usize> = BTreeMap::new();
        for m in &c.members {
            let group = labels
                .get(m.as_str())
                .map_or("unlabelled".to_string(), |t| {
                    if t.label.is_campaign() {
                        format!("campaign:{}", t.label.group)
                    } else {
                        t.label.group.clone()
                    }
                });
            *composition.entry(group).or_default() += 1;
        }
        let line = serde_json::json!({
            "cluster": c,
            "composition": composition,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.contains([' ', '"', '\'']) {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn run(mut cfg: Config, args: &EvalArgs) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut _broker = None;
    let (truth, origin) = match &args.truth {
        Some(path) => {
            let truth = truth::read_csv(path)?;
            anyhow::ensure!(!truth.is_empty(), "{} lists no accounts", path.display());
            if let Some(b) = &args.broker {
                cfg.kafka.bootstrap_servers = b.clone();
            }
            eprintln!(
                "[1/3] ground truth: {} accounts ({} campaign) from {}",
                truth.len(),
                truth.iter().filter(|t| t.label.is_campaign()).count(),
                path.display()
            );
            let (topic, counters) = match &args.scores_topic {
                Some(t) => {
                    eprintln!("[2/3] scores already written to {t}: not running the pipeline");
                    (t.clone(), Vec::new())
                }
                None => {
                    // Score the configured event topics into fresh output
                    // topics, so earlier scores never mix in.
                    session::suffix_topics(
                        &mut cfg,
                        &format!("eval-{}", session::run_suffix()),
                        false,
                    );
                    let specs = session::topic_specs(&cfg, session::PARTITIONS);
                    session::create(&cfg, &specs[3..]).await?;
                    eprintln!(
                        "[2/3] scoring {} + {} into {}",
                        cfg.topics.requests, cfg.topics.responses, cfg.topics.scores
                    );
                    let m = session::score(&cfg, None).await?;
                    (cfg.topics.scores.clone(), session::counter_rows(&m))
                }
            };
            (
                truth,
                Origin {
                    command: command_line(),
                    scenario: None,
                    traffic: None,
                    scores_topic: topic,
                    counters,
                    fault_checks: Vec::new(),
                },
            )
        }
        None => {
            let (scenario, seed) = session::scenario(&args.traffic, "eval")?;
            match &args.broker {
                Some(b) => {
                    cfg.kafka.bootstrap_servers = b.clone();
                    session::suffix_topics(
                        &mut cfg,
                        &format!("eval-{}", session::run_suffix()),
                        true,
                    );
                }
                None => {
                    eprintln!("[1/5] starting the local broker");
                    _broker = Some(session::local_broker(&mut cfg)?);
                }
            }
            eprintln!("      broker at {}", cfg.kafka.bootstrap_servers);
            session::create(&cfg, &session::topic_specs(&cfg, session::PARTITIONS)).await?;
            eprintln!(
                "[2/5] generating scenario {} (seed {seed}, scale {})",
                scenario.name, args.traffic.scale
            );
            let traffic = session::generate(&scenario, seed, args.traffic.scale);
            let truth_path = args.out.join("ground-truth.csv");
            traffic.write_truth_csv(&truth_path)?;
            eprintln!("      ground truth: {}", truth_path.display());
            eprintln!("[3/5] writing the traffic to {}", cfg.topics.requests);
            session::write(&cfg, &traffic).await?;
            eprintln!(
                "[4/5] scoring: the worker reads every event and emits each window as it closes"
            );
            let expected = (traffic.requests.len() + traffic.responses.len()) as u64;
            let m = session::score(&cfg, Some(expected)).await?;
            let facts = TrafficFacts::of(&traffic);
            let checks = fault_checks(&traffic, &m);
            (
                traffic.truth,
                Origin {
                    command: command_line(),
                    scenario: Some((
                        scenario.name.clone(),
                        seed,
                        args.traffic.scale,
                        scenario.duration_ms as f64 / 3_600_000.0,
                    )),
                    traffic: Some(facts),
                    scores_topic: cfg.topics.scores.clone(),
                    counters: session::counter_rows(&m),
                    fault_checks: checks,
                },
            )
        }
    };
    eprintln!(
        "[{}] reading {}",
        if args.truth.is_some() { "3/3" } else { "5/5" },
        origin.scores_topic
    );
    let (scores, versions) = if args.features {
        let path = args.out.join("features.tsv");
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        let read = session::read_scores_dumping(&cfg, &origin.scores_topic, Some(&mut file))?;
        std::io::Write::flush(&mut file).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("      features of every account score: {}", path.display());
        read
    } else {
        session::read_scores(&cfg, &origin.scores_topic)?
    };
    if cfg.clusters.enabled && args.scores_topic.is_none() {
        let clusters = session::read_clusters(&cfg, &cfg.topics.clusters)?;
        let path = args.out.join("clusters.jsonl");
        write_clusters(&path, &clusters, &truth)?;
        eprintln!(
            "      {} cluster records: {}",
            clusters.len(),
            path.display()
        );
    }
    let report = build_report(&cfg, &truth, &scores, versions, origin, started)?;
    let accounts_at = args.out.join("accounts.csv");
    write_accounts(&accounts_at, &scores, &truth)?;
    // With `--json -` stdout is for the JSON alone; the table goes to stderr.
    let json_to_stdout = args.json.as_deref() == Some(Path::new("-"));
    let say = |text: String| {
        if json_to_stdout {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    };
    say(format!("\n{}", table::render(&report)));
    let (json_at, html_at) = write_reports(
        &report,
        &args.out,
        args.json.as_deref(),
        args.html.as_deref(),
    )?;
    say(format!("\nreports: {json_at}, {}\n", html_at.display()));
    Ok(())
}
