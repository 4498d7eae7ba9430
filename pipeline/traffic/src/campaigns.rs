//! Distillation campaigns, in the styles the public reports describe
//! (`../shared/SIGNALS.md`), at the densities they report.
//!
//! The reported campaigns averaged ~670–1,150 exchanges per account over
//! lives of weeks: about one request an hour. At that density one account is
//! unremarkable in any ten-minute window. What gives a campaign away is what
//! its accounts share (cards, IP prefixes, templates, system prompts, sign-up
//! bursts, one dispatcher's schedule), what its prompts ask for (reasoning
//! traces, tool traces, logits, systematic coverage) and what piles up over
//! hours and days. Each style plants those signals as strongly as a real
//! operator would leave them and no more: operators still have to get their
//! data, and they hide only as far as that allows. None of them is tuned to
//! the detector in `jobs/`.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Deserialize;

use crate::dist::{
    diurnal, fingerprint, geometric, int, local_hour, lognormal, pick, poisson_times,
    regular_times, uniform, weighted, zipf_weights, DAY_MS, HOUR_MS, MINUTE_MS,
};
use crate::geo::{self, cloud_prefix, ip_in, SCRIPT_AGENTS, SDK_AGENTS};
use crate::model::{
    Account, Faults, Outcome, Req, World, EP_COMPLETIONS, EP_MESSAGES, MODEL_LARGE, MODEL_SMALL,
};
use crate::scenario::params;
use crate::truth::Label;

pub const HYDRA_SHARED_CARD: &str = "hydra_shared_card";
pub const HYDRA_PROXY: &str = "hydra_proxy";
pub const COT_HARVEST: &str = "cot_harvest";
pub const TOOL_HARVEST: &str = "tool_harvest";
pub const LOGIT_LOUD: &str = "logit_loud";
pub const LOGIT_THIN: &str = "logit_thin";
pub const TAXONOMY_SWEEP: &str = "taxonomy_sweep";
pub const MULTILINGUAL_COT: &str = "multilingual_cot";
pub const MODEL_PIVOT: &str = "model_pivot";

/// One distillation campaign style with its parameters.
#[derive(Debug, Clone)]
pub enum Campaign {
    HydraSharedCard(HydraSharedCard),
    HydraProxy(HydraProxy),
    CotHarvest(CotHarvest),
    ToolHarvest(ToolHarvest),
    LogitLoud(LogitLoud),
    LogitThin(LogitThin),
    TaxonomySweep(TaxonomySweep),
    MultilingualCot(MultilingualCot),
    ModelPivot(ModelPivot),
}

impl Campaign {
    pub const STYLES: &'static [&'static str] = &[
        HYDRA_SHARED_CARD,
        HYDRA_PROXY,
        COT_HARVEST,
        TOOL_HARVEST,
        LOGIT_LOUD,
        LOGIT_THIN,
        TAXONOMY_SWEEP,
        MULTILINGUAL_COT,
        MODEL_PIVOT,
    ];

    /// Parse a style's params (the `[[campaign]]` table minus style/id/accounts).
    /// Unknown keys are errors.
    pub fn parse(style: &str, t: toml::Table) -> Result<Campaign, String> {
        let c = match style {
            HYDRA_SHARED_CARD => Campaign::HydraSharedCard(params(t)?),
            HYDRA_PROXY => Campaign::HydraProxy(params(t)?),
            COT_HARVEST => Campaign::CotHarvest(params(t)?),
            TOOL_HARVEST => Campaign::ToolHarvest(params(t)?),
            LOGIT_LOUD => Campaign::LogitLoud(params(t)?),
            LOGIT_THIN => Campaign::LogitThin(params(t)?),
            TAXONOMY_SWEEP => Campaign::TaxonomySweep(params(t)?),
            MULTILINGUAL_COT => Campaign::MultilingualCot(params(t)?),
            MODEL_PIVOT => Campaign::ModelPivot(params(t)?),
            other => {
                return Err(format!(
                    "unknown campaign style {other:?}; known: {}",
                    Self::STYLES.join(", ")
                ))
            }
        };
        c.check()?;
        Ok(c)
    }

    /// The style name written to the ground truth.
    pub fn style(&self) -> &'static str {
        match self {
            Campaign::HydraSharedCard(_) => HYDRA_SHARED_CARD,
            Campaign::HydraProxy(_) => HYDRA_PROXY,
            Campaign::CotHarvest(_) => COT_HARVEST,
            Campaign::ToolHarvest(_) => TOOL_HARVEST,
            Campaign::LogitLoud(_) => LOGIT_LOUD,
            Campaign::LogitThin(_) => LOGIT_THIN,
            Campaign::TaxonomySweep(_) => TAXONOMY_SWEEP,
            Campaign::MultilingualCot(_) => MULTILINGUAL_COT,
            Campaign::ModelPivot(_) => MODEL_PIVOT,
        }
    }

    fn check(&self) -> Result<(), String> {
        match self {
            Campaign::HydraSharedCard(p) => p.check(),
            Campaign::HydraProxy(p) => p.check(),
            Campaign::CotHarvest(p) => p.check(),
            Campaign::ToolHarvest(p) => p.check(),
            Campaign::LogitLoud(p) => p.check(),
            Campaign::LogitThin(p) => p.check(),
            Campaign::TaxonomySweep(p) => p.check(),
            Campaign::MultilingualCot(p) => p.check(),
            Campaign::ModelPivot(p) => p.check(),
        }
    }

    /// Whether the style needs the scenario to release a new model.
    pub fn needs_release(&self) -> bool {
        matches!(self, Campaign::ModelPivot(_))
    }

    /// Generate one campaign with `accounts` member accounts, labelled
    /// `Label::campaign(style, campaign_id)`, drawing randomness only from
    /// streams derived from `stream`.
    pub fn generate(&self, w: &mut World, stream: &str, campaign_id: &str, accounts: usize) {
        if accounts == 0 {
            return;
        }
        let label = Label::campaign(self.style(), campaign_id);
        let run = Run {
            stream,
            label: &label,
            n: accounts,
        };
        match self {
            Campaign::HydraSharedCard(p) => p.generate(w, &run),
            Campaign::HydraProxy(p) => p.generate(w, &run),
            Campaign::CotHarvest(p) => p.generate(w, &run),
            Campaign::ToolHarvest(p) => p.generate(w, &run),
            Campaign::LogitLoud(p) => p.generate(w, &run),
            Campaign::LogitThin(p) => p.generate(w, &run),
            Campaign::TaxonomySweep(p) => p.generate(w, &run),
            Campaign::MultilingualCot(p) => p.generate(w, &run),
            Campaign::ModelPivot(p) => p.generate(w, &run),
        }
    }
}

/// What every style's generator is handed.
struct Run<'a> {
    stream: &'a str,
    label: &'a Label,
    n: usize,
}

impl Run<'_> {
    /// A sub-stream, so that one account's or one phase's draws do not shift
    /// every other's when a parameter changes.
    fn rng(&self, w: &World, part: &str) -> StdRng {
        w.rng(&format!("{}/{part}", self.stream))
    }
}

// ---------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------

/// A hydra cluster paying with one card: many unverified accounts created
/// together, driven round-robin by one dispatcher.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HydraSharedCard {
    /// Average requests per member per hour, harvesting and resold traffic
    /// together. Reported: ~16M exchanges / ~24,000 accounts ≈ 670 per
    /// account, and 28.8M / 25,000 in six weeks ≈ 1,150 per account ≈ 27 a
    /// day: about 1.1 an hour.
    pub member_requests_per_hour: f64,
    /// Share of the members' requests that are ordinary resold customer
    /// traffic (SIGNALS.md: "mixing distillation traffic with ordinary
    /// customer traffic"); the share itself is an assumption.
    pub ordinary_share: f64,
    /// Orgs the members are spread over (assumption: "a few orgs").
    pub orgs: usize,
    /// Cloud /24 prefixes the operator's servers call from (assumption).
    pub ip_prefixes: usize,
    /// Prompt templates of the harvesting script, shared by all members
    /// (SIGNALS.md: "highly repetitive prompt structure"; count assumed).
    pub templates: usize,
    /// Capability areas harvested, most-used first (SIGNALS.md: "volume
    /// concentrated in narrow capability areas").
    pub topics: Vec<String>,
    /// Share of harvesting prompts that ask for the reasoning to be written
    /// out (assumption).
    pub cot_share: f64,
    /// Share of harvesting requests with extended reasoning on (assumption).
    pub reasoning_share: f64,
    /// Sign-up bursts the members were registered in (SIGNALS.md: accounts
    /// created together through education / research / startup paths).
    pub signup_bursts: usize,
    /// Length of one sign-up burst.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub signup_burst_length: Duration,
    /// Sign-up bursts lie this many days before the span, [min, max]
    /// (assumption: days to weeks).
    pub created_days: [f64; 2],
    /// Share of members that passed verification (assumption: almost none).
    pub verified_share: f64,
    /// Share of the time the harvesting job runs; the rest are pauses
    /// (dataset shards done, crashes). Density above is the average.
    pub duty_cycle: f64,
    /// Mean length of one active period of the job.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub active_period: Duration,
    /// Coefficient of variation of the dispatcher's gaps between requests
    /// (≪ 1: scripted).
    pub timing_cv: f64,
    /// Members banned per member-day; each is replaced at once by a fresh
    /// account on the same card (SIGNALS.md: "a banned account was replaced
    /// at once"; the rate is an assumption).
    pub bans_per_member_day: f64,
    /// Share of members moved to a second shared card part-way through the
    /// span, as when the first card starts being declined (assumption).
    pub card_swap_share: f64,
}

impl Default for HydraSharedCard {
    fn default() -> Self {
        HydraSharedCard {
            member_requests_per_hour: 1.1,
            ordinary_share: 0.2,
            orgs: 3,
            ip_prefixes: 3,
            templates: 12,
            topics: strings(&["reasoning", "math", "coding"]),
            cot_share: 0.7,
            reasoning_share: 0.7,
            signup_bursts: 2,
            signup_burst_length: Duration::from_secs(2 * 3600),
            created_days: [3.0, 14.0],
            verified_share: 0.0,
            duty_cycle: 0.85,
            active_period: Duration::from_secs(8 * 3600),
            timing_cv: 0.3,
            bans_per_member_day: 0.03,
            card_swap_share: 0.25,
        }
    }
}

/// A proxy / reseller network: each member on its own card, traffic through
/// shared exits, most of it ordinary resold customer traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HydraProxy {
    /// Average requests per member per hour, all kinds. Reported ≈ 670–1,150
    /// exchanges per account over weeks ≈ 1.1 an hour (see
    /// `hydra_shared_card`); "one proxy network ran over 20,000 accounts at
    /// once".
    pub member_requests_per_hour: f64,
    /// Share of ordinary resold customer requests (SIGNALS.md: "mixing
    /// distillation traffic with ordinary customer traffic"; share assumed).
    pub ordinary_share: f64,
    /// Share of members on a card shared with 1–4 others (assumption: a
    /// handful of small card groups; the rest each have their own card).
    pub card_group_share: f64,
    /// Shared cloud /24 prefixes of the network's exits (SIGNALS.md:
    /// attribution used "IP correlation"; count assumed).
    pub ip_prefixes: usize,
    /// Share of requests leaving through residential proxy exits instead,
    /// scattered over ISP ranges (assumption).
    pub residential_share: f64,
    /// Share of a member's cloud-exit requests that use its own sticky exit
    /// prefix rather than any of the network's.
    pub sticky_share: f64,
    /// Distinct user agents of the network's client (assumption).
    pub user_agents: usize,
    /// Prompt templates of the harvesting scripts, shared by all members.
    pub templates: usize,
    /// Capability areas harvested, most-used first (the 3.4M and 13M
    /// campaigns: agentic reasoning, tool use, coding).
    pub topics: Vec<String>,
    /// Share of harvesting prompts that ask for the reasoning to be written
    /// out (assumption).
    pub cot_share: f64,
    /// Share of harvesting requests with extended reasoning on (assumption).
    pub reasoning_share: f64,
    /// Share of harvesting requests that carry tool definitions (agentic
    /// traces; assumption).
    pub tool_share: f64,
    /// Sign-up bursts the fresh members were registered in.
    pub signup_bursts: usize,
    /// Length of one sign-up burst.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub signup_burst_length: Duration,
    /// Sign-up bursts lie this many days before the span, [min, max].
    pub created_days: [f64; 2],
    /// Share of members that are aged accounts bought or taken over, months
    /// old, not from a burst (assumption).
    pub aged_share: f64,
    /// Share of fresh members that passed verification (assumption).
    pub verified_share: f64,
    /// Share of the time the harvesting jobs run.
    pub duty_cycle: f64,
    /// Mean length of one active period.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub active_period: Duration,
    /// Coefficient of variation of the dispatcher's gaps.
    pub timing_cv: f64,
    /// Members banned per member-day, each replaced at once by a fresh
    /// account with a fresh card (assumption).
    pub bans_per_member_day: f64,
    /// UTC offset (hours) of the resold customers, whose traffic follows
    /// their daytime (assumption).
    pub customer_utc_offset: f64,
}

impl Default for HydraProxy {
    fn default() -> Self {
        HydraProxy {
            member_requests_per_hour: 1.1,
            ordinary_share: 0.5,
            card_group_share: 0.1,
            ip_prefixes: 6,
            residential_share: 0.25,
            sticky_share: 0.7,
            user_agents: 2,
            templates: 40,
            topics: strings(&["coding", "reasoning", "math"]),
            cot_share: 0.5,
            reasoning_share: 0.6,
            tool_share: 0.2,
            signup_bursts: 6,
            signup_burst_length: Duration::from_secs(3 * 3600),
            created_days: [2.0, 30.0],
            aged_share: 0.1,
            verified_share: 0.05,
            duty_cycle: 0.9,
            active_period: Duration::from_secs(12 * 3600),
            timing_cv: 0.4,
            bans_per_member_day: 0.02,
            customer_utc_offset: 8.0,
        }
    }
}

/// Chain-of-thought harvesting as in the ~150k-exchange campaign: reasoning
/// traces, rubric grading, rewriting of policy-sensitive queries.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CotHarvest {
    /// Average requests per account per hour. Assumption consistent with the
    /// ~150k-exchange campaign run by a few accounts: 150k / (15 accounts ×
    /// 21 days × 24 h) ≈ 20.
    pub requests_per_hour: f64,
    /// Weights of the three reported tasks: [reasoning traces ("articulate
    /// the reasoning behind a completed response step by step"), rubric
    /// grading (the model as reward model), rewriting policy-sensitive
    /// queries]. Weights assumed.
    pub task_mix: [f64; 3],
    /// Templates in the campaign's pool; each account uses a subset.
    pub templates: usize,
    /// Templates each account draws from (assumption).
    pub templates_per_account: usize,
    /// Capability areas, most-used first (the campaign targeted reasoning).
    pub topics: Vec<String>,
    /// Share of prompts re-sent unchanged (retries, items sampled again).
    pub duplicate_share: f64,
    /// Accounts sharing one card (assumption; SIGNALS.md names shared
    /// payment methods among the coordination signals).
    pub accounts_per_card: usize,
    /// Cloud /24 prefixes the accounts call from.
    pub ip_prefixes: usize,
    /// Accounts were created this many days before the span, [min, max].
    pub created_days: [f64; 2],
    /// Share of verified accounts (assumption).
    pub verified_share: f64,
    /// Share of the time the jobs run (all accounts together: one operator).
    pub duty_cycle: f64,
    /// Mean length of one active period.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub active_period: Duration,
    /// Coefficient of variation of one account's gaps between requests.
    pub timing_cv: f64,
}

impl Default for CotHarvest {
    fn default() -> Self {
        CotHarvest {
            requests_per_hour: 20.0,
            task_mix: [0.6, 0.25, 0.15],
            templates: 16,
            templates_per_account: 8,
            topics: strings(&["reasoning", "math", "coding"]),
            duplicate_share: 0.06,
            accounts_per_card: 3,
            ip_prefixes: 2,
            created_days: [1.0, 14.0],
            verified_share: 0.1,
            duty_cycle: 0.7,
            active_period: Duration::from_secs(4 * 3600),
            timing_cv: 0.5,
        }
    }
}

/// Tool-use / agentic trace harvesting as in the ~3.4M and ~13M campaigns.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolHarvest {
    /// Average requests (agent turns) per account per hour. Reported ≈
    /// 670–1,150 exchanges per account over weeks ≈ 1.1 an hour.
    pub requests_per_hour: f64,
    /// Mean turns of one synthetic agent session (assumption).
    pub turns_per_session: f64,
    /// Tool definitions per request, [min, max] (assumption).
    pub tools_per_request: [i64; 2],
    /// Probability that a session reuses a tool schema the campaign used
    /// before; otherwise it invents a new one (SIGNALS.md: "many distinct
    /// tool schemas, synthetic tool results").
    pub schema_reuse: f64,
    /// Agent system prompts shared by the campaign's accounts (assumption).
    pub system_prompts: usize,
    /// Task templates of the campaign (assumption).
    pub templates: usize,
    /// Capability areas, most-used first (agentic coding and tool use).
    pub topics: Vec<String>,
    /// Share of requests with extended reasoning on (assumption).
    pub reasoning_share: f64,
    /// Share of accounts on a card shared with 1–3 others (assumption).
    pub card_group_share: f64,
    /// Shared cloud /24 prefixes (proxy exits).
    pub ip_prefixes: usize,
    /// Share of requests through residential proxy exits (assumption).
    pub residential_share: f64,
    /// Accounts were created this many days before the span, [min, max].
    pub created_days: [f64; 2],
    /// Share of aged accounts, months old (assumption).
    pub aged_share: f64,
    /// Share of verified accounts (assumption).
    pub verified_share: f64,
    /// Share of the time the harness runs.
    pub duty_cycle: f64,
    /// Mean length of one active period.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub active_period: Duration,
}

impl Default for ToolHarvest {
    fn default() -> Self {
        ToolHarvest {
            requests_per_hour: 1.1,
            turns_per_session: 8.0,
            tools_per_request: [6, 30],
            schema_reuse: 0.1,
            system_prompts: 3,
            templates: 30,
            topics: strings(&["coding", "reasoning", "other"]),
            reasoning_share: 0.6,
            card_group_share: 0.2,
            ip_prefixes: 6,
            residential_share: 0.2,
            created_days: [3.0, 35.0],
            aged_share: 0.15,
            verified_share: 0.1,
            duty_cycle: 0.9,
            active_period: Duration::from_secs(12 * 3600),
        }
    }
}

/// Logit-level extraction (Carlini et al. 2024), run loud from few accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogitLoud {
    /// Requests per minute while an extraction job runs, near the tier's
    /// rate limit (assumption).
    pub requests_per_minute: f64,
    /// Share of the time a job runs; extraction is a finite job, hours long
    /// (assumption).
    pub duty_cycle: f64,
    /// Mean length of one job.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub active_period: Duration,
    /// Alternatives per position asked for: the maximum the API allows
    /// (Carlini et al.).
    pub top_logprobs: i64,
    /// Token ids in each logit_bias map, [min, max] (Carlini et al.: biases
    /// over many token ids).
    pub logit_bias_size: [i64; 2],
    /// Share of requests with max_tokens = 1 (Carlini et al.: "often").
    pub max_tokens_one_share: f64,
    /// Probe prompts of one account (assumption).
    pub probe_prompts: usize,
    /// Requests sent per probe prompt before moving on, [min, max]: one
    /// logit vector needs many bias maps (assumption).
    pub requests_per_probe: [i64; 2],
    /// Share of requests answered 429 (near the limit).
    pub rate_limited_share: f64,
    /// Accounts were created this many days before the span, [min, max].
    pub created_days: [f64; 2],
}

impl Default for LogitLoud {
    fn default() -> Self {
        LogitLoud {
            requests_per_minute: 40.0,
            duty_cycle: 0.25,
            active_period: Duration::from_secs(2 * 3600),
            top_logprobs: 20,
            logit_bias_size: [100, 300],
            max_tokens_one_share: 0.95,
            probe_prompts: 16,
            requests_per_probe: [200, 800],
            rate_limited_share: 0.05,
            created_days: [1.0, 10.0],
        }
    }
}

/// The same logit extraction spread thinly over many accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogitThin {
    /// Average requests per account per hour (assumption: low enough that no
    /// account is loud).
    pub requests_per_hour: f64,
    /// top_logprobs values used, with weights (some look like researchers'
    /// 5).
    pub top_logprobs: Vec<(i64, f64)>,
    /// Token ids in a logit_bias map, [min, max]: smaller maps, more queries.
    pub logit_bias_size: [i64; 2],
    /// Share of requests with no logit_bias at all (top-k only probes).
    pub no_bias_share: f64,
    /// Share of requests with max_tokens = 1 (else 2–16).
    pub max_tokens_one_share: f64,
    /// Probe prompts shared by all accounts (assumption).
    pub probe_prompts: usize,
    /// Requests per probe prompt, spread over the accounts, [min, max].
    pub requests_per_probe: [i64; 2],
    /// Shared cloud /24 prefixes.
    pub ip_prefixes: usize,
    /// Share of requests through residential proxy exits.
    pub residential_share: f64,
    /// Accounts were created this many days before the span, [min, max].
    pub created_days: [f64; 2],
    /// Share of aged accounts, months old.
    pub aged_share: f64,
    /// Share of verified accounts.
    pub verified_share: f64,
    /// Share of the time the job runs.
    pub duty_cycle: f64,
    /// Mean length of one active period.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub active_period: Duration,
    /// Coefficient of variation of the dispatcher's gaps.
    pub timing_cv: f64,
}

impl Default for LogitThin {
    fn default() -> Self {
        LogitThin {
            requests_per_hour: 4.0,
            top_logprobs: vec![(5, 0.3), (10, 0.2), (20, 0.5)],
            logit_bias_size: [5, 60],
            no_bias_share: 0.2,
            max_tokens_one_share: 0.75,
            probe_prompts: 40,
            requests_per_probe: [100, 400],
            ip_prefixes: 4,
            residential_share: 0.3,
            created_days: [5.0, 60.0],
            aged_share: 0.3,
            verified_share: 0.2,
            duty_cycle: 0.6,
            active_period: Duration::from_secs(8 * 3600),
            timing_cv: 0.5,
        }
    }
}

/// Systematic sweep of a capability taxonomy, each seed question paraphrased.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaxonomySweep {
    /// Average requests per account per hour (assumption).
    pub requests_per_hour: f64,
    /// Areas swept evenly (SIGNALS.md: "unusually broad systematic
    /// coverage").
    pub topics: Vec<String>,
    /// Paraphrases of each seed question, [min, max] (same template,
    /// different prompt).
    pub paraphrases: [i64; 2],
    /// Completions per request.
    pub n: i64,
    /// Share of requests with extended reasoning on.
    pub reasoning_share: f64,
    /// Share of prompts asking for step-by-step answers.
    pub cot_share: f64,
    /// Accounts sharing one card.
    pub accounts_per_card: usize,
    /// Cloud /24 prefixes.
    pub ip_prefixes: usize,
    /// Accounts were created this many days before the span, [min, max].
    pub created_days: [f64; 2],
    /// Share of verified accounts.
    pub verified_share: f64,
    /// Share of the time the sweep runs.
    pub duty_cycle: f64,
    /// Mean length of one active period.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub active_period: Duration,
    /// Coefficient of variation of gaps (SIGNALS.md: machine-regular).
    pub timing_cv: f64,
}

impl Default for TaxonomySweep {
    fn default() -> Self {
        TaxonomySweep {
            requests_per_hour: 12.0,
            topics: strings(TOPICS),
            paraphrases: [3, 6],
            n: 1,
            reasoning_share: 0.3,
            cot_share: 0.3,
            accounts_per_card: 2,
            ip_prefixes: 2,
            created_days: [2.0, 20.0],
            verified_share: 0.1,
            duty_cycle: 0.9,
            active_period: Duration::from_secs(24 * 3600),
            timing_cv: 0.1,
        }
    }
}

/// Reasoning-trace harvesting in many languages (Google, Feb 2026).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultilingualCot {
    /// Average requests per account per hour (assumption: 100,000+ prompts
    /// over ~2 weeks from ~20 accounts ≈ 15).
    pub requests_per_hour: f64,
    /// Prompt languages with weights, ISO 639-1 ("many not in English").
    pub languages: BTreeMap<String, f64>,
    /// Languages each seed question is asked in, [min, max].
    pub translations: [i64; 2],
    /// Templates per language, shared by the accounts.
    pub templates_per_language: usize,
    /// Capability areas, most-used first.
    pub topics: Vec<String>,
    /// Share of prompts asking for the reasoning written out.
    pub cot_share: f64,
    /// Share of requests with extended reasoning on.
    pub reasoning_share: f64,
    /// Cloud /24 prefixes.
    pub ip_prefixes: usize,
    /// Accounts were created this many days before the span, [min, max].
    pub created_days: [f64; 2],
    /// Share of verified accounts.
    pub verified_share: f64,
    /// Share of the time the job runs.
    pub duty_cycle: f64,
    /// Mean length of one active period.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub active_period: Duration,
    /// Coefficient of variation of one account's gaps.
    pub timing_cv: f64,
}

impl Default for MultilingualCot {
    fn default() -> Self {
        let languages = [
            ("en", 0.30),
            ("zh", 0.16),
            ("ja", 0.09),
            ("ko", 0.09),
            ("es", 0.09),
            ("pt", 0.07),
            ("fr", 0.07),
            ("de", 0.07),
            ("hi", 0.06),
        ];
        MultilingualCot {
            requests_per_hour: 15.0,
            languages: languages.iter().map(|(l, x)| (l.to_string(), *x)).collect(),
            translations: [2, 5],
            templates_per_language: 6,
            topics: strings(&["math", "reasoning", "science", "coding"]),
            cot_share: 0.8,
            reasoning_share: 0.85,
            ip_prefixes: 3,
            created_days: [2.0, 21.0],
            verified_share: 0.1,
            duty_cycle: 0.8,
            active_period: Duration::from_secs(6 * 3600),
            timing_cv: 0.5,
        }
    }
}

/// Reasoning harvesting that moves to a newly released model within hours.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelPivot {
    /// Average requests per account per hour (assumption).
    pub requests_per_hour: f64,
    /// Median time from the release to the first requests on the new model
    /// (SIGNALS.md: within 24 hours; "within hours" assumed).
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub pivot_delay: Duration,
    /// Time to ramp up from the first new-model requests to `pivot_share`.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub pivot_ramp: Duration,
    /// Share of traffic moved to the new model (SIGNALS.md: "about half").
    pub pivot_share: f64,
    /// Prompt templates shared by the accounts.
    pub templates: usize,
    /// Capability areas, most-used first.
    pub topics: Vec<String>,
    /// Share of prompts asking for the reasoning written out.
    pub cot_share: f64,
    /// Share of requests with extended reasoning on.
    pub reasoning_share: f64,
    /// Cloud /24 prefixes.
    pub ip_prefixes: usize,
    /// Accounts were created this many days before the span, [min, max].
    pub created_days: [f64; 2],
    /// Share of verified accounts.
    pub verified_share: f64,
    /// Share of the time the job runs.
    pub duty_cycle: f64,
    /// Mean length of one active period.
    #[serde(deserialize_with = "crate::scenario::de_duration")]
    pub active_period: Duration,
    /// Coefficient of variation of one account's gaps.
    pub timing_cv: f64,
}

impl Default for ModelPivot {
    fn default() -> Self {
        ModelPivot {
            requests_per_hour: 15.0,
            pivot_delay: Duration::from_secs(3 * 3600),
            pivot_ramp: Duration::from_secs(6 * 3600),
            pivot_share: 0.5,
            templates: 12,
            topics: strings(&["reasoning", "coding", "math"]),
            cot_share: 0.6,
            reasoning_share: 0.7,
            ip_prefixes: 2,
            created_days: [2.0, 20.0],
            verified_share: 0.1,
            duty_cycle: 0.85,
            active_period: Duration::from_secs(8 * 3600),
            timing_cv: 0.4,
        }
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

fn share(name: &str, v: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("{name} = {v}: must be in [0, 1]"))
    }
}

fn positive(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{name} = {v}: must be a positive number"))
    }
}

fn duty(name: &str, v: f64) -> Result<(), String> {
    if v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(format!("{name} = {v}: must be in (0, 1]"))
    }
}

fn days(name: &str, r: [f64; 2]) -> Result<(), String> {
    if r[0].is_finite() && r[1].is_finite() && 0.0 <= r[0] && r[0] <= r[1] {
        Ok(())
    } else {
        Err(format!(
            "{name} = {r:?}: must be [min, max] with 0 <= min <= max"
        ))
    }
}

fn counts(name: &str, r: [i64; 2], min: i64) -> Result<(), String> {
    if min <= r[0] && r[0] <= r[1] {
        Ok(())
    } else {
        Err(format!(
            "{name} = {r:?}: must be [min, max] with {min} <= min <= max"
        ))
    }
}

fn at_least_one(name: &str, v: usize) -> Result<(), String> {
    if v >= 1 {
        Ok(())
    } else {
        Err(format!("{name} must be at least 1"))
    }
}

fn cv(name: &str, v: f64) -> Result<(), String> {
    if (0.0..=2.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("{name} = {v}: must be in [0, 2]"))
    }
}

fn known_topics(name: &str, topics: &[String]) -> Result<(), String> {
    if topics.is_empty() {
        return Err(format!("{name} is empty"));
    }
    for t in topics {
        if !TOPICS.contains(&t.as_str()) {
            return Err(format!(
                "{name}: unknown topic {t:?}; known: {}",
                TOPICS.join(", ")
            ));
        }
    }
    Ok(())
}

fn not_zero(name: &str, d: Duration) -> Result<(), String> {
    if d.is_zero() {
        Err(format!("{name} must be longer than zero"))
    } else {
        Ok(())
    }
}

impl HydraSharedCard {
    fn check(&self) -> Result<(), String> {
        positive("member_requests_per_hour", self.member_requests_per_hour)?;
        share("ordinary_share", self.ordinary_share)?;
        at_least_one("ip_prefixes", self.ip_prefixes)?;
        at_least_one("templates", self.templates)?;
        known_topics("topics", &self.topics)?;
        share("cot_share", self.cot_share)?;
        share("reasoning_share", self.reasoning_share)?;
        at_least_one("signup_bursts", self.signup_bursts)?;
        days("created_days", self.created_days)?;
        share("verified_share", self.verified_share)?;
        duty("duty_cycle", self.duty_cycle)?;
        not_zero("active_period", self.active_period)?;
        cv("timing_cv", self.timing_cv)?;
        positive("bans_per_member_day + 1", self.bans_per_member_day + 1.0)?;
        share("card_swap_share", self.card_swap_share)
    }
}

impl HydraProxy {
    fn check(&self) -> Result<(), String> {
        positive("member_requests_per_hour", self.member_requests_per_hour)?;
        share("ordinary_share", self.ordinary_share)?;
        share("card_group_share", self.card_group_share)?;
        at_least_one("ip_prefixes", self.ip_prefixes)?;
        share("residential_share", self.residential_share)?;
        share("sticky_share", self.sticky_share)?;
        at_least_one("user_agents", self.user_agents)?;
        at_least_one("templates", self.templates)?;
        known_topics("topics", &self.topics)?;
        share("cot_share", self.cot_share)?;
        share("reasoning_share", self.reasoning_share)?;
        share("tool_share", self.tool_share)?;
        at_least_one("signup_bursts", self.signup_bursts)?;
        days("created_days", self.created_days)?;
        share("aged_share", self.aged_share)?;
        share("verified_share", self.verified_share)?;
        duty("duty_cycle", self.duty_cycle)?;
        not_zero("active_period", self.active_period)?;
        cv("timing_cv", self.timing_cv)?;
        positive("bans_per_member_day + 1", self.bans_per_member_day + 1.0)?;
        if !(-12.0..=14.0).contains(&self.customer_utc_offset) {
            return Err(format!(
                "customer_utc_offset = {}: must be in [-12, 14]",
                self.customer_utc_offset
            ));
        }
        Ok(())
    }
}

impl CotHarvest {
    fn check(&self) -> Result<(), String> {
        positive("requests_per_hour", self.requests_per_hour)?;
        if self.task_mix.iter().any(|x| !(x.is_finite() && *x >= 0.0))
            || self.task_mix.iter().sum::<f64>() <= 0.0
        {
            return Err(format!(
                "task_mix = {:?}: weights must be non-negative and not all zero",
                self.task_mix
            ));
        }
        at_least_one("templates", self.templates)?;
        at_least_one("templates_per_account", self.templates_per_account)?;
        known_topics("topics", &self.topics)?;
        share("duplicate_share", self.duplicate_share)?;
        at_least_one("accounts_per_card", self.accounts_per_card)?;
        at_least_one("ip_prefixes", self.ip_prefixes)?;
        days("created_days", self.created_days)?;
        share("verified_share", self.verified_share)?;
        duty("duty_cycle", self.duty_cycle)?;
        not_zero("active_period", self.active_period)?;
        cv("timing_cv", self.timing_cv)
    }
}

impl ToolHarvest {
    fn check(&self) -> Result<(), String> {
        positive("requests_per_hour", self.requests_per_hour)?;
        if !(self.turns_per_session >= 1.0 && self.turns_per_session <= 200.0) {
            return Err(format!(
                "turns_per_session = {}: must be in [1, 200]",
                self.turns_per_session
            ));
        }
        counts("tools_per_request", self.tools_per_request, 1)?;
        share("schema_reuse", self.schema_reuse)?;
        at_least_one("system_prompts", self.system_prompts)?;
        at_least_one("templates", self.templates)?;
        known_topics("topics", &self.topics)?;
        share("reasoning_share", self.reasoning_share)?;
        share("card_group_share", self.card_group_share)?;
        at_least_one("ip_prefixes", self.ip_prefixes)?;
        share("residential_share", self.residential_share)?;
        days("created_days", self.created_days)?;
        share("aged_share", self.aged_share)?;
        share("verified_share", self.verified_share)?;
        duty("duty_cycle", self.duty_cycle)?;
        not_zero("active_period", self.active_period)
    }
}

impl LogitLoud {
    fn check(&self) -> Result<(), String> {
        positive("requests_per_minute", self.requests_per_minute)?;
        duty("duty_cycle", self.duty_cycle)?;
        not_zero("active_period", self.active_period)?;
        if !(1..=20).contains(&self.top_logprobs) {
            return Err(format!(
                "top_logprobs = {}: must be in [1, 20]",
                self.top_logprobs
            ));
        }
        counts("logit_bias_size", self.logit_bias_size, 0)?;
        share("max_tokens_one_share", self.max_tokens_one_share)?;
        at_least_one("probe_prompts", self.probe_prompts)?;
        counts("requests_per_probe", self.requests_per_probe, 1)?;
        share("rate_limited_share", self.rate_limited_share)?;
        days("created_days", self.created_days)
    }
}

impl LogitThin {
    fn check(&self) -> Result<(), String> {
        positive("requests_per_hour", self.requests_per_hour)?;
        if self.top_logprobs.is_empty()
            || self
                .top_logprobs
                .iter()
                .any(|(k, x)| !((1..=20).contains(k) && x.is_finite() && *x > 0.0))
        {
            return Err(format!(
                "top_logprobs = {:?}: [[value, weight], ...] with values in [1, 20] and positive weights",
                self.top_logprobs
            ));
        }
        counts("logit_bias_size", self.logit_bias_size, 1)?;
        share("no_bias_share", self.no_bias_share)?;
        share("max_tokens_one_share", self.max_tokens_one_share)?;
        at_least_one("probe_prompts", self.probe_prompts)?;
        counts("requests_per_probe", self.requests_per_probe, 1)?;
        at_least_one("ip_prefixes", self.ip_prefixes)?;
        share("residential_share", self.residential_share)?;
        days("created_days", self.created_days)?;
        share("aged_share", self.aged_share)?;
        share("verified_share", self.verified_share)?;
        duty("duty_cycle", self.duty_cycle)?;
        not_zero("active_period", self.active_period)?;
        cv("timing_cv", self.timing_cv)
    }
}

impl TaxonomySweep {
    fn check(&self) -> Result<(), String> {
        positive("requests_per_hour", self.requests_per_hour)?;
        known_topics("topics", &self.topics)?;
        counts("paraphrases", self.paraphrases, 1)?;
        if !(1..=16).contains(&self.n) {
            return Err(format!("n = {}: must be in [1, 16]", self.n));
        }
        share("reasoning_share", self.reasoning_share)?;
        share("cot_share", self.cot_share)?;
        at_least_one("accounts_per_card", self.accounts_per_card)?;
        at_least_one("ip_prefixes", self.ip_prefixes)?;
        days("created_days", self.created_days)?;
        share("verified_share", self.verified_share)?;
        duty("duty_cycle", self.duty_cycle)?;
        not_zero("active_period", self.active_period)?;
        cv("timing_cv", self.timing_cv)
    }
}

impl MultilingualCot {
    fn check(&self) -> Result<(), String> {
        positive("requests_per_hour", self.requests_per_hour)?;
        if self.languages.is_empty() {
            return Err("languages is empty".into());
        }
        for (code, x) in &self.languages {
            if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(format!("languages: {code:?} is not an ISO 639-1 code"));
            }
            positive(&format!("languages.{code}"), *x)?;
        }
        counts("translations", self.translations, 1)?;
        at_least_one("templates_per_language", self.templates_per_language)?;
        known_topics("topics", &self.topics)?;
        share("cot_share", self.cot_share)?;
        share("reasoning_share", self.reasoning_share)?;
        at_least_one("ip_prefixes", self.ip_prefixes)?;
        days("created_days", self.created_days)?;
        share("verified_share", self.verified_share)?;
        duty("duty_cycle", self.duty_cycle)?;
        not_zero("active_period", self.active_period)?;
        cv("timing_cv", self.timing_cv)
    }
}

impl ModelPivot {
    fn check(&self) -> Result<(), String> {
        positive("requests_per_hour", self.requests_per_hour)?;
        share("pivot_share", self.pivot_share)?;
        at_least_one("templates", self.templates)?;
        known_topics("topics", &self.topics)?;
        share("cot_share", self.cot_share)?;
        share("reasoning_share", self.reasoning_share)?;
        at_least_one("ip_prefixes", self.ip_prefixes)?;
        days("created_days", self.created_days)?;
        share("verified_share", self.verified_share)?;
        duty("duty_cycle", self.duty_cycle)?;
        not_zero("active_period", self.active_period)?;
        cv("timing_cv", self.timing_cv)
    }
}

// ---------------------------------------------------------------------------
// Shared building blocks
// ---------------------------------------------------------------------------

/// Capability areas the upstream prompt classifier assigns.
const TOPICS: &[&str] = &[
    "chat",
    "writing",
    "coding",
    "math",
    "science",
    "reasoning",
    "other",
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Topic names as the `'static` strings requests carry. Parsed params are
/// checked against [`TOPICS`]; a hand-built params struct with an unknown
/// topic gets "other" rather than a panic mid-generation.
fn static_topics(topics: &[String]) -> Vec<&'static str> {
    let out: Vec<&'static str> = topics
        .iter()
        .map(|t| {
            TOPICS
                .iter()
                .copied()
                .find(|k| *k == t.as_str())
                .unwrap_or("other")
        })
        .collect();
    if out.is_empty() {
        vec!["other"]
    } else {
        out
    }
}

/// Languages the benign populations write in as well (see `geo.rs`); a
/// language only campaigns used would be a tell of the generator, not of
/// the campaign.
const LANGUAGES: &[&str] = &["en", "zh", "es", "de", "fr", "ja", "ko", "pt", "hi"];

/// An ISO 639-1 code as a `'static` string: known codes without allocating,
/// others (a scenario's own choice) leaked once per generated campaign.
fn static_language(code: &str) -> &'static str {
    LANGUAGES
        .iter()
        .copied()
        .find(|l| *l == code)
        .unwrap_or_else(|| Box::leak(code.to_string().into_boxed_str()))
}

fn ms(d: Duration) -> f64 {
    d.as_millis() as f64
}

/// One of `items`, as the `'static` string requests carry.
fn pick_str(rng: &mut StdRng, items: &[&'static str]) -> &'static str {
    items[rng.random_range(0..items.len())]
}

/// Item drawn from `(item, weight)` pairs.
fn wpick<T: Copy>(rng: &mut StdRng, items: &[(T, f64)]) -> T {
    let weights: Vec<f64> = items.iter().map(|(_, x)| *x).collect();
    items[weighted(rng, &weights)].0
}

/// When an operator's job runs: alternating active and idle periods (a
/// dataset shard done, a crash, the next shard queued), log-normal around
/// their means, active `duty` of the time on average. The campaign was
/// already under way when the span starts, so the state at `from` is drawn
/// from the duty cycle and the first period is caught part-way.
fn active_periods(
    rng: &mut StdRng,
    from: i64,
    to: i64,
    duty: f64,
    mean_active_ms: f64,
) -> Vec<(i64, i64)> {
    if to <= from {
        return Vec::new();
    }
    if duty >= 0.999 {
        return vec![(from, to)];
    }
    let mean_active = mean_active_ms.max(MINUTE_MS as f64);
    let mean_idle = mean_active * (1.0 - duty) / duty;
    // Log-normal with sigma 0.6: median = mean / e^(0.6²/2).
    let length = |rng: &mut StdRng, mean: f64| {
        lognormal(rng, mean / 0.18f64.exp(), 0.6).max(MINUTE_MS as f64)
    };
    let mut active = rng.random_bool(duty);
    let mut len = length(rng, if active { mean_active } else { mean_idle });
    let mut t = from as f64 - uniform(rng, 0.0, len);
    let mut out = Vec::new();
    loop {
        let end = t + len;
        if active && end > from as f64 {
            out.push((t.max(from as f64) as i64, end.min(to as f64) as i64));
        }
        if end >= to as f64 {
            return out;
        }
        t = end;
        active = !active;
        len = length(rng, if active { mean_active } else { mean_idle });
    }
}

/// Times of a scripted client inside `periods`: `per_hour` while active,
/// gaps jittered by `cv`.
fn scheduled(rng: &mut StdRng, periods: &[(i64, i64)], per_hour: f64, cv: f64) -> Vec<i64> {
    let mut out = Vec::new();
    if per_hour <= 0.0 {
        return out;
    }
    let gap = HOUR_MS as f64 / per_hour;
    for &(a, b) in periods {
        out.extend(regular_times(rng, a, b, gap, cv));
    }
    out
}

/// Which of `slots` accounts each of `count` dispatches goes to: a fixed
/// round-robin, or a fresh random order every cycle (a least-recently-used
/// pool looks like that from outside). Either way every account gets the
/// same share: load balancing.
fn rotation(rng: &mut StdRng, slots: usize, count: usize, reshuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..slots).collect();
    order.shuffle(rng);
    let mut out = Vec::with_capacity(count);
    while out.len() < count && slots > 0 {
        if reshuffle && !out.is_empty() {
            order.shuffle(rng);
        }
        out.extend(order.iter().copied().take(count - out.len()));
    }
    out
}

/// Time `lo..hi` days before `start`, for `created_at`.
fn days_before(rng: &mut StdRng, start: i64, range: [f64; 2]) -> i64 {
    start - (uniform(rng, range[0], range[1]) * DAY_MS as f64) as i64
}

/// Sign-up times of `n` accounts registered in `bursts` batches of
/// `burst_ms` each, the batches spread over `range` days before `start`:
/// scripted sign-up flows register accounts in batches.
fn signup_times(
    rng: &mut StdRng,
    start: i64,
    n: usize,
    bursts: usize,
    burst_ms: f64,
    range: [f64; 2],
) -> Vec<i64> {
    let starts: Vec<i64> = (0..bursts.max(1))
        .map(|_| days_before(rng, start, range))
        .collect();
    (0..n)
        .map(|_| {
            let b = *pick(rng, &starts);
            (b + uniform(rng, 0.0, burst_ms) as i64).min(start - MINUTE_MS)
        })
        .collect()
}

/// An aged account (bought, or taken over): months to years old.
fn aged(rng: &mut StdRng, start: i64) -> i64 {
    days_before(rng, start, [90.0, 900.0])
}

/// Countries operators declare at sign-up: where the API is offered and
/// cards and phone numbers are easy to get. All of them are ordinary for
/// benign users too.
const DECLARED: &[(&str, f64)] = &[
    ("US", 5.0),
    ("SG", 2.0),
    ("GB", 1.5),
    ("CA", 1.0),
    ("JP", 1.0),
    ("KR", 1.0),
    ("AU", 1.0),
    ("DE", 0.5),
    ("IN", 0.5),
];

fn declared_country(rng: &mut StdRng) -> &'static str {
    wpick(rng, DECLARED)
}

/// Billing country of a card bought for a declared country: usually the
/// same, sometimes a virtual card from elsewhere.
fn billing_for(rng: &mut StdRng, country: &'static str) -> &'static str {
    if rng.random_bool(0.7) {
        country
    } else {
        declared_country(rng)
    }
}

/// Sign-up paths SIGNALS.md names (education / research / startup), with
/// plain web sign-ups mixed in.
const FRAUD_CHANNELS: &[(&str, f64)] = &[
    ("education", 3.0),
    ("startup", 3.0),
    ("research", 2.0),
    ("web", 2.0),
];

/// Who the operator says an account is.
struct Identity {
    created_at: i64,
    org: Option<String>,
    tier: &'static str,
    country: &'static str,
    billing_country: &'static str,
    card: Option<String>,
    channel: &'static str,
    verified: bool,
}

/// Where a member's requests leave from.
#[derive(Clone)]
struct Exits {
    /// The prefix a sticky proxy session or a rented server gives it.
    home: [u8; 3],
    /// Every prefix of the network.
    pool: Vec<[u8; 3]>,
    /// Share of cloud-exit requests from `home`.
    sticky: f64,
    /// Share of requests through residential exits, anywhere.
    residential: f64,
}

impl Exits {
    fn fixed(prefix: [u8; 3]) -> Exits {
        Exits {
            home: prefix,
            pool: vec![prefix],
            sticky: 1.0,
            residential: 0.0,
        }
    }

    fn ip(&self, rng: &mut StdRng) -> String {
        if self.residential > 0.0 && rng.random_bool(self.residential) {
            return geo::pick_country(rng).residential_ip(rng);
        }
        if self.sticky >= 1.0 || rng.random_bool(self.sticky) {
            ip_in(rng, self.home)
        } else {
            let prefix = *pick(rng, &self.pool);
            ip_in(rng, prefix)
        }
    }
}

/// One campaign account as the operator drives it.
#[derive(Clone)]
struct Member {
    account_id: String,
    key: String,
    user_agent: &'static str,
    exits: Exits,
}

impl Member {
    fn register(
        w: &mut World,
        label: &Label,
        id: Identity,
        user_agent: &'static str,
        exits: Exits,
    ) -> Member {
        let account_id = w.new_id("acct_", 16);
        w.add_account(
            Account {
                account_id: account_id.clone(),
                org_id: id.org,
                created_at: id.created_at,
                tier: id.tier,
                country: Some(id.country),
                billing_country: Some(id.billing_country),
                payment_fingerprint: id.card,
                signup_channel: id.channel,
                verified: id.verified,
            },
            label.clone(),
        );
        Member {
            account_id,
            key: w.new_id("key_", 12),
            user_agent,
            exits,
        }
    }

    fn req(&self, rng: &mut StdRng, t: i64, model: &'static str) -> Req {
        Req {
            account_id: self.account_id.clone(),
            event_time: t,
            api_key_id: Some(self.key.clone()),
            model,
            endpoint: EP_MESSAGES,
            client_ip: Some(self.exits.ip(rng)),
            user_agent: Some(self.user_agent),
            conversation_turns: 1,
            n: 1,
            ..Req::default()
        }
    }
}

/// A hydra slot: the account serving it and, after each ban, the account
/// that replaced it.
struct Slot {
    /// (from, until, member), in time order.
    tenure: Vec<(i64, i64, Member)>,
}

impl Slot {
    fn member_at(&self, t: i64) -> Option<&Member> {
        self.tenure
            .iter()
            .find(|(from, until, _)| *from <= t && t < *until)
            .map(|(_, _, m)| m)
    }
}

/// Build hydra slots: each starts with its first member; members banned
/// during the span (a Poisson process at `bans_per_day`) are replaced at
/// once by a fresh account registered minutes before it takes over.
fn hydra_slots(
    w: &mut World,
    rng: &mut StdRng,
    n: usize,
    bans_per_day: f64,
    mut register: impl FnMut(&mut World, &mut StdRng, usize, Option<i64>) -> Member,
) -> Vec<Slot> {
    let mut slots = Vec::with_capacity(n);
    for i in 0..n {
        let first = register(w, rng, i, None);
        let mut tenure = vec![(i64::MIN, i64::MAX, first)];
        if bans_per_day > 0.0 {
            let rate = bans_per_day / DAY_MS as f64;
            for ban in poisson_times(rng, w.start, w.end, rate, |_| rate) {
                let last = tenure.last_mut().expect("slot has a member");
                if ban <= last.0 {
                    continue;
                }
                last.1 = ban;
                // "Replaced at once": automation notices the ban on the next
                // failed call and swaps in a new account within minutes.
                let takeover = ban + (uniform(rng, 0.5, 10.0) * MINUTE_MS as f64) as i64;
                let created = takeover - int(rng, 1, 20) * MINUTE_MS;
                let m = register(w, rng, i, Some(created));
                tenure.push((takeover, i64::MAX, m));
            }
        }
        slots.push(Slot { tenure });
    }
    slots
}

/// A prompt template of a campaign's script.
#[derive(Clone, Copy)]
struct Template {
    fp: i64,
    topic: &'static str,
    /// Typical prompt length of its filled-in prompts.
    tokens: i64,
}

/// `n` templates over `topics`, the first topic most often (Zipf, s = 1.5:
/// about two thirds of templates for three topics): the narrow focus of a
/// harvest. The first template always has the first topic, so with Zipf
/// weights over templates the focus holds for small template sets too.
fn templates(
    rng: &mut StdRng,
    n: usize,
    topics: &[&'static str],
    tokens: (i64, i64),
) -> Vec<Template> {
    let topic_weights = zipf_weights(topics.len(), 1.5);
    (0..n.max(1))
        .map(|i| Template {
            fp: fingerprint(rng),
            topic: if i == 0 {
                topics[0]
            } else {
                topics[weighted(rng, &topic_weights)]
            },
            tokens: int(rng, tokens.0, tokens.1),
        })
        .collect()
}

/// Prompts already sent, for re-asks: retries after timeouts, the same item
/// sampled again at another temperature.
#[derive(Default)]
struct Asked {
    recent: Vec<i64>,
}

impl Asked {
    const KEEP: usize = 512;

    fn next(&mut self, rng: &mut StdRng, duplicate: f64) -> i64 {
        if !self.recent.is_empty() && duplicate > 0.0 && rng.random_bool(duplicate) {
            return *pick(rng, &self.recent);
        }
        let fp = fingerprint(rng);
        if self.recent.len() < Self::KEEP {
            self.recent.push(fp);
        } else {
            let i = rng.random_range(0..Self::KEEP);
            self.recent[i] = fp;
        }
        fp
    }
}

/// How one campaign's script asks for reasoning traces: set once by the
/// operator, the same for every account.
struct Traces {
    temperature: Option<f64>,
    max_tokens: i64,
    /// Share of prompts that explicitly ask for the reasoning written out.
    elicit: f64,
    /// Share of requests with extended reasoning on.
    reasoning: f64,
    system_prompt: Option<i64>,
    languages: Vec<(&'static str, f64)>,
}

impl Traces {
    fn script(
        rng: &mut StdRng,
        elicit: f64,
        reasoning: f64,
        languages: Vec<(&'static str, f64)>,
    ) -> Traces {
        Traces {
            temperature: *pick(rng, &[Some(0.0), Some(0.0), Some(0.6), Some(1.0), None]),
            max_tokens: *pick(rng, &[8_192, 16_000, 32_000]),
            elicit,
            reasoning,
            system_prompt: rng.random_bool(0.5).then(|| fingerprint(rng)),
            languages,
        }
    }

    fn fill(&self, rng: &mut StdRng, req: &mut Req, tpl: &Template, prompt_fp: i64) -> Outcome {
        let system = if self.system_prompt.is_some() { 250 } else { 0 };
        req.prompt_tokens = system + tpl.tokens + int(rng, 0, tpl.tokens / 2 + 50);
        req.prompt_fingerprint = Some(prompt_fp);
        req.template_fingerprint = Some(tpl.fp);
        req.system_prompt_hash = self.system_prompt;
        req.temperature = self.temperature;
        req.max_tokens = Some(self.max_tokens);
        let reasoning = rng.random_bool(self.reasoning);
        req.reasoning_requested = reasoning;
        req.reasoning_effort = reasoning.then(|| {
            if rng.random_bool(0.85) {
                "high"
            } else {
                "medium"
            }
        });
        let elicit = rng.random_bool(self.elicit);
        req.cot_elicitation_score = Some(if elicit {
            uniform(rng, 0.7, 1.0)
        } else {
            uniform(rng, 0.05, 0.5)
        });
        req.topic = Some(tpl.topic);
        req.prompt_language = Some(wpick(rng, &self.languages));
        Outcome {
            completion: (lognormal(rng, if elicit { 1_600.0 } else { 900.0 }, 0.5) as i64).max(40),
            reasoning: if reasoning {
                (lognormal(rng, 2_500.0, 0.6) as i64).min(24_000)
            } else {
                0
            },
            cached: system,
            tool_use: false,
        }
    }
}

/// Languages of an English-first harvesting dataset with some Chinese and
/// others, as the reported campaigns' operators would use.
fn harvest_languages() -> Vec<(&'static str, f64)> {
    vec![
        ("en", 0.82),
        ("zh", 0.12),
        ("ja", 0.02),
        ("ko", 0.02),
        ("es", 0.02),
    ]
}

/// Failure rates of harvesting requests: a few reasoning-extraction prompts
/// are refused.
const HARVEST_FAULTS: Faults = Faults {
    rate_limited: 0.0,
    error: 0.003,
    refused: 0.01,
};

/// Ordinary end-customer traffic a reseller passes through its accounts:
/// many people, varied topics and lengths, daytime in the customers' zone.
struct Resold {
    /// System prompts of the reseller's own front-ends.
    system_prompts: Vec<i64>,
    /// Popular phrasings among its customers.
    common_templates: Vec<i64>,
    languages: Vec<(&'static str, f64)>,
    utc_offset: f64,
}

impl Resold {
    fn new(rng: &mut StdRng, utc_offset: f64, languages: Vec<(&'static str, f64)>) -> Resold {
        Resold {
            system_prompts: (0..int(rng, 1, 3)).map(|_| fingerprint(rng)).collect(),
            common_templates: (0..20).map(|_| fingerprint(rng)).collect(),
            languages,
            utc_offset,
        }
    }

    /// Times of `per_hour` requests on average, following the customers'
    /// day (the mean of [`diurnal`] over a day is 0.55).
    fn times(&self, rng: &mut StdRng, from: i64, to: i64, per_hour: f64) -> Vec<i64> {
        let base = per_hour / HOUR_MS as f64 / 0.55;
        let offset = self.utc_offset;
        poisson_times(rng, from, to, base, |t| {
            base * diurnal(local_hour(t, offset))
        })
    }

    fn req(
        &self,
        rng: &mut StdRng,
        m: &Member,
        t: i64,
        new_model: Option<&'static str>,
    ) -> (Req, Outcome) {
        let model = match new_model {
            Some(new) if rng.random_bool(0.15) => new,
            _ => *pick(rng, &[MODEL_SMALL, MODEL_SMALL, MODEL_LARGE]),
        };
        let mut req = m.req(rng, t, model);
        let turns = if rng.random_bool(0.6) {
            1
        } else {
            int(rng, 2, 8)
        };
        let system = rng
            .random_bool(0.4)
            .then(|| *pick(rng, &self.system_prompts));
        let mut tokens = if system.is_some() { 300 } else { 0 };
        for _ in 0..turns {
            tokens += (lognormal(rng, 120.0, 1.0) as i64).clamp(4, 6_000);
        }
        // Earlier turns carried the assistant's replies too.
        tokens += (turns - 1) * 250;
        req.prompt_tokens = tokens;
        req.conversation_turns = turns;
        req.system_prompt_hash = system;
        req.prompt_fingerprint = Some(fingerprint(rng));
        req.template_fingerprint = Some(if rng.random_bool(0.2) {
            *pick(rng, &self.common_templates)
        } else {
            fingerprint(rng)
        });
        req.temperature = *pick(rng, &[None, None, None, Some(0.7), Some(0.7), Some(1.0)]);
        req.max_tokens = *pick(rng, &[None, None, Some(1_024), Some(2_048), Some(4_096)]);
        let topic = wpick(
            rng,
            &[
                ("chat", 3.0),
                ("writing", 2.0),
                ("coding", 2.0),
                ("other", 1.0),
                ("math", 0.7),
                ("science", 0.5),
                ("reasoning", 0.3),
            ],
        );
        req.topic = Some(topic);
        req.prompt_language = Some(wpick(rng, &self.languages));
        // Homework and "explain step by step" questions are ordinary too.
        req.cot_elicitation_score = Some(if rng.random_bool(0.1) {
            uniform(rng, 0.4, 0.85)
        } else {
            uniform(rng, 0.0, 0.25)
        });
        let reasoning = rng.random_bool(0.08);
        req.reasoning_requested = reasoning;
        req.reasoning_effort = reasoning.then(|| *pick(rng, &["low", "medium"]));
        let out = Outcome {
            completion: (lognormal(rng, 350.0, 0.8) as i64).clamp(5, 8_000),
            reasoning: if reasoning {
                lognormal(rng, 600.0, 0.6) as i64
            } else {
                0
            },
            cached: if system.is_some() && turns > 1 {
                300
            } else {
                0
            },
            tool_use: false,
        };
        (req, out)
    }
}

/// A campaign's tool schemas: invented per session mostly, sometimes
/// reused, as a harvester synthesising agent environments does.
struct Schemas {
    used: Vec<(i64, i64)>,
    reuse: f64,
    size: [i64; 2],
}

impl Schemas {
    fn next(&mut self, rng: &mut StdRng) -> (i64, i64) {
        if !self.used.is_empty() && rng.random_bool(self.reuse) {
            return *pick(rng, &self.used);
        }
        let s = (fingerprint(rng), int(rng, self.size[0], self.size[1]));
        self.used.push(s);
        s
    }
}

/// Card fingerprints for members in small groups: with probability `group`
/// a member joins (or starts) a group of 2..=`max_group` on one card,
/// otherwise it has a card of its own.
struct Cards {
    group: f64,
    max_group: i64,
    current: Option<(String, i64)>,
}

impl Cards {
    fn next(&mut self, w: &mut World, rng: &mut StdRng) -> String {
        if !rng.random_bool(self.group) {
            return w.new_id("pm_", 20);
        }
        if let Some((card, left)) = &mut self.current {
            if *left > 0 {
                *left -= 1;
                return card.clone();
            }
        }
        let card = w.new_id("pm_", 20);
        self.current = Some((card.clone(), int(rng, 1, self.max_group - 1)));
        card
    }
}

/// A few cloud /24s for a campaign.
fn prefixes(rng: &mut StdRng, n: usize) -> Vec<[u8; 3]> {
    (0..n.max(1)).map(|_| cloud_prefix(rng)).collect()
}

/// The operator's HTTP client: a bare library most of the time, an SDK
/// otherwise. Benign scripts use both too.
fn script_agent(rng: &mut StdRng) -> &'static str {
    if rng.random_bool(0.7) {
        pick_str(rng, SCRIPT_AGENTS)
    } else {
        pick_str(rng, SDK_AGENTS)
    }
}

// ---------------------------------------------------------------------------
// Styles
// ---------------------------------------------------------------------------

impl HydraSharedCard {
    fn generate(&self, w: &mut World, run: &Run) {
        let n = run.n;
        let mut rng = run.rng(w, "setup");
        let topics = static_topics(&self.topics);
        let card = w.new_id("pm_", 20);
        let second_card = w.new_id("pm_", 20);
        let billing = declared_country(&mut rng);
        let orgs: Vec<String> = (0..self.orgs).map(|_| w.new_id("org_", 12)).collect();
        let nets = prefixes(&mut rng, self.ip_prefixes);
        let agents = [script_agent(&mut rng), script_agent(&mut rng)];
        let signups = signup_times(
            &mut rng,
            w.start,
            n,
            self.signup_bursts,
            ms(self.signup_burst_length),
            self.created_days,
        );
        let tpls = templates(&mut rng, self.templates, &topics, (150, 700));
        let tpl_weights = zipf_weights(tpls.len(), 1.0);
        let traces = Traces::script(
            &mut rng,
            self.cot_share,
            self.reasoning_share,
            harvest_languages(),
        );
        let resold = Resold::new(&mut rng, 8.0, vec![("zh", 0.5), ("en", 0.45), ("ko", 0.05)]);
        // When the first card starts being declined; members moved then, and
        // replacements registered after it, pay with the second card.
        let swap_at = w.start + (w.duration() as f64 * uniform(&mut rng, 0.2, 0.8)) as i64;
        let swap_share = self.card_swap_share;

        let slots = hydra_slots(
            w,
            &mut rng,
            n,
            self.bans_per_member_day,
            |w, rng, i, created| {
                let created_at = created.unwrap_or(signups[i]);
                let country = declared_country(rng);
                let card = if swap_share > 0.0 && created_at >= swap_at {
                    second_card.clone()
                } else {
                    card.clone()
                };
                let id = Identity {
                    created_at,
                    org: (!orgs.is_empty()).then(|| orgs[i % orgs.len()].clone()),
                    tier: if rng.random_bool(0.4) {
                        "free"
                    } else {
                        "build"
                    },
                    country,
                    billing_country: billing,
                    card: Some(card),
                    channel: wpick(rng, FRAUD_CHANNELS),
                    verified: rng.random_bool(self.verified_share),
                };
                let exits = Exits {
                    home: nets[i % nets.len()],
                    pool: nets.clone(),
                    sticky: 0.8,
                    residential: 0.0,
                };
                Member::register(w, run.label, id, pick_str(rng, &agents), exits)
            },
        );
        for slot in &slots {
            let (from, _, m) = &slot.tenure[0];
            if *from == i64::MIN && swap_share > 0.0 && rng.random_bool(swap_share) {
                let at = swap_at + int(&mut rng, 0, 90) * MINUTE_MS;
                let moved = second_card.clone();
                w.update_account(&m.account_id, at, |a| {
                    a.payment_fingerprint = Some(moved);
                });
            }
        }

        let total = n as f64 * self.member_requests_per_hour;
        let mut rng = run.rng(w, "harvest");
        let periods = active_periods(
            &mut rng,
            w.start,
            w.end,
            self.duty_cycle,
            ms(self.active_period),
        );
        let times = scheduled(
            &mut rng,
            &periods,
            total * (1.0 - self.ordinary_share) / self.duty_cycle,
            self.timing_cv,
        );
        let order = rotation(&mut rng, n, times.len(), false);
        let mut asked = Asked::default();
        for (t, s) in times.into_iter().zip(order) {
            let Some(m) = slots[s].member_at(t) else {
                continue;
            };
            let model = if rng.random_bool(0.85) {
                MODEL_LARGE
            } else {
                MODEL_SMALL
            };
            let mut req = m.req(&mut rng, t, model);
            let tpl = tpls[weighted(&mut rng, &tpl_weights)];
            // The same question now and then goes out through two members.
            let fp = asked.next(&mut rng, 0.03);
            let out = traces.fill(&mut rng, &mut req, &tpl, fp);
            w.push(&mut rng, req, out, HARVEST_FAULTS);
        }

        let mut rng = run.rng(w, "resold");
        for t in resold.times(&mut rng, w.start, w.end, total * self.ordinary_share) {
            let s = rng.random_range(0..n);
            let Some(m) = slots[s].member_at(t) else {
                continue;
            };
            let (req, out) = resold.req(&mut rng, m, t, w.new_model_at(t));
            w.push(&mut rng, req, out, Faults::NORMAL);
        }
    }
}

impl HydraProxy {
    fn generate(&self, w: &mut World, run: &Run) {
        let n = run.n;
        let mut rng = run.rng(w, "setup");
        let topics = static_topics(&self.topics);
        let nets = prefixes(&mut rng, self.ip_prefixes);
        let agents: Vec<&'static str> = (0..self.user_agents)
            .map(|_| script_agent(&mut rng))
            .collect();
        let signups = signup_times(
            &mut rng,
            w.start,
            n,
            self.signup_bursts,
            ms(self.signup_burst_length),
            self.created_days,
        );
        let tpls = templates(&mut rng, self.templates, &topics, (120, 900));
        let tpl_weights = zipf_weights(tpls.len(), 0.9);
        let traces = Traces::script(
            &mut rng,
            self.cot_share,
            self.reasoning_share,
            harvest_languages(),
        );
        let resold = Resold::new(
            &mut rng,
            self.customer_utc_offset,
            vec![
                ("zh", 0.45),
                ("en", 0.4),
                ("ja", 0.05),
                ("ko", 0.05),
                ("es", 0.05),
            ],
        );
        let mut cards = Cards {
            group: self.card_group_share,
            max_group: 5,
            current: None,
        };

        let slots = hydra_slots(
            w,
            &mut rng,
            n,
            self.bans_per_member_day,
            |w, rng, i, created| {
                let old = created.is_none() && rng.random_bool(self.aged_share);
                let created_at = match created {
                    Some(t) => t,
                    None if old => aged(rng, w.start),
                    None => signups[i],
                };
                let country = declared_country(rng);
                let id = Identity {
                    created_at,
                    org: rng.random_bool(0.1).then(|| w.new_id("org_", 12)),
                    tier: if old {
                        "build"
                    } else if rng.random_bool(0.3) {
                        "free"
                    } else {
                        "build"
                    },
                    country,
                    billing_country: billing_for(rng, country),
                    card: Some(cards.next(w, rng)),
                    channel: if old {
                        "web"
                    } else {
                        wpick(rng, FRAUD_CHANNELS)
                    },
                    verified: rng.random_bool(if old { 0.5 } else { self.verified_share }),
                };
                let exits = Exits {
                    home: *pick(rng, &nets),
                    pool: nets.clone(),
                    sticky: self.sticky_share,
                    residential: self.residential_share,
                };
                Member::register(w, run.label, id, pick_str(rng, &agents), exits)
            },
        );

        let total = n as f64 * self.member_requests_per_hour;
        let mut rng = run.rng(w, "harvest");
        let periods = active_periods(
            &mut rng,
            w.start,
            w.end,
            self.duty_cycle,
            ms(self.active_period),
        );
        let times = scheduled(
            &mut rng,
            &periods,
            total * (1.0 - self.ordinary_share) / self.duty_cycle,
            self.timing_cv,
        );
        let order = rotation(&mut rng, n, times.len(), true);
        let mut schemas = Schemas {
            used: Vec::new(),
            reuse: 0.3,
            size: [4, 20],
        };
        let mut asked = Asked::default();
        for (t, s) in times.into_iter().zip(order) {
            let Some(m) = slots[s].member_at(t) else {
                continue;
            };
            let model = if rng.random_bool(0.8) {
                MODEL_LARGE
            } else {
                MODEL_SMALL
            };
            let mut req = m.req(&mut rng, t, model);
            let tpl = tpls[weighted(&mut rng, &tpl_weights)];
            let fp = asked.next(&mut rng, 0.03);
            let mut out = traces.fill(&mut rng, &mut req, &tpl, fp);
            if rng.random_bool(self.tool_share) {
                let (hash, count) = schemas.next(&mut rng);
                req.tools_hash = Some(hash);
                req.tool_count = count;
                req.prompt_tokens += count * int(&mut rng, 80, 250);
                req.topic = Some("coding");
                out.tool_use = rng.random_bool(0.7);
            }
            w.push(&mut rng, req, out, HARVEST_FAULTS);
        }

        let mut rng = run.rng(w, "resold");
        for t in resold.times(&mut rng, w.start, w.end, total * self.ordinary_share) {
            let s = rng.random_range(0..n);
            let Some(m) = slots[s].member_at(t) else {
                continue;
            };
            let (req, out) = resold.req(&mut rng, m, t, w.new_model_at(t));
            w.push(&mut rng, req, out, Faults::NORMAL);
        }
    }
}

/// The three tasks of the ~150k-exchange campaign.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CotTask {
    Reasoning,
    Grading,
    Rewrite,
}

impl CotHarvest {
    fn generate(&self, w: &mut World, run: &Run) {
        let mut rng = run.rng(w, "setup");
        let topics = static_topics(&self.topics);
        // Reasoning prompts carry the question and a completed response.
        let pool = templates(&mut rng, self.templates, &topics, (400, 1_800));
        let grading = templates(&mut rng, 3, &topics, (900, 2_500));
        let rewrite = templates(&mut rng, 3, &["writing", "other"], (60, 250));
        let nets = prefixes(&mut rng, self.ip_prefixes);
        let agent = script_agent(&mut rng);
        let temperature = *pick(&mut rng, &[Some(0.0), Some(0.0), Some(1.0)]);
        let max_tokens = *pick(&mut rng, &[16_000, 32_000]);
        let system_prompt = rng.random_bool(0.5).then(|| fingerprint(&mut rng));
        let periods = active_periods(
            &mut rng,
            w.start,
            w.end,
            self.duty_cycle,
            ms(self.active_period),
        );
        let mut card = String::new();
        let mut country = "US";
        let mut billing = "US";
        for i in 0..run.n {
            if i % self.accounts_per_card == 0 {
                card = w.new_id("pm_", 20);
                country = declared_country(&mut rng);
                billing = billing_for(&mut rng, country);
            }
            let id = Identity {
                created_at: days_before(&mut rng, w.start, self.created_days),
                org: None,
                tier: "build",
                country,
                billing_country: billing,
                card: Some(card.clone()),
                channel: wpick(
                    &mut rng,
                    &[
                        ("research", 4.0),
                        ("startup", 3.0),
                        ("education", 2.0),
                        ("web", 1.0),
                    ],
                ),
                verified: rng.random_bool(self.verified_share),
            };
            let exits = Exits::fixed(nets[i % nets.len()]);
            let m = Member::register(w, run.label, id, agent, exits);

            let mut r = run.rng(w, &format!("account/{i}"));
            let mut own = pool.clone();
            own.shuffle(&mut r);
            own.truncate(self.templates_per_account.max(1));
            let weights = zipf_weights(own.len(), uniform(&mut r, 0.8, 1.3));
            let mut asked = Asked::default();
            let rate = self.requests_per_hour / self.duty_cycle;
            for t in scheduled(&mut r, &periods, rate, self.timing_cv) {
                let task = match weighted(&mut r, &self.task_mix) {
                    0 => CotTask::Reasoning,
                    1 => CotTask::Grading,
                    _ => CotTask::Rewrite,
                };
                let mut req = m.req(&mut r, t, MODEL_LARGE);
                req.system_prompt_hash = system_prompt;
                req.prompt_fingerprint = Some(asked.next(&mut r, self.duplicate_share));
                req.prompt_language = Some(if r.random_bool(0.95) { "en" } else { "zh" });
                let (out, faults) = match task {
                    CotTask::Reasoning => {
                        let tpl = own[weighted(&mut r, &weights)];
                        req.template_fingerprint = Some(tpl.fp);
                        req.topic = Some(tpl.topic);
                        req.prompt_tokens = tpl.tokens + int(&mut r, 0, tpl.tokens / 2);
                        req.temperature = temperature;
                        req.max_tokens = Some(max_tokens);
                        let reasoning = r.random_bool(0.9);
                        req.reasoning_requested = reasoning;
                        req.reasoning_effort =
                            reasoning.then(|| if r.random_bool(0.8) { "high" } else { "medium" });
                        req.cot_elicitation_score = Some(uniform(&mut r, 0.75, 1.0));
                        let out = Outcome {
                            completion: (lognormal(&mut r, 1_500.0, 0.5) as i64).max(80),
                            reasoning: if reasoning {
                                (lognormal(&mut r, 3_000.0, 0.6) as i64).min(24_000)
                            } else {
                                0
                            },
                            cached: 0,
                            tool_use: false,
                        };
                        (out, HARVEST_FAULTS)
                    }
                    CotTask::Grading => {
                        let tpl = *pick(&mut r, &grading);
                        req.template_fingerprint = Some(tpl.fp);
                        req.topic = Some(*pick(&mut r, &topics));
                        req.prompt_tokens = tpl.tokens + int(&mut r, 0, 800);
                        req.temperature = Some(0.0);
                        req.max_tokens = Some(1_024);
                        let reasoning = r.random_bool(0.5);
                        req.reasoning_requested = reasoning;
                        req.reasoning_effort = reasoning.then_some("medium");
                        // "Explain your score" asks for some reasoning.
                        req.cot_elicitation_score = Some(uniform(&mut r, 0.3, 0.7));
                        let out = Outcome {
                            completion: (lognormal(&mut r, 250.0, 0.5) as i64).max(5),
                            reasoning: if reasoning {
                                lognormal(&mut r, 900.0, 0.5) as i64
                            } else {
                                0
                            },
                            // The rubric is a long, fixed prefix.
                            cached: tpl.tokens / 2,
                            tool_use: false,
                        };
                        (out, HARVEST_FAULTS)
                    }
                    CotTask::Rewrite => {
                        let tpl = *pick(&mut r, &rewrite);
                        req.template_fingerprint = Some(tpl.fp);
                        req.topic = Some(tpl.topic);
                        req.prompt_tokens = tpl.tokens + int(&mut r, 0, 150);
                        req.temperature = Some(0.7);
                        req.max_tokens = Some(1_024);
                        req.cot_elicitation_score = Some(uniform(&mut r, 0.0, 0.2));
                        let out = Outcome {
                            completion: (lognormal(&mut r, 120.0, 0.5) as i64).max(5),
                            ..Outcome::default()
                        };
                        // Policy-sensitive queries are refused more often.
                        let faults = Faults {
                            refused: 0.12,
                            ..HARVEST_FAULTS
                        };
                        (out, faults)
                    }
                };
                w.push(&mut r, req, out, faults);
            }
        }
    }
}

impl ToolHarvest {
    fn generate(&self, w: &mut World, run: &Run) {
        let n = run.n;
        let mut rng = run.rng(w, "setup");
        let topics = static_topics(&self.topics);
        let nets = prefixes(&mut rng, self.ip_prefixes);
        let agents = [script_agent(&mut rng), pick_str(&mut rng, SDK_AGENTS)];
        let tasks = templates(&mut rng, self.templates, &topics, (150, 900));
        let task_weights = zipf_weights(tasks.len(), 0.8);
        // Synthetic tool results come in the harness's few formats.
        let result_templates: Vec<i64> = (0..3).map(|_| fingerprint(&mut rng)).collect();
        let system_prompts: Vec<(i64, i64)> = (0..self.system_prompts)
            .map(|_| (fingerprint(&mut rng), int(&mut rng, 600, 1_800)))
            .collect();
        let mut cards = Cards {
            group: self.card_group_share,
            max_group: 4,
            current: None,
        };
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let old = rng.random_bool(self.aged_share);
            let country = declared_country(&mut rng);
            let id = Identity {
                created_at: if old {
                    aged(&mut rng, w.start)
                } else {
                    days_before(&mut rng, w.start, self.created_days)
                },
                org: rng.random_bool(0.15).then(|| w.new_id("org_", 12)),
                tier: if rng.random_bool(0.8) {
                    "build"
                } else {
                    "scale"
                },
                country,
                billing_country: billing_for(&mut rng, country),
                card: Some(cards.next(w, &mut rng)),
                channel: if old {
                    "web"
                } else {
                    wpick(&mut rng, FRAUD_CHANNELS)
                },
                verified: rng.random_bool(if old { 0.5 } else { self.verified_share }),
            };
            let exits = Exits {
                home: *pick(&mut rng, &nets),
                pool: nets.clone(),
                sticky: 0.7,
                residential: self.residential_share,
            };
            members.push(Member::register(
                w,
                run.label,
                id,
                pick_str(&mut rng, &agents),
                exits,
            ));
        }

        let mut rng = run.rng(w, "sessions");
        let periods = active_periods(
            &mut rng,
            w.start,
            w.end,
            self.duty_cycle,
            ms(self.active_period),
        );
        let sessions_per_hour =
            n as f64 * self.requests_per_hour / self.turns_per_session / self.duty_cycle;
        // Session starts are driven by a work queue, not a clock: Poisson.
        let mut starts = Vec::new();
        for &(a, b) in &periods {
            let rate = sessions_per_hour / HOUR_MS as f64;
            starts.extend(poisson_times(&mut rng, a, b, rate, |_| rate));
        }
        let order = rotation(&mut rng, n, starts.len(), true);
        let mut schemas = Schemas {
            used: Vec::new(),
            reuse: self.schema_reuse,
            size: self.tools_per_request,
        };
        let temperature = *pick(&mut rng, &[None, Some(0.0), Some(1.0)]);
        for (start, s) in starts.into_iter().zip(order) {
            let m = &members[s];
            let turns = geometric(&mut rng, self.turns_per_session).min(60);
            let (tools_hash, tool_count) = schemas.next(&mut rng);
            let (system, system_tokens) = *pick(&mut rng, &system_prompts);
            let task = tasks[weighted(&mut rng, &task_weights)];
            let model = if rng.random_bool(0.8) {
                MODEL_LARGE
            } else {
                MODEL_SMALL
            };
            let reasoning = rng.random_bool(self.reasoning_share);
            let tools_tokens = tool_count * int(&mut rng, 80, 250);
            let mut t = start;
            let mut history = 0;
            let mut previous_prompt = 0;
            for turn in 1..=turns {
                let mut req = m.req(&mut rng, t, model);
                req.conversation_turns = turn;
                req.system_prompt_hash = Some(system);
                req.tools_hash = Some(tools_hash);
                req.tool_count = tool_count;
                req.prompt_tokens = system_tokens + tools_tokens + task.tokens + history;
                req.prompt_fingerprint = Some(fingerprint(&mut rng));
                req.template_fingerprint = Some(if turn == 1 {
                    task.fp
                } else {
                    *pick(&mut rng, &result_templates)
                });
                req.temperature = temperature;
                req.max_tokens = Some(*pick(&mut rng, &[8_192, 16_384]));
                req.reasoning_requested = reasoning;
                req.reasoning_effort = reasoning.then(|| {
                    if rng.random_bool(0.6) {
                        "high"
                    } else {
                        "medium"
                    }
                });
                // Agent prompts rarely ask for the reasoning in words; the
                // traces are the tool calls themselves.
                req.cot_elicitation_score = Some(uniform(&mut rng, 0.05, 0.35));
                req.topic = Some(task.topic);
                req.prompt_language = Some(if rng.random_bool(0.95) { "en" } else { "zh" });
                let last = turn == turns;
                let out = Outcome {
                    completion: (lognormal(&mut rng, if last { 900.0 } else { 300.0 }, 0.6) as i64)
                        .max(10),
                    reasoning: if reasoning {
                        lognormal(&mut rng, 700.0, 0.6) as i64
                    } else {
                        0
                    },
                    // The harness reuses the conversation prefix: cached.
                    cached: (previous_prompt as f64 * 0.9) as i64,
                    tool_use: !last || rng.random_bool(0.2),
                };
                previous_prompt = req.prompt_tokens;
                // Tool results are invented, not executed: the next turn
                // follows the response within seconds.
                let think = (out.completion + out.reasoning) as f64 / 95.0 * 1000.0;
                let gap = think * 1.2 + lognormal(&mut rng, 3_000.0, 0.6);
                history += out.completion + lognormal(&mut rng, 500.0, 0.8) as i64;
                w.push(&mut rng, req, out, HARVEST_FAULTS);
                t += gap as i64;
            }
        }
    }
}

impl LogitLoud {
    fn generate(&self, w: &mut World, run: &Run) {
        for i in 0..run.n {
            let mut r = run.rng(w, &format!("account/{i}"));
            let country = declared_country(&mut r);
            let id = Identity {
                created_at: days_before(&mut r, w.start, self.created_days),
                org: None,
                tier: "build",
                country,
                billing_country: billing_for(&mut r, country),
                card: Some(w.new_id("pm_", 20)),
                channel: wpick(&mut r, &[("web", 3.0), ("research", 1.0)]),
                verified: false,
            };
            let exits = Exits::fixed(cloud_prefix(&mut r));
            let m = Member::register(w, run.label, id, pick_str(&mut r, SCRIPT_AGENTS), exits);
            let formats: Vec<i64> = (0..int(&mut r, 2, 3))
                .map(|_| fingerprint(&mut r))
                .collect();
            let probes: Vec<(i64, i64, i64)> = (0..self.probe_prompts)
                .map(|_| {
                    (
                        fingerprint(&mut r),
                        *pick(&mut r, &formats),
                        int(&mut r, 8, 60),
                    )
                })
                .collect();
            let model = if r.random_bool(0.8) {
                MODEL_SMALL
            } else {
                MODEL_LARGE
            };
            let faults = Faults {
                rate_limited: self.rate_limited_share,
                ..Faults::NORMAL
            };
            let periods = active_periods(
                &mut r,
                w.start,
                w.end,
                self.duty_cycle,
                ms(self.active_period),
            );
            let times = scheduled(&mut r, &periods, self.requests_per_minute * 60.0, 0.3);
            // One probe prompt is queried under many bias maps (to read the
            // whole logit vector through the top-k window), then the next.
            let mut probe = r.random_range(0..probes.len());
            let mut left = int(
                &mut r,
                self.requests_per_probe[0],
                self.requests_per_probe[1],
            );
            for t in times {
                if left == 0 {
                    probe = (probe + 1) % probes.len();
                    left = int(
                        &mut r,
                        self.requests_per_probe[0],
                        self.requests_per_probe[1],
                    );
                }
                left -= 1;
                let (fp, template, tokens) = probes[probe];
                let mut req = m.req(&mut r, t, model);
                req.endpoint = EP_COMPLETIONS;
                req.prompt_tokens = tokens;
                req.prompt_fingerprint = Some(fp);
                req.template_fingerprint = Some(template);
                req.temperature = Some(0.0);
                let max_tokens = if r.random_bool(self.max_tokens_one_share) {
                    1
                } else {
                    int(&mut r, 2, 8)
                };
                req.max_tokens = Some(max_tokens);
                req.logprobs = true;
                req.top_logprobs = self.top_logprobs;
                req.logit_bias_size = int(&mut r, self.logit_bias_size[0], self.logit_bias_size[1]);
                req.cot_elicitation_score = Some(uniform(&mut r, 0.0, 0.05));
                // Probe prompts are token soup: the classifiers give up.
                req.topic = r.random_bool(0.3).then_some("other");
                req.prompt_language = r.random_bool(0.3).then_some("en");
                // The model would go on: every answer is cut at max_tokens.
                let out = Outcome {
                    completion: max_tokens + int(&mut r, 1, 50),
                    ..Outcome::default()
                };
                w.push(&mut r, req, out, faults);
            }
        }
    }
}

impl LogitThin {
    fn generate(&self, w: &mut World, run: &Run) {
        let n = run.n;
        let mut rng = run.rng(w, "setup");
        let nets = prefixes(&mut rng, self.ip_prefixes);
        let formats: Vec<i64> = (0..int(&mut rng, 2, 4))
            .map(|_| fingerprint(&mut rng))
            .collect();
        let probes: Vec<(i64, i64, i64)> = (0..self.probe_prompts)
            .map(|_| {
                (
                    fingerprint(&mut rng),
                    *pick(&mut rng, &formats),
                    int(&mut rng, 8, 80),
                )
            })
            .collect();
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let old = rng.random_bool(self.aged_share);
            let country = declared_country(&mut rng);
            let id = Identity {
                created_at: if old {
                    aged(&mut rng, w.start)
                } else {
                    days_before(&mut rng, w.start, self.created_days)
                },
                org: None,
                tier: if rng.random_bool(0.3) {
                    "free"
                } else {
                    "build"
                },
                country,
                billing_country: billing_for(&mut rng, country),
                card: Some(w.new_id("pm_", 20)),
                // Posing as researchers is the natural cover for logprobs.
                channel: wpick(
                    &mut rng,
                    &[("research", 4.0), ("web", 4.0), ("education", 2.0)],
                ),
                verified: rng.random_bool(if old { 0.5 } else { self.verified_share }),
            };
            let exits = Exits {
                home: *pick(&mut rng, &nets),
                pool: nets.clone(),
                sticky: 0.7,
                residential: self.residential_share,
            };
            let agent = script_agent(&mut rng);
            members.push(Member::register(w, run.label, id, agent, exits));
        }

        let mut rng = run.rng(w, "probes");
        let periods = active_periods(
            &mut rng,
            w.start,
            w.end,
            self.duty_cycle,
            ms(self.active_period),
        );
        let rate = n as f64 * self.requests_per_hour / self.duty_cycle;
        let times = scheduled(&mut rng, &periods, rate, self.timing_cv);
        let order = rotation(&mut rng, n, times.len(), true);
        let mut probe = rng.random_range(0..probes.len());
        let mut left = int(
            &mut rng,
            self.requests_per_probe[0],
            self.requests_per_probe[1],
        );
        for (t, s) in times.into_iter().zip(order) {
            // One probe's bias maps are sharded over all accounts at once.
            if left == 0 {
                probe = (probe + 1) % probes.len();
                left = int(
                    &mut rng,
                    self.requests_per_probe[0],
                    self.requests_per_probe[1],
                );
            }
            left -= 1;
            let (fp, template, tokens) = probes[probe];
            let m = &members[s];
            let model = if rng.random_bool(0.7) {
                MODEL_SMALL
            } else {
                MODEL_LARGE
            };
            let mut req = m.req(&mut rng, t, model);
            req.endpoint = if rng.random_bool(0.6) {
                EP_COMPLETIONS
            } else {
                EP_MESSAGES
            };
            req.prompt_tokens = tokens;
            req.prompt_fingerprint = Some(fp);
            req.template_fingerprint = Some(template);
            req.temperature = if rng.random_bool(0.7) {
                Some(0.0)
            } else {
                None
            };
            let max_tokens = if rng.random_bool(self.max_tokens_one_share) {
                1
            } else {
                int(&mut rng, 2, 16)
            };
            req.max_tokens = Some(max_tokens);
            req.logprobs = true;
            req.top_logprobs = wpick(&mut rng, &self.top_logprobs);
            req.logit_bias_size = if rng.random_bool(self.no_bias_share) {
                0
            } else {
                int(&mut rng, self.logit_bias_size[0], self.logit_bias_size[1])
            };
            req.cot_elicitation_score = Some(uniform(&mut rng, 0.0, 0.08));
            req.topic = rng.random_bool(0.4).then_some("other");
            req.prompt_language = rng.random_bool(0.5).then_some("en");
            let out = Outcome {
                completion: max_tokens + int(&mut rng, 0, 40),
                ..Outcome::default()
            };
            w.push(&mut rng, req, out, Faults::NORMAL);
        }
    }
}

impl TaxonomySweep {
    fn generate(&self, w: &mut World, run: &Run) {
        let mut rng = run.rng(w, "setup");
        let topics = static_topics(&self.topics);
        let nets = prefixes(&mut rng, self.ip_prefixes);
        let agent = script_agent(&mut rng);
        let system_prompt = fingerprint(&mut rng);
        let temperature = *pick(&mut rng, &[Some(0.0), Some(0.7), Some(1.0)]);
        let max_tokens = *pick(&mut rng, &[2_048, 4_096, 8_192]);
        let periods = active_periods(
            &mut rng,
            w.start,
            w.end,
            self.duty_cycle,
            ms(self.active_period),
        );
        let mut card = String::new();
        for i in 0..run.n {
            if i % self.accounts_per_card == 0 {
                card = w.new_id("pm_", 20);
            }
            let country = declared_country(&mut rng);
            let id = Identity {
                created_at: days_before(&mut rng, w.start, self.created_days),
                org: None,
                tier: "build",
                country,
                billing_country: billing_for(&mut rng, country),
                card: Some(card.clone()),
                channel: wpick(
                    &mut rng,
                    &[("startup", 3.0), ("research", 3.0), ("web", 2.0)],
                ),
                verified: rng.random_bool(self.verified_share),
            };
            let m = Member::register(w, run.label, id, agent, Exits::fixed(nets[i % nets.len()]));

            // Each account walks its shard of the taxonomy leaf by leaf:
            // every area in turn, each seed question in several wordings.
            let mut r = run.rng(w, &format!("account/{i}"));
            let rate = self.requests_per_hour / self.duty_cycle;
            let mut leaf = r.random_range(0..topics.len());
            let mut seed = (0_i64, 0_i64, "other");
            let mut left = 0;
            for t in scheduled(&mut r, &periods, rate, self.timing_cv) {
                if left == 0 {
                    leaf = (leaf + 1) % topics.len();
                    seed = (
                        fingerprint(&mut r),
                        lognormal(&mut r, 90.0, 0.5) as i64 + 10,
                        topics[leaf],
                    );
                    left = int(&mut r, self.paraphrases[0], self.paraphrases[1]);
                }
                left -= 1;
                let (template, tokens, topic) = seed;
                let mut req = m.req(&mut r, t, MODEL_LARGE);
                req.system_prompt_hash = Some(system_prompt);
                req.prompt_tokens = 120 + tokens + int(&mut r, -tokens / 5, tokens / 5);
                req.prompt_fingerprint = Some(fingerprint(&mut r));
                req.template_fingerprint = Some(template);
                req.n = self.n;
                req.temperature = temperature;
                req.max_tokens = Some(max_tokens);
                let reasoning = r.random_bool(self.reasoning_share);
                req.reasoning_requested = reasoning;
                req.reasoning_effort = reasoning.then_some("medium");
                req.cot_elicitation_score = Some(if r.random_bool(self.cot_share) {
                    uniform(&mut r, 0.6, 0.95)
                } else {
                    uniform(&mut r, 0.0, 0.3)
                });
                req.topic = Some(topic);
                req.prompt_language = Some("en");
                let out = Outcome {
                    completion: (lognormal(&mut r, 700.0, 0.6) as i64).max(20),
                    reasoning: if reasoning {
                        lognormal(&mut r, 1_200.0, 0.6) as i64
                    } else {
                        0
                    },
                    cached: 120,
                    tool_use: false,
                };
                w.push(&mut r, req, out, HARVEST_FAULTS);
            }
        }
    }
}

impl MultilingualCot {
    fn generate(&self, w: &mut World, run: &Run) {
        let mut rng = run.rng(w, "setup");
        let topics = static_topics(&self.topics);
        let languages: Vec<(&'static str, f64)> = self
            .languages
            .iter()
            .map(|(l, x)| (static_language(l), *x))
            .collect();
        // The accounts share one template pool per language.
        let pools: Vec<Vec<i64>> = languages
            .iter()
            .map(|_| {
                (0..self.templates_per_language)
                    .map(|_| fingerprint(&mut rng))
                    .collect()
            })
            .collect();
        let nets = prefixes(&mut rng, self.ip_prefixes);
        let agent = script_agent(&mut rng);
        let max_tokens = *pick(&mut rng, &[16_000, 32_000]);
        let temperature = *pick(&mut rng, &[Some(0.0), Some(0.6), None]);
        let periods = active_periods(
            &mut rng,
            w.start,
            w.end,
            self.duty_cycle,
            ms(self.active_period),
        );
        let topic_weights = zipf_weights(topics.len(), 1.0);
        for i in 0..run.n {
            let country = declared_country(&mut rng);
            let id = Identity {
                created_at: days_before(&mut rng, w.start, self.created_days),
                org: None,
                tier: if rng.random_bool(0.3) {
                    "free"
                } else {
                    "build"
                },
                country,
                billing_country: billing_for(&mut rng, country),
                card: Some(w.new_id("pm_", 20)),
                channel: wpick(&mut rng, FRAUD_CHANNELS),
                verified: rng.random_bool(self.verified_share),
            };
            let m = Member::register(w, run.label, id, agent, Exits::fixed(nets[i % nets.len()]));

            let mut r = run.rng(w, &format!("account/{i}"));
            let rate = self.requests_per_hour / self.duty_cycle;
            let mut queue: Vec<usize> = Vec::new();
            let mut topic = topics[0];
            for t in scheduled(&mut r, &periods, rate, self.timing_cv) {
                // Each seed question goes out in a few languages, one after
                // another.
                if queue.is_empty() {
                    topic = topics[weighted(&mut r, &topic_weights)];
                    let k = int(&mut r, self.translations[0], self.translations[1]) as usize;
                    let mut weights: Vec<f64> = languages.iter().map(|(_, x)| *x).collect();
                    for _ in 0..k.min(languages.len()) {
                        let j = weighted(&mut r, &weights);
                        weights[j] = 0.0;
                        queue.push(j);
                    }
                }
                let j = queue.pop().expect("queue refilled above");
                let language = languages[j].0;
                let mut req = m.req(&mut r, t, MODEL_LARGE);
                req.prompt_tokens = (lognormal(&mut r, 220.0, 0.5) as i64).max(30);
                req.prompt_fingerprint = Some(fingerprint(&mut r));
                req.template_fingerprint = Some(*pick(&mut r, &pools[j]));
                req.temperature = temperature;
                req.max_tokens = Some(max_tokens);
                let reasoning = r.random_bool(self.reasoning_share);
                req.reasoning_requested = reasoning;
                req.reasoning_effort = reasoning.then_some("high");
                let elicit = r.random_bool(self.cot_share);
                // The upstream classifier is trained mostly on English:
                // assumption that it scores the same ask lower elsewhere.
                req.cot_elicitation_score = Some(match (elicit, language == "en") {
                    (true, true) => uniform(&mut r, 0.7, 1.0),
                    (true, false) => uniform(&mut r, 0.5, 0.95),
                    (false, _) => uniform(&mut r, 0.05, 0.45),
                });
                req.topic = Some(topic);
                req.prompt_language = Some(language);
                let out = Outcome {
                    completion: (lognormal(&mut r, 1_400.0, 0.5) as i64).max(40),
                    reasoning: if reasoning {
                        (lognormal(&mut r, 2_800.0, 0.6) as i64).min(24_000)
                    } else {
                        0
                    },
                    cached: 0,
                    tool_use: false,
                };
                w.push(&mut r, req, out, HARVEST_FAULTS);
            }
        }
    }
}

impl ModelPivot {
    fn generate(&self, w: &mut World, run: &Run) {
        let mut rng = run.rng(w, "setup");
        let topics = static_topics(&self.topics);
        let tpls = templates(&mut rng, self.templates, &topics, (200, 1_200));
        let tpl_weights = zipf_weights(tpls.len(), 1.0);
        let traces = Traces::script(
            &mut rng,
            self.cot_share,
            self.reasoning_share,
            harvest_languages(),
        );
        let nets = prefixes(&mut rng, self.ip_prefixes);
        let agent = script_agent(&mut rng);
        let periods = active_periods(
            &mut rng,
            w.start,
            w.end,
            self.duty_cycle,
            ms(self.active_period),
        );
        // The operator flips its config once for the whole campaign; each
        // worker picks it up within minutes.
        let pivot = w.new_model.map(|(model, released)| {
            let delay = lognormal(&mut rng, ms(self.pivot_delay), 0.3) as i64;
            (model, released + delay)
        });
        let ramp = ms(self.pivot_ramp).max(1.0);
        for i in 0..run.n {
            let country = declared_country(&mut rng);
            let id = Identity {
                created_at: days_before(&mut rng, w.start, self.created_days),
                org: None,
                tier: "build",
                country,
                billing_country: billing_for(&mut rng, country),
                card: Some(w.new_id("pm_", 20)),
                channel: wpick(
                    &mut rng,
                    &[("research", 3.0), ("startup", 3.0), ("web", 2.0)],
                ),
                verified: rng.random_bool(self.verified_share),
            };
            let m = Member::register(w, run.label, id, agent, Exits::fixed(nets[i % nets.len()]));
            let mut r = run.rng(w, &format!("account/{i}"));
            let lag = int(&mut r, 0, 20) * MINUTE_MS;
            let rate = self.requests_per_hour / self.duty_cycle;
            let mut asked = Asked::default();
            for t in scheduled(&mut r, &periods, rate, self.timing_cv) {
                let share = match pivot {
                    Some((_, from)) if t >= from + lag => {
                        self.pivot_share * ((t - from - lag) as f64 / ramp).min(1.0)
                    }
                    _ => 0.0,
                };
                let model = match pivot {
                    Some((new, _)) if r.random_bool(share.clamp(0.0, 1.0)) => new,
                    _ if r.random_bool(0.9) => MODEL_LARGE,
                    _ => MODEL_SMALL,
                };
                let mut req = m.req(&mut r, t, model);
                let tpl = tpls[weighted(&mut r, &tpl_weights)];
                let fp = asked.next(&mut r, 0.04);
                let out = traces.fill(&mut r, &mut req, &tpl, fp);
                w.push(&mut r, req, out, HARVEST_FAULTS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use apache_avro::types::Value;
    use distill_watch::schemas::SchemaSet;

    use super::*;
    use crate::scenario::Realism;
    use crate::Traffic;

    const START: i64 = 1_793_577_600_000;

    use crate::tests::{decode, Row};

    fn plain(v: &Value) -> &Value {
        match v {
            Value::Union(_, inner) => inner,
            v => v,
        }
    }

    fn text(r: &Row, k: &str) -> Option<String> {
        match plain(&r[k]) {
            Value::String(s) | Value::Enum(_, s) => Some(s.clone()),
            Value::Null => None,
            other => panic!("{k}: {other:?}"),
        }
    }

    fn num(r: &Row, k: &str) -> Option<i64> {
        match plain(&r[k]) {
            Value::Long(x) | Value::TimestampMillis(x) => Some(*x),
            Value::Int(x) => Some(i64::from(*x)),
            Value::Null => None,
            other => panic!("{k}: {other:?}"),
        }
    }

    fn real(r: &Row, k: &str) -> Option<f64> {
        match plain(&r[k]) {
            Value::Double(x) => Some(*x),
            Value::Null => None,
            other => panic!("{k}: {other:?}"),
        }
    }

    fn flag(r: &Row, k: &str) -> bool {
        matches!(plain(&r[k]), Value::Boolean(true))
    }

    struct Seen {
        traffic: Traffic,
        reqs: Vec<Row>,
        /// finish_reason by request id.
        finish: HashMap<String, Option<String>>,
        /// Latest version of each account.
        accounts: BTreeMap<String, Row>,
        hours: f64,
    }

    impl Seen {
        fn per_account(&self) -> BTreeMap<String, Vec<&Row>> {
            let mut m: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
            for r in &self.reqs {
                m.entry(text(r, "account_id").unwrap()).or_default().push(r);
            }
            m
        }

        fn share(&self, f: impl Fn(&Row) -> bool) -> f64 {
            self.reqs.iter().filter(|r| f(r)).count() as f64 / self.reqs.len().max(1) as f64
        }
    }

    fn run(c: &Campaign, accounts: usize, hours: i64, release_after_h: Option<i64>) -> Seen {
        run_seeded(c, accounts, hours, release_after_h, 11)
    }

    fn run_seeded(
        c: &Campaign,
        accounts: usize,
        hours: i64,
        release_after_h: Option<i64>,
        seed: u64,
    ) -> Seen {
        let mut w = World::new(seed, START, hours * HOUR_MS, 1.0);
        if let Some(h) = release_after_h {
            w = w.with_release("atlas-4", START + h * HOUR_MS);
        }
        c.generate(&mut w, "campaign/0/test", "test", accounts);
        let traffic = w.finish(&Realism::off());
        let set = SchemaSet::builtin();
        let reqs: Vec<Row> = traffic
            .requests
            .iter()
            .map(|r| decode(r, &set.request))
            .collect();
        let finish = traffic
            .responses
            .iter()
            .map(|r| {
                let row = decode(r, &set.response);
                (
                    text(&row, "request_id").unwrap(),
                    text(&row, "finish_reason"),
                )
            })
            .collect();
        let mut accounts = BTreeMap::new();
        for a in &traffic.accounts {
            let row = decode(a, &set.account);
            accounts.insert(text(&row, "account_id").unwrap(), row);
        }
        Seen {
            traffic,
            reqs,
            finish,
            accounts,
            hours: hours as f64,
        }
    }

    fn parse(style: &str, toml_text: &str) -> Campaign {
        let t: toml::Table = toml::from_str(toml_text).unwrap();
        Campaign::parse(style, t).unwrap_or_else(|e| panic!("{style}: {e}"))
    }

    fn prefix(ip: &str) -> String {
        ip.rsplit_once('.').map_or(ip, |(p, _)| p).to_string()
    }

    #[test]
    fn every_style_parses_defaults_and_rejects_typos() {
        for style in Campaign::STYLES {
            let c = Campaign::parse(style, toml::Table::new()).unwrap();
            assert_eq!(c.style(), *style);
            assert_eq!(c.needs_release(), *style == MODEL_PIVOT);
            let mut t = toml::Table::new();
            t.insert("bogus_key".into(), toml::Value::Integer(1));
            let e = Campaign::parse(style, t).unwrap_err();
            assert!(e.contains("bogus_key"), "{style}: {e}");
        }
        assert!(Campaign::parse("nope", toml::Table::new())
            .unwrap_err()
            .contains("hydra_proxy"));
        let t: toml::Table = toml::from_str("topics = [\"poetry\"]").unwrap();
        assert!(Campaign::parse(COT_HARVEST, t)
            .unwrap_err()
            .contains("poetry"));
        let t: toml::Table = toml::from_str("ordinary_share = 1.5").unwrap();
        assert!(Campaign::parse(HYDRA_PROXY, t).is_err());
        let t: toml::Table = toml::from_str("active_period = \"3 hours\"").unwrap();
        assert!(Campaign::parse(TAXONOMY_SWEEP, t).is_err());
        // Integers where floats are expected, durations as strings.
        parse(
            HYDRA_PROXY,
            "created_days = [2, 30]\nactive_period = \"12h\"",
        );
    }

    #[test]
    fn hydra_shared_card_is_one_card_slow_round_robin_with_replacements() {
        let c = parse(HYDRA_SHARED_CARD, "bans_per_member_day = 0.3");
        let s = run(&c, 40, 24, None);
        let cards: BTreeSet<String> = s
            .accounts
            .values()
            .map(|a| text(a, "payment_fingerprint").unwrap())
            .collect();
        assert!(cards.len() <= 2, "{cards:?}");
        assert!(s.accounts.values().all(|a| !flag(a, "verified")));
        assert!(s.accounts.len() > 40, "bans were replaced");

        let per = s.per_account();
        let mut originals = Vec::new();
        let mut replaced = Vec::new();
        for (id, rows) in &per {
            let first = rows
                .iter()
                .map(|r| num(r, "event_time").unwrap())
                .min()
                .unwrap();
            let created = num(&s.accounts[id], "created_at").unwrap();
            if created > START {
                // A replacement, registered minutes before it takes over;
                // its first turn in the rotation comes within a cycle
                // (about an hour) unless the job is pausing.
                replaced.push(first - created);
            } else {
                originals.push(rows.len() as f64 / s.hours);
            }
        }
        replaced.sort();
        assert!(!replaced.is_empty());
        let median = replaced[replaced.len() / 2];
        assert!(median < 2 * HOUR_MS, "median {median} ms to first turn");
        let mean = originals.iter().sum::<f64>() / originals.len() as f64;
        let max = originals.iter().cloned().fold(0.0, f64::max);
        assert!((0.5..=1.6).contains(&mean), "mean {mean}/h");
        assert!(max < 3.0, "max {max}/h");
        // Ordinary resold traffic is mixed in.
        let harvest = s.share(|r| real(r, "cot_elicitation_score").unwrap() >= 0.7);
        assert!((0.3..0.8).contains(&harvest), "{harvest}");
    }

    #[test]
    fn hydra_proxy_members_have_own_cards_and_share_exits() {
        let c = Campaign::parse(HYDRA_PROXY, toml::Table::new()).unwrap();
        let s = run(&c, 80, 24, None);
        let per = s.per_account();
        assert!(per.len() >= 75, "{} active members", per.len());
        let cards: BTreeSet<String> = s
            .accounts
            .values()
            .map(|a| text(a, "payment_fingerprint").unwrap())
            .collect();
        assert!(
            cards.len() as f64 >= 0.8 * s.accounts.len() as f64,
            "{} cards for {} accounts",
            cards.len(),
            s.accounts.len()
        );
        for rows in per.values() {
            assert!(
                (rows.len() as f64 / s.hours) < 3.0,
                "{} requests",
                rows.len()
            );
        }
        let total = s.reqs.len() as f64 / (80.0 * s.hours);
        assert!((0.6..1.6).contains(&total), "{total}/h per member");

        // A few /24s carry most traffic, each used by many members.
        let mut by_prefix: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in &s.reqs {
            let p = prefix(&text(r, "client_ip").unwrap());
            *counts.entry(p.clone()).or_default() += 1;
            by_prefix
                .entry(p)
                .or_default()
                .insert(text(r, "account_id").unwrap());
        }
        let mut top: Vec<(&String, &usize)> = counts.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        let top6: usize = top.iter().take(6).map(|(_, n)| **n).sum();
        let share = top6 as f64 / s.reqs.len() as f64;
        assert!((0.6..0.9).contains(&share), "top prefixes carry {share}");
        assert!(top.iter().take(6).all(|(p, _)| by_prefix[*p].len() >= 10));
        let agents: BTreeSet<String> = s
            .reqs
            .iter()
            .map(|r| text(r, "user_agent").unwrap())
            .collect();
        assert!(agents.len() <= 2);
        // Half of it is ordinary-looking.
        let ordinary = s.share(|r| {
            real(r, "cot_elicitation_score").unwrap() < 0.5 && !flag(r, "reasoning_requested")
        });
        assert!(ordinary > 0.35, "{ordinary}");
    }

    #[test]
    fn cot_harvest_elicits_reasoning_at_moderate_volume() {
        let c = Campaign::parse(COT_HARVEST, toml::Table::new()).unwrap();
        let s = run(&c, 4, 12, None);
        let cot = s.share(|r| real(r, "cot_elicitation_score").unwrap() >= 0.75);
        assert!((0.45..0.75).contains(&cot), "{cot}");
        let high = s.share(|r| text(r, "reasoning_effort").as_deref() == Some("high"));
        assert!(high > 0.35, "{high}");
        let per_hour = s.reqs.len() as f64 / (4.0 * s.hours);
        assert!((8.0..35.0).contains(&per_hour), "{per_hour}/h");
        let topics: BTreeSet<String> = s.reqs.iter().filter_map(|r| text(r, "topic")).collect();
        assert!(topics.len() <= 5, "{topics:?}");
        let templates: BTreeSet<i64> = s
            .reqs
            .iter()
            .map(|r| num(r, "template_fingerprint").unwrap())
            .collect();
        assert!(templates.len() <= 22, "{}", templates.len());
    }

    #[test]
    fn tool_harvest_invents_tool_schemas() {
        let c = Campaign::parse(TOOL_HARVEST, toml::Table::new()).unwrap();
        let s = run(&c, 30, 24, None);
        let per_hour = s.reqs.len() as f64 / (30.0 * s.hours);
        assert!((0.5..2.0).contains(&per_hour), "{per_hour}/h");
        let schemas: BTreeSet<i64> = s.reqs.iter().filter_map(|r| num(r, "tools_hash")).collect();
        let sessions = s.share(|r| num(r, "conversation_turns") == Some(1)) * s.reqs.len() as f64;
        assert!(
            schemas.len() as f64 >= 0.7 * sessions,
            "{} schemas, {sessions} sessions",
            schemas.len()
        );
        let tools: f64 = s
            .reqs
            .iter()
            .map(|r| num(r, "tool_count").unwrap() as f64)
            .sum::<f64>()
            / s.reqs.len() as f64;
        assert!(tools >= 10.0, "{tools}");
        assert!(s.share(|r| num(r, "conversation_turns").unwrap() > 1) > 0.6);
        assert!(s.share(|r| text(r, "topic").as_deref() == Some("coding")) > 0.4);
        let tool_use = s
            .reqs
            .iter()
            .filter(|r| s.finish[&text(r, "request_id").unwrap()].as_deref() == Some("tool_use"))
            .count() as f64
            / s.reqs.len() as f64;
        assert!(tool_use > 0.6, "{tool_use}");
    }

    #[test]
    fn logit_loud_is_max_tokens_one_and_fast() {
        let c = parse(LOGIT_LOUD, "duty_cycle = 1.0");
        let s = run(&c, 2, 3, None);
        assert!(s.share(|r| num(r, "max_tokens") == Some(1)) > 0.9);
        assert!(s.share(|r| num(r, "top_logprobs") == Some(20)) == 1.0);
        assert!(s.share(|r| num(r, "logit_bias_size").unwrap() >= 100) == 1.0);
        let per_minute = s.reqs.len() as f64 / (2.0 * 180.0);
        assert!((30.0..50.0).contains(&per_minute), "{per_minute}/min");
        let prompts: BTreeSet<i64> = s
            .reqs
            .iter()
            .map(|r| num(r, "prompt_fingerprint").unwrap())
            .collect();
        assert!(prompts.len() <= 32, "{}", prompts.len());
        let cut = s
            .reqs
            .iter()
            .filter(|r| s.finish[&text(r, "request_id").unwrap()].as_deref() == Some("length"))
            .count() as f64
            / s.reqs.len() as f64;
        assert!(cut > 0.85, "{cut}");
    }

    #[test]
    fn logit_thin_is_quiet_per_account_but_shares_probes() {
        let c = Campaign::parse(LOGIT_THIN, toml::Table::new()).unwrap();
        let s = run(&c, 40, 24, None);
        let per = s.per_account();
        let max = per.values().map(|v| v.len()).max().unwrap() as f64 / s.hours;
        assert!(max < 10.0, "max {max}/h");
        assert!(s.share(|r| flag(r, "logprobs")) == 1.0);
        assert!(s.share(|r| num(r, "logit_bias_size").unwrap() <= 60) == 1.0);
        // The same probe prompt goes out through many accounts.
        let mut by_prompt: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        for r in &s.reqs {
            by_prompt
                .entry(num(r, "prompt_fingerprint").unwrap())
                .or_default()
                .insert(text(r, "account_id").unwrap());
        }
        let widest = by_prompt.values().map(BTreeSet::len).max().unwrap();
        assert!(widest >= 20, "{widest}");
    }

    #[test]
    fn taxonomy_sweep_covers_evenly_with_paraphrases_on_a_clock() {
        let c = Campaign::parse(TAXONOMY_SWEEP, toml::Table::new()).unwrap();
        let s = run(&c, 3, 24, None);
        let mut topics: BTreeMap<String, usize> = BTreeMap::new();
        for r in &s.reqs {
            *topics.entry(text(r, "topic").unwrap()).or_default() += 1;
        }
        assert_eq!(topics.len(), TOPICS.len());
        let expected = s.reqs.len() as f64 / TOPICS.len() as f64;
        assert!(
            topics.values().all(|n| (*n as f64) > 0.6 * expected),
            "{topics:?}"
        );
        let templates: BTreeSet<i64> = s
            .reqs
            .iter()
            .map(|r| num(r, "template_fingerprint").unwrap())
            .collect();
        let per_template = s.reqs.len() as f64 / templates.len() as f64;
        assert!((3.0..=6.0).contains(&per_template), "{per_template}");
        let prompts: BTreeSet<i64> = s
            .reqs
            .iter()
            .map(|r| num(r, "prompt_fingerprint").unwrap())
            .collect();
        assert_eq!(prompts.len(), s.reqs.len());
        // Machine-regular inside one active period.
        for rows in s.per_account().values() {
            let mut ts: Vec<i64> = rows.iter().map(|r| num(r, "event_time").unwrap()).collect();
            ts.sort();
            let gaps: Vec<f64> = ts.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
            let mut sorted = gaps.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            let within: Vec<f64> = gaps.into_iter().filter(|g| *g < 3.0 * median).collect();
            let mean = within.iter().sum::<f64>() / within.len() as f64;
            let sd = (within.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / within.len() as f64)
                .sqrt();
            assert!(sd / mean < 0.2, "cv {}", sd / mean);
        }
    }

    #[test]
    fn multilingual_cot_is_mostly_not_english() {
        let c = Campaign::parse(MULTILINGUAL_COT, toml::Table::new()).unwrap();
        let s = run(&c, 5, 12, None);
        let english = s.share(|r| text(r, "prompt_language").as_deref() == Some("en"));
        assert!(english < 0.5, "{english}");
        let languages: BTreeSet<String> = s
            .reqs
            .iter()
            .filter_map(|r| text(r, "prompt_language"))
            .collect();
        assert!(languages.len() >= 7, "{languages:?}");
        assert!(s.share(|r| real(r, "cot_elicitation_score").unwrap() >= 0.5) > 0.7);
        assert!(s.share(|r| flag(r, "reasoning_requested")) > 0.7);
    }

    #[test]
    fn model_pivot_moves_half_its_traffic_within_hours_of_release() {
        let c = parse(MODEL_PIVOT, "duty_cycle = 1.0");
        let s = run(&c, 6, 36, Some(12));
        let release = START + 12 * HOUR_MS;
        let on_new = |r: &Row| text(r, "model").as_deref() == Some("atlas-4");
        let before: Vec<&Row> = s
            .reqs
            .iter()
            .filter(|r| num(r, "event_time").unwrap() < release)
            .collect();
        assert!(!before.is_empty() && before.iter().all(|r| !on_new(r)));
        let large = before
            .iter()
            .filter(|r| text(r, "model").as_deref() == Some(MODEL_LARGE))
            .count() as f64
            / before.len() as f64;
        assert!(large > 0.8, "{large}");
        let first_new = s
            .reqs
            .iter()
            .filter(|r| on_new(r))
            .map(|r| num(r, "event_time").unwrap())
            .min()
            .expect("pivoted");
        assert!(first_new - release < 12 * HOUR_MS);
        let late: Vec<&Row> = s
            .reqs
            .iter()
            .filter(|r| num(r, "event_time").unwrap() >= START + 26 * HOUR_MS)
            .collect();
        let share = late.iter().filter(|r| on_new(r)).count() as f64 / late.len() as f64;
        assert!((0.38..0.62).contains(&share), "{share}");
    }

    #[test]
    fn generation_is_deterministic_per_seed() {
        for style in [HYDRA_PROXY, TOOL_HARVEST, MODEL_PIVOT] {
            let c = Campaign::parse(style, toml::Table::new()).unwrap();
            let a = run_seeded(&c, 10, 6, Some(2), 5);
            let b = run_seeded(&c, 10, 6, Some(2), 5);
            let other = run_seeded(&c, 10, 6, Some(2), 6);
            assert_eq!(a.traffic, b.traffic, "{style}");
            assert_ne!(a.traffic.requests, other.traffic.requests, "{style}");
            assert!(a
                .traffic
                .truth
                .iter()
                .all(|t| t.label == Label::campaign(style, "test")));
        }
    }
}
