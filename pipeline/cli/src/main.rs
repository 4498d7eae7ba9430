//! The `distill-watch` binary: command dispatch. Errors become `anyhow` here,
//! at the edge; the libraries use typed errors. Each command is a thin file
//! over the libraries: the worker (`distill_watch`), the traffic generator
//! (`distill_watch_traffic`) and the local broker manager (`local_broker`).

mod bench;
mod demo;
mod eval;
mod flags;
mod parquet_out;
mod replay;
mod session;
mod shadow;
mod top;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;

use distill_watch::config::{Config, DEFAULTS_TOML, ENV_PREFIX};
use distill_watch::redact::scrub;
use flags::{Cli, Command, ConfigArgs, JobsAction, RunArgs, TopicsAction};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    distill_watch::redact::register_from_env(ENV_PREFIX);
    // Commands with progress bars keep the log to warnings unless asked:
    // the bars say what is happening.
    let default_log = match cli.command {
        Command::Demo(_)
        | Command::Eval(_)
        | Command::Gen(_)
        | Command::Bench(_)
        | Command::Replay(_)
        | Command::Shadow(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default_log))
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(|| Scrubbed)
        // The writer hides the terminal from the formatter: colours only
        // where stderr is one, never escape codes in a piped log.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", scrub(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Standard error with every configured secret hidden: the log's writer, so
/// that no log line (librdkafka's included) prints a credential.
struct Scrubbed;

impl std::io::Write for Scrubbed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over one whole event per call, so a secret is
        // never split across calls.
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    // Loading registers the configuration's secrets for the log's scrubber,
    // and fixes the schema versions to accept before anything decodes.
    let load = || {
        let cfg = Config::load(cli.config.as_deref()).context("loading configuration")?;
        let dir = &cfg.schemas.dir;
        if !dir.as_os_str().is_empty() {
            let set = distill_watch::schemas::SchemaSet::with_versions(dir)
                .with_context(|| format!("[schemas] dir {}", dir.display()))?;
            for s in set.all().iter().filter(|s| !s.versions.is_empty()) {
                let ids: Vec<u32> = s.versions.iter().map(|v| v.id).collect();
                tracing::info!(schema = s.name, current = s.id, versions = ?ids, "accepting other writer versions");
            }
            distill_watch::schemas::install(set, dir)?;
        }
        anyhow::Ok(cfg)
    };
    match &cli.command {
        Command::Demo(args) => demo::run(load()?, args).await,
        Command::Run(args) => run(load()?, args).await,
        Command::Gen(args) => demo::gen(&load()?, args).await,
        Command::Eval(args) => eval::run(load()?, args).await,
        Command::Scenarios => {
            scenarios();
            Ok(())
        }
        Command::Topics(args) => match args.action {
            TopicsAction::Create { partitions } => demo::create_topics(&load()?, partitions).await,
        },
        Command::Jobs(args) => jobs(&load()?, &args.action).await,
        Command::Config(args) => config(&cli, args),
        Command::Bench(args) => bench::run(load()?, args).await,
        Command::Top(args) => top::run(load()?, args).await,
        Command::Replay(args) => replay::run(load()?, args).await,
        Command::Shadow(args) => shadow::run(load()?, args).await,
    }
}

async fn run(mut cfg: Config, args: &RunArgs) -> Result<()> {
    if args.exit_at_eof {
        cfg.worker.exit_at_eof = true;
    }
    if let Some(addr) = distill_watch::telemetry::serve(&cfg.metrics.listen).await? {
        eprintln!("metrics and health on http://{addr}/metrics, /healthz, /readyz");
    }
    let summary = distill_watch::worker::run(&cfg, stop_signal()?).await?;
    println!("{}", summary.metrics);
    if let Some(c) = &summary.clusters {
        println!("cluster stage: {c}");
    }
    Ok(())
}

/// Resolves on SIGTERM (what Kubernetes and systemd send) or SIGINT. The
/// worker then stops polling, emits nothing partial, commits what is
/// complete and returns.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

fn scenarios() {
    for (name, _) in distill_watch_traffic::scenario::BUILTIN {
        match distill_watch_traffic::Scenario::builtin(name) {
            Ok(s) => {
                let benign: f64 = s.benign.iter().map(|p| p.accounts).sum();
                let campaign: f64 = s.campaigns.iter().map(|c| c.accounts).sum();
                println!(
                    "{:<6} {:>5.0} h, {:>6.0} benign accounts in {} populations, {:>5.0} campaign accounts in {} campaigns, seed {}: {}",
                    s.name,
                    s.duration_ms as f64 / 3_600_000.0,
                    benign,
                    s.benign.len(),
                    campaign,
                    s.campaigns.len(),
                    s.seed,
                    s.description
                );
            }
            Err(e) => println!("{name:<6} INVALID: {e}"),
        }
    }
    println!("\nUse one with --scenario NAME, or write your own TOML file (see deploy/scenarios/) and pass its path.");
}

async fn load_jobs(cfg: &Config) -> Result<distill_watch::process::Detector> {
    let delay = cfg.window.max_response_delay.as_millis() as i64;
    Ok(distill_watch::process::Detector::load(&cfg.jobs.dir, &cfg.jobs.scoring, delay).await?)
}

async fn jobs(cfg: &Config, action: &JobsAction) -> Result<()> {
    match action {
        JobsAction::Validate => {
            let d = load_jobs(cfg).await?;
            println!(
                "{:<3} {:<16} {:<20} {:<24} {:<12} file",
                "", "job", "input", "window", "lateness"
            );
            for (level, j) in d.jobs.levels() {
                let name = format!("{}{}", "  ".repeat(level), j.name);
                println!(
                    "ok  {:<16} {:<20} {:<24} {:<12} {}",
                    name,
                    j.input.to_string(),
                    j.window.to_string(),
                    distill_watch::config::format_duration_ms(j.lateness_ms),
                    j.path.display()
                );
            }
            println!(
                "{} jobs in dependency order (a roll-up is indented under the job it reads), {} features; raw events held for the base window of {}; scoring model {} uses {} of the features",
                d.jobs.jobs.len(),
                d.features.len(),
                distill_watch::config::format_duration_ms(d.jobs.window_ms),
                d.model_version,
                d.model.rules.len()
            );
            let warmup = distill_watch::replay::Plan::new(cfg, &d.jobs, 0, None, None)?.warmup_ms;
            println!(
                "replay reads {} of event time before --from: the longest chain of windows ({}) plus the streaming margins",
                distill_watch::replay::format_span(warmup),
                distill_watch::replay::format_span(d.jobs.history_ms())
            );
            if cfg.clusters.enabled {
                let m = distill_watch::cluster::ClusterModel::load(&cfg.clusters.model)?;
                println!(
                    "cluster model {} ({}): {} rules over {} windows, clusters of {} to {} accounts",
                    m.scoring.model_version,
                    cfg.clusters.model.display(),
                    m.scoring.rules.len(),
                    distill_watch::config::format_duration_ms(m.limits.window_ms),
                    m.min_members,
                    m.limits.max_members
                );
            }
            Ok(())
        }
        JobsAction::Explain { name } => {
            let d = load_jobs(cfg).await?;
            let job = d.jobs.get(name).with_context(|| {
                let names: Vec<&str> = d.jobs.jobs.iter().map(|j| j.name.as_str()).collect();
                format!("no job named {name:?}; the jobs are: {}", names.join(", "))
            })?;
            println!("job:      {}  ({})", job.name, job.path.display());
            println!("input:    {}  (table `{}`)", job.input, job.table());
            println!("window:   {}", job.window);
            if d.jobs.is_input(&job.name) {
                println!(
                    "held:     its output rows are kept for {} for the roll-ups that read it",
                    distill_watch::config::format_duration_ms(d.jobs.horizon_ms(&job.name))
                );
            }
            println!("{}", d.explain(name).await?);
            Ok(())
        }
        JobsAction::Test { filter } => {
            let report =
                distill_watch::golden::run_dir(&cfg.jobs.dir, cfg, filter.as_deref()).await?;
            print!("{report}");
            if !report.all_passed() {
                bail!(
                    "{} of {} golden tests failed",
                    report.failed(),
                    report.total()
                );
            }
            Ok(())
        }
    }
}

fn config(cli: &Cli, args: &ConfigArgs) -> Result<()> {
    if args.defaults {
        print!("{DEFAULTS_TOML}");
        return Ok(());
    }
    let user = match &cli.config {
        Some(p) => Some((
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )),
        None => None,
    };
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    // Validate as the worker would, then print the merged table.
    Config::from_parts(user.as_ref().map(|(o, t)| (o.as_str(), t.as_str())), &env)?;
    print!(
        "{}",
        Config::effective_toml(user.as_ref().map(|(o, t)| (o.as_str(), t.as_str())), &env)?
    );
    Ok(())
}
