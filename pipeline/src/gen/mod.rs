//! Synthetic API traffic with known ground truth, for demos, tests and
//! threshold calibration.
//!
//! [`generate`] simulates two hours (by default) of gateway traffic: benign
//! populations chosen as false-positive traps (chat users, SaaS backends, an
//! enterprise batch job, a one-off evaluation run, a launch burst) and three
//! distillation campaigns (reasoning-trace harvesting, logit extraction, a
//! hydra cluster), calibrated on `/work/shared/SIGNALS.md`. Output is
//! Confluent-framed Avro exactly as the gateway would produce it, plus a
//! truth table saying which account belongs to which population.
//!
//! Generation is a pure function of [`GenConfig`]: no wall clock, no
//! randomised hashing, one seeded random stream per population, so the same
//! config gives byte-identical records (replays and golden tests rely on it).
//! [`write::write_to_kafka`] then publishes a [`Traffic`].

mod benign;
mod campaigns;
mod dist;
mod geo;
mod model;
pub mod write;

use std::io::Write as _;
use std::path::Path;

pub use write::{write_to_kafka, GenError, Topics, WriteStats};

/// 2026-11-02T00:00:00Z in epoch milliseconds: the default range start. A
/// fixed instant, never the wall clock, so default runs are reproducible.
pub const DEFAULT_START_MS: i64 = 1_793_577_600_000;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Start of the event-time range (epoch millis, inclusive).
    pub start_ms: i64,
    /// Length of the event-time range; request times fall in
    /// `[start_ms, start_ms + duration_ms)`.
    pub duration_ms: i64,
    /// Multiplies the number of accounts per population (each population
    /// keeps at least one account). Per-account rates do not change, because
    /// they are what the detectors look at.
    pub scale: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            start_ms: DEFAULT_START_MS,
            duration_ms: 2 * 60 * 60 * 1000,
            scale: 1.0,
        }
    }
}

/// One Kafka record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Kafka key: the account id.
    pub key: String,
    /// Confluent-framed Avro value.
    pub value: Vec<u8>,
    /// Event time of the record (epoch millis); also its Kafka timestamp.
    pub event_time_ms: i64,
}

/// Which population an account was generated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthRow {
    pub account_id: String,
    /// Population name, e.g. `chat_user`, `hydra_member`.
    pub population: String,
    /// Campaign name for distillation accounts, `None` for benign ones.
    pub campaign: Option<String>,
}

/// Generated traffic and its ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    /// One `Account` record per account (version 1).
    pub accounts: Vec<Record>,
    /// `ApiRequest` records sorted by event time.
    pub requests: Vec<Record>,
    /// `ApiResponse` records sorted by event time; exactly one per request.
    pub responses: Vec<Record>,
    /// One row per account, in the order of `accounts`.
    pub truth: Vec<TruthRow>,
}

/// Generate traffic for `cfg`. Pure and deterministic: the same config gives
/// byte-identical output.
pub fn generate(cfg: &GenConfig) -> Traffic {
    let mut world = model::World::new(cfg.seed, cfg.start_ms, cfg.duration_ms, cfg.scale);
    benign::chat_users(&mut world);
    benign::app_backends(&mut world);
    benign::enterprise_batch(&mut world);
    benign::eval_harness(&mut world);
    benign::launch_burst(&mut world);
    campaigns::cot_harvest(&mut world);
    campaigns::logit_extraction(&mut world);
    campaigns::hydra(&mut world);
    let (accounts, requests, responses, truth) = world.finish();
    Traffic {
        accounts,
        requests,
        responses,
        truth,
    }
}

impl Traffic {
    /// Write the truth table as CSV (`account_id,population,campaign`, empty
    /// campaign for benign accounts), for scoring evaluations.
    pub fn write_truth_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(out, "account_id,population,campaign")?;
        for row in &self.truth {
            // Ids and names are generated from [a-z0-9_-]: no CSV quoting needed.
            writeln!(
                out,
                "{},{},{}",
                row.account_id,
                row.population,
                row.campaign.as_deref().unwrap_or("")
            )?;
        }
        out.flush()
    }

    /// Ids of the accounts that belong to a distillation campaign.
    pub fn campaign_accounts(&self) -> impl Iterator<Item = &str> {
        self.truth
            .iter()
            .filter(|r| r.campaign.is_some())
            .map(|r| r.account_id.as_str())
    }
}

#[cfg(test)]
mod tests;
