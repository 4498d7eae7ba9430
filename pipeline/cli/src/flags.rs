//! Every command-line flag, in one place; `--help` is generated from these
//! doc comments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "distill-watch",
    version,
    about = "Streaming detector for LLM distillation attacks: API events in, explainable risk scores out.",
    long_about = "Streaming detector for LLM distillation attacks.\n\nReads API request/response events (Avro) from Kafka, joins and enriches them with account metadata, runs windowed SQL aggregations (jobs/*.sql) with DataFusion and publishes explainable per-account distillation-risk scores to Kafka.\n\nStart with `distill-watch demo`."
)]
pub struct Cli {
    /// Configuration file (TOML). Keys it lacks keep their defaults; see
    /// `distill-watch config --defaults`.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "DISTILL_WATCH_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Log filter, e.g. `info`, `debug`, `distill_watch=debug,rdkafka=warn`.
    /// Defaults to `info` for `run`, and to `warn` for the commands that show
    /// progress bars (`demo`, `eval`, `gen`).
    #[arg(long, global = true, env = "RUST_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole thing on a local broker: start it, create topics,
    /// generate labelled traffic, score it, print the riskiest accounts and
    /// precision/recall against the ground truth, stop the broker.
    Demo(DemoArgs),
    /// Run a worker: consume events, emit risk scores. Scale out by starting
    /// more workers with the same group id.
    Run(RunArgs),
    /// Write deterministic labelled traffic from a scenario (benign
    /// populations, distillation campaigns, streaming faults) to the event
    /// and account topics, and its ground truth to a CSV file.
    Gen(GenArgs),
    /// Score labelled traffic and report detection quality per attack style
    /// and benign population: recall, campaigns detected, time to detect,
    /// false positives per 1,000 accounts, precision. Prints a table, writes
    /// JSON and an HTML report with plots.
    Eval(EvalArgs),
    /// List the scenarios built into the binary (deploy/scenarios/).
    Scenarios,
    /// Create the topics the pipeline uses, as configured.
    Topics(TopicsArgs),
    /// Check and test the aggregation jobs in jobs/.
    Jobs(JobsArgs),
    /// Print the effective configuration (defaults, file, environment).
    Config(ConfigArgs),
    /// Measure throughput, per-stage cost and memory: labelled traffic,
    /// pre-encoded in memory, through the production worker loop with no
    /// broker, against the decoder alone (the decode floor). Release build
    /// recommended: `cargo run --release -p distill-watch -- bench`.
    Bench(BenchArgs),
    /// Score a range of history by event time, as the live workers scored
    /// it, into a topic or a file: the records are byte-identical to the
    /// live ones for the same windows. Reads the event topics from before
    /// --from (the roll-ups' history), writes nothing to the live topics and
    /// commits no offsets. A progress bar on a terminal.
    Replay(ReplayArgs),
    /// Try a candidate scoring model (and jobs) on a range of history before
    /// rolling it out: replays the range with the live jobs and model and
    /// with the candidate, publishes nothing, and prints what would change:
    /// accounts whose level moves, new and lost flags, per attack style or
    /// population with --truth.
    Shadow(ShadowArgs),
    /// Live terminal view of risk.scores.v1 and risk.clusters.v1: the
    /// riskiest accounts and clusters now, with their reasons, updating as
    /// records arrive. Keys: s sort, Tab switch table, Up/Down/PgUp/PgDn
    /// select, Enter an account's history (Esc back), q quit. Without a
    /// terminal, prints one snapshot of both topics read to their end.
    Top(TopArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stop once every assigned partition was read to its end, after
    /// emitting all open windows (for finished ranges and tests).
    #[arg(long)]
    pub exit_at_eof: bool,
}

#[derive(Debug, Args, Clone)]
pub struct TrafficArgs {
    /// Scenario: a built-in name (see `distill-watch scenarios`) or a path
    /// to a scenario TOML file. The default depends on the command.
    #[arg(long, value_name = "NAME|FILE")]
    pub scenario: Option<String>,
    /// Seed of the generator (default: the scenario's). The same scenario,
    /// seed and scale give byte-identical traffic.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Multiplies the number of accounts of every population and campaign;
    /// per-account behaviour does not change.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Where to write the ground truth (account, label, style, campaign id,
    /// first request) as CSV.
    #[arg(long, default_value = "ground-truth.csv", value_name = "FILE")]
    pub truth: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Use this running broker (host:port) instead of starting a local one.
    /// Topics get a unique suffix so earlier runs do not mix in.
    #[arg(long, env = "DISTILL_WATCH_DEMO_BROKER", value_name = "HOST:PORT")]
    pub broker: Option<String>,
    /// Accounts shown in the ranked table.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Directory for the ground truth, the per-account maxima and the
    /// evaluation (JSON, HTML).
    #[arg(long, default_value = "target/demo", value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Evaluate labelled traffic that is already on the broker, described by
    /// this ground-truth CSV (columns account_id, label, style, campaign_id
    /// and optionally first_request_ms; see docs/DETECTION.md), instead of
    /// generating a scenario. The pipeline is run over the configured event
    /// topics into a fresh scores topic, unless --scores-topic is given.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["scenario", "seed"])]
    pub truth: Option<PathBuf>,
    /// With --truth: the scores were already written to this topic; read and
    /// evaluate them without running the pipeline.
    #[arg(long, value_name = "TOPIC", requires = "truth")]
    pub scores_topic: Option<String>,
    /// Use this running broker (host:port). Without it, generated traffic
    /// goes to a local broker started for the run, and --truth reads from
    /// the configured bootstrap servers.
    #[arg(long, value_name = "HOST:PORT")]
    pub broker: Option<String>,
    /// Directory for the ground truth, eval.json and eval.html.
    #[arg(long, default_value = "target/eval", value_name = "DIR")]
    pub out: PathBuf,
    /// Write the JSON report here instead of DIR/eval.json (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the HTML report here instead of DIR/eval.html.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also write every score to DIR/features.tsv, one record a line:
    /// account, window end (epoch ms), score, then `name=value` for each
    /// non-NULL feature of an account score, or `cluster=ID` for a member
    /// score. For calibrating a scoring model offline.
    #[arg(long)]
    pub features: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Input traffic (default scenario: eval, 48 hours, about 940,000
    /// exchanges at scale 1).
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Generate this many hours of event time instead of the scenario's
    /// span (a model release moves into the span). With --scale, sets how
    /// many events each 10-minute window holds: the same traffic in fewer
    /// hours from more accounts is denser, as a provider's gateway is.
    #[arg(long, value_name = "HOURS")]
    pub hours: Option<f64>,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Only the in-process figures: no broker.
    #[arg(long)]
    pub in_process_only: bool,
    /// Run the broker figures on this running broker (host:port; topics
    /// get a unique suffix) instead of a local one started for the run.
    #[arg(long, value_name = "HOST:PORT")]
    pub broker: Option<String>,
    /// How long the live run producing at half the measured one-worker
    /// rate lasts, for the window close → ack latency (0: skip it).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub latency_seconds: f64,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("output").required(true).args(["topic", "out"])))]
pub struct ReplayArgs {
    /// Start of the range, in event time: windows starting at or after it
    /// are written. RFC 3339 (`2026-12-01T10:00:00Z`, or with an offset), a
    /// date and time without a zone (UTC), a date (midnight UTC) or epoch
    /// milliseconds.
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// End of the range: windows ending at or before it are written.
    /// Default: the end of the topics when the replay gets there.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Write the scores to this topic, keyed and partitioned like the live
    /// scores topic (created with its partition count when missing; a live
    /// topic is refused).
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// Write the scores to this file: JSON lines (`.jsonl`; `-` for
    /// standard output) or Parquet (`.parquet`). Ordered by window end,
    /// window start, key and revision: the same bytes on every replay.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Format of --out when its extension does not say.
    #[arg(long, value_enum, requires = "out")]
    pub format: Option<ReplayFormat>,
    /// Event time to read before --from, for the roll-ups (default: the
    /// jobs' longest chain of windows plus the streaming margins, which
    /// reproduces the live scores exactly; `jobs validate` prints it).
    /// Shorter is faster, and roll-up features near --from may then differ.
    #[arg(long, value_name = "DURATION")]
    pub warmup: Option<String>,
    /// Read at most this many event messages a second (both topics), to
    /// spare a busy cluster.
    #[arg(long, value_name = "MESSAGES")]
    pub max_rate: Option<u64>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("candidate").required(true).multiple(true).args(["scoring", "jobs"])))]
pub struct ShadowArgs {
    /// The candidate scoring model (default: the candidate jobs
    /// directory's scoring.toml).
    #[arg(long, value_name = "FILE")]
    pub scoring: Option<PathBuf>,
    /// The candidate jobs directory (default: the live one).
    #[arg(long, value_name = "DIR")]
    pub jobs: Option<PathBuf>,
    /// Start of the range, in event time (as for `replay`; also `now`,
    /// `now-1h`).
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// End of the range (default: the end of the topics).
    #[arg(long, value_name = "TIME", conflicts_with = "follow")]
    pub to: Option<String>,
    /// Live traffic: both models keep scoring records as they arrive, side
    /// by side, until Ctrl-C (or --for); then the windows both have scored
    /// are compared. `--from now` starts at the present (the roll-ups'
    /// history is read first).
    #[arg(long)]
    pub follow: bool,
    /// With --follow: stop after this long (e.g. `30m`).
    #[arg(long = "for", value_name = "DURATION", requires = "follow")]
    pub for_: Option<String>,
    /// Ground truth CSV (as `gen` writes it): counts per attack style and
    /// benign population.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// An account is flagged when its highest level in the range reaches
    /// this: low, elevated, high or critical.
    #[arg(long, default_value = "high", value_name = "LEVEL")]
    pub flag_level: String,
    /// Changed accounts listed, largest move first.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// Also write the whole comparison (every changed account, the new and
    /// lost flags, the groups) as JSON to this file (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    /// One JSON object a line: the fields of the RiskScore record.
    Jsonl,
    /// Apache Parquet, one row a score.
    Parquet,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Start at the end of the topics (only records published from now on)
    /// instead of the beginning. The snapshot always reads them whole.
    #[arg(long)]
    pub from_end: bool,
    /// Rows shown per table (default: as many as fit the screen; the
    /// snapshot shows 20 accounts and 10 clusters).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print one plain-text snapshot (both topics read to their current
    /// end) and exit, even on a terminal.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(subcommand)]
    pub action: TopicsAction,
}

#[derive(Debug, Subcommand)]
pub enum TopicsAction {
    /// Create every topic (existing ones are left alone).
    Create {
        /// Partitions of the event, score and DLQ topics. Requests and
        /// responses always get the same count (they are co-partitioned).
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub action: JobsAction,
}

#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// Parse every job, check its window and input declarations, plan it
    /// against its input table, check the scoring model only uses features
    /// the jobs produce, and print the jobs in dependency order.
    Validate,
    /// Print one job's header and its DataFusion plan (logical and
    /// physical) over its input table.
    Explain {
        /// The job's name (its `-- name:`).
        name: String,
    },
    /// Run the golden tests in jobs/tests/*.test.
    Test {
        /// Only tests whose file name contains this.
        filter: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the documented defaults (deploy/distill-watch.toml) instead.
    #[arg(long)]
    pub defaults: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_help() {
        for sub in Cli::command().get_subcommands() {
            assert!(sub.get_about().is_some(), "{} lacks help", sub.get_name());
        }
    }
}
