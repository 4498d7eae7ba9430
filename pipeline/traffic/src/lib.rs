//! Labelled synthetic LLM API traffic, from scenario files.
//!
//! A [`Scenario`] (TOML in `deploy/scenarios/`) lists benign populations —
//! many of them false-positive traps — and distillation campaigns in several
//! styles, at the densities reported publicly (`../shared/SIGNALS.md`), plus
//! the streaming faults a real gateway produces. [`generate`] turns it into
//! Confluent-framed Avro records exactly as the gateway would produce them,
//! in delivery order, with the ground truth ([`truth`]) and a count of every
//! injected fault ([`Injected`]). [`write::write_to_kafka`] publishes them.
//!
//! Generation is a pure function of (scenario, seed, scale): no wall clock,
//! no randomised hashing, one seeded random stream per population, so the
//! same inputs give byte-identical records (replays and golden tests rely on
//! it). This crate is for demos, evaluation and tests; the production worker
//! does not depend on it.

mod benign;
mod campaigns;
mod dist;
mod geo;
mod model;
/// Kafka's default partitioner; lives with the worker, which partitions its scores by account.
pub use distill_watch::partition;
pub mod realism;
pub mod scenario;
pub mod truth;
pub mod write;

pub use realism::Injected;
pub use scenario::{Realism, Scenario, ScenarioError};
pub use truth::{Label, TruthRow};
pub use write::{write_to_kafka, GenError, Topics, WriteStats};

impl Record {
    /// As the in-memory broker takes it: delivered at `deliver_ms`.
    pub fn sim(&self) -> distill_watch::simulate::SimRecord<'_> {
        distill_watch::simulate::SimRecord {
            key: &self.key,
            value: &self.value,
            timestamp_ms: self.deliver_ms,
        }
    }
}

impl Traffic {
    /// Requests and responses merged in delivery order, requests first on
    /// ties.
    pub fn merged(&self) -> Vec<(distill_watch::window::Side, &Record)> {
        use distill_watch::window::Side;
        let (requests, responses) = (&self.requests, &self.responses);
        let mut out = Vec::with_capacity(requests.len() + responses.len());
        let (mut i, mut j) = (0, 0);
        while i < requests.len() || j < responses.len() {
            let req_first = j >= responses.len()
                || (i < requests.len() && requests[i].deliver_ms <= responses[j].deliver_ms);
            if req_first {
                out.push((Side::Requests, &requests[i]));
                i += 1;
            } else {
                out.push((Side::Responses, &responses[j]));
                j += 1;
            }
        }
        out
    }

    /// The traffic as the in-memory worker (`simulate::score_stream`) reads
    /// it: account records, then events in delivery order.
    pub fn sim_input(&self) -> distill_watch::simulate::SimInput<'_> {
        distill_watch::simulate::SimInput {
            accounts: self.accounts.iter().map(Record::sim).collect(),
            events: self
                .merged()
                .into_iter()
                .map(|(side, r)| (side, r.sim()))
                .collect(),
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
    /// Event time of the record (epoch millis).
    pub event_time_ms: i64,
    /// When the gateway hands it to Kafka (epoch millis): its place in the
    /// delivery order and its Kafka timestamp. Equal to the event time unless
    /// a streaming fault delayed it.
    pub deliver_ms: i64,
}

/// Generated traffic, its ground truth and its faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    /// Every version of every account that has a record, oldest first.
    pub accounts: Vec<Record>,
    /// `ApiRequest` records in delivery order.
    pub requests: Vec<Record>,
    /// `ApiResponse` records in delivery order.
    pub responses: Vec<Record>,
    /// One row per account that sent at least one request.
    pub truth: Vec<TruthRow>,
    pub injected: Injected,
}

/// Generate `scenario` with `seed`, population sizes multiplied by `scale`.
pub fn generate(scenario: &Scenario, seed: u64, scale: f64) -> Traffic {
    let mut world = model::World::new(seed, scenario.start_ms, scenario.duration_ms, scale);
    if let Some(r) = &scenario.release {
        world = world.with_release(&r.model, scenario.start_ms + r.at_ms);
    }
    for (i, p) in scenario.benign.iter().enumerate() {
        let n = world.scaled(p.accounts);
        // The stream label includes the position, so two populations of
        // one kind draw independently.
        let label = format!("benign/{i}/{}", p.name);
        p.kind.generate(&mut world, &label, &p.name, n);
    }
    for (i, c) in scenario.campaigns.iter().enumerate() {
        let n = world.scaled(c.accounts);
        let label = format!("campaign/{i}/{}", c.id);
        c.style.generate(&mut world, &label, &c.id, n);
    }
    world.finish(&scenario.realism)
}

impl Traffic {
    /// Write the ground truth as CSV (see [`truth`]).
    pub fn write_truth_csv(&self, path: &std::path::Path) -> Result<(), truth::TruthError> {
        truth::write_csv(&self.truth, path)
    }

    /// Ids of the accounts that belong to a distillation campaign.
    pub fn campaign_accounts(&self) -> impl Iterator<Item = &str> {
        self.truth
            .iter()
            .filter(|r| r.label.is_campaign())
            .map(|r| r.account_id.as_str())
    }
}

#[cfg(test)]
mod tests;
