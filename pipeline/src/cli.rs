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
    #[arg(
        long,
        global = true,
        env = "RUST_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log: String,

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
    /// Write deterministic synthetic traffic (benign populations and
    /// distillation campaigns) to the event and account topics.
    Gen(GenArgs),
    /// Create the topics the pipeline uses, as configured.
    Topics(TopicsArgs),
    /// Check and test the aggregation jobs in jobs/.
    Jobs(JobsArgs),
    /// Print the effective configuration (defaults, file, environment).
    Config(ConfigArgs),
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
    /// Seed of the generator: the same seed gives byte-identical traffic.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Event-time span of the traffic, e.g. `2h` (generated in seconds).
    #[arg(long, default_value = "2h", value_parser = parse_duration_arg)]
    pub duration: std::time::Duration,
    /// Multiplies population sizes and volumes.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Where to write the ground truth (account → population, campaign) as CSV.
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
    /// Directory for the ground truth and the scores as CSV.
    #[arg(long, default_value = "target/demo", value_name = "DIR")]
    pub out: PathBuf,
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
    /// Parse every job, plan it against the events schema and check the
    /// scoring model only uses features the jobs produce.
    Validate,
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

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(s)
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
