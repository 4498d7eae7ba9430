//! The evaluation report: what `eval` prints, writes as JSON and renders as
//! HTML.

use serde::Serialize;

use super::metrics::Quality;

/// How the scores being evaluated came about.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// The command line that reproduces the run.
    pub command: String,
    /// Scenario, seed and scale when the traffic was generated here.
    pub scenario: Option<String>,
    pub seed: Option<u64>,
    pub scale: Option<f64>,
    /// Event-time span of the generated traffic, in hours.
    pub span_hours: Option<f64>,
    pub exchanges: Option<u64>,
    pub scores_topic: String,
    /// Score records read and accounts they cover.
    pub scores: usize,
    pub accounts_scored: usize,
    /// `model_version` values found in the scores.
    pub model_versions: Vec<String>,
    pub elapsed_s: f64,
}

/// Score thresholds of the levels (from the scoring model).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Levels {
    pub elevated: f64,
    pub high: f64,
    pub critical: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub run: RunInfo,
    pub levels: Levels,
    pub quality: Quality,
    /// Streaming faults the generator injected (name, count), when known.
    pub injected: Vec<(String, u64)>,
    /// Worker counters of the scoring run (name, value), when it ran here.
    pub counters: Vec<(String, u64)>,
    /// Worker counters that must equal an injected fault: (what, injected,
    /// counted), when the traffic was generated and scored here.
    pub fault_checks: Vec<(String, u64, u64)>,
}
