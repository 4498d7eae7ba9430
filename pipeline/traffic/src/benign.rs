//! Benign populations: the false-positive traps of SIGNALS.md.
//!
//! Every population here is legitimate traffic that shares some surface
//! features with distillation: volume, machine-regular timing, temperature 0,
//! logprobs, a system prompt shared by thousands of requests, many accounts
//! on one card, bursts and 429s, repeated prompts, step-by-step requests.
//! They are modelled on what real API customers do, not on any detector rule:
//! a feature that separates them from the campaigns should do so because the
//! behaviour differs, not because the generator made it easy.
//!
//! Prompts repeat the way they do in real traffic. Popular questions and
//! homework problems come from pools generated from the seed alone (not from
//! the population's stream), so unrelated chat users and students ask the
//! very same things; people regenerate answers; CI suites and benchmark
//! reruns send identical prompts again. Shared network infrastructure is
//! shared too: VPN exits, university campus networks, corporate egress
//! ranges and hosted CI runners put unrelated benign accounts behind the
//! same /24.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::Rng;
use serde::Deserialize;

use crate::dist::{
    self, diurnal, exponential, fingerprint, geometric, int, local_hour, lognormal, normal, pick,
    poisson_times, regular_times, uniform, weighted, zipf_weights, DAY_MS, HOUR_MS, MINUTE_MS,
};
use crate::geo::{self, cloud_prefix, ip_in, pick_country, Country, HUMAN_AGENTS, SDK_AGENTS};
use crate::model::{
    Account, Faults, Outcome, Req, World, EP_COMPLETIONS, EP_MESSAGES, MODEL_LARGE, MODEL_SMALL,
};
use crate::scenario::params;
use crate::truth::Label;

// ---------------------------------------------------------------------------
// The scenario interface
// ---------------------------------------------------------------------------

/// One benign population kind with its parameters.
#[derive(Debug, Clone)]
pub enum Benign {
    ChatUser(ChatUser),
    Student(Student),
    Researcher(Researcher),
    AppBackend(AppBackend),
    EnterpriseBatch(EnterpriseBatch),
    EnterpriseFleet(EnterpriseFleet),
    EvalHarness(EvalHarness),
    LaunchBurst(LaunchBurst),
    Aggregator(Aggregator),
    CiPipeline(CiPipeline),
}

impl Benign {
    pub const KINDS: &'static [&'static str] = &[
        "chat_user",
        "student",
        "researcher",
        "app_backend",
        "enterprise_batch",
        "enterprise_fleet",
        "eval_harness",
        "launch_burst",
        "aggregator",
        "ci_pipeline",
    ];

    /// Parse a kind's params (the `[[benign]]` table minus kind/name/accounts).
    /// Unknown keys are errors.
    pub fn parse(kind: &str, t: toml::Table) -> Result<Benign, String> {
        Ok(match kind {
            "chat_user" => Benign::ChatUser(params(t)?),
            "student" => Benign::Student(params(t)?),
            "researcher" => Benign::Researcher(params(t)?),
            "app_backend" => Benign::AppBackend(params(t)?),
            "enterprise_batch" => Benign::EnterpriseBatch(params(t)?),
            "enterprise_fleet" => Benign::EnterpriseFleet(params(t)?),
            "eval_harness" => Benign::EvalHarness(params(t)?),
            "launch_burst" => Benign::LaunchBurst(params(t)?),
            "aggregator" => Benign::Aggregator(params(t)?),
            "ci_pipeline" => Benign::CiPipeline(params(t)?),
            other => {
                return Err(format!(
                    "unknown benign kind {other:?}; known: {}",
                    Self::KINDS.join(", ")
                ))
            }
        })
    }

    /// Generate `accounts` accounts of this kind, labelled
    /// `Label::benign(population)`, drawing randomness only from streams
    /// derived from `stream` (and from seed-wide shared pools).
    pub fn generate(&self, w: &mut World, stream: &str, population: &str, accounts: usize) {
        let label = Label::benign(population);
        match self {
            Benign::ChatUser(p) => p.generate(w, stream, &label, accounts),
            Benign::Student(p) => p.generate(w, stream, &label, accounts),
            Benign::Researcher(p) => p.generate(w, stream, &label, accounts),
            Benign::AppBackend(p) => p.generate(w, stream, &label, accounts),
            Benign::EnterpriseBatch(p) => p.generate(w, stream, &label, accounts),
            Benign::EnterpriseFleet(p) => p.generate(w, stream, &label, accounts),
            Benign::EvalHarness(p) => p.generate(w, stream, &label, accounts),
            Benign::LaunchBurst(p) => p.generate(w, stream, &label, accounts),
            Benign::Aggregator(p) => p.generate(w, stream, &label, accounts),
            Benign::CiPipeline(p) => p.generate(w, stream, &label, accounts),
        }
    }
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Capability areas, as the upstream prompt classifier names them.
const TOPICS: [&str; 7] = [
    "chat",
    "writing",
    "coding",
    "math",
    "science",
    "reasoning",
    "other",
];

/// How often each area comes up in general-purpose traffic (assumption,
/// loosely following public usage breakdowns where writing, coding and
/// everyday questions dominate).
const TOPIC_MIX: [f64; 7] = [0.24, 0.2, 0.22, 0.08, 0.07, 0.04, 0.15];

/// A request with the fields every population sets, the rest at schema
/// defaults (single turn, n = 1, nothing optional).
fn base_req(account_id: &str, api_key: &str, t: i64, model: &'static str) -> Req {
    Req {
        account_id: account_id.to_string(),
        api_key_id: Some(api_key.to_string()),
        event_time: t,
        model,
        endpoint: EP_MESSAGES,
        conversation_turns: 1,
        n: 1,
        ..Req::default()
    }
}

/// One of a list of names (typed, so callers need no deref).
fn pick_str(rng: &mut StdRng, items: &[&'static str]) -> &'static str {
    pick::<&'static str>(rng, items)
}

/// Days before `start`, with a random time of day, for `created_at`.
fn days_before(rng: &mut StdRng, start: i64, lo_days: f64, hi_days: f64) -> i64 {
    start - (uniform(rng, lo_days, hi_days) * DAY_MS as f64) as i64
}

/// True with probability `p`; out-of-range parameters saturate instead of
/// panicking like `random_bool` would.
fn chance(rng: &mut StdRng, p: f64) -> bool {
    rng.random::<f64>() < p
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn tokens(x: f64, lo: i64, hi: i64) -> i64 {
    (x as i64).clamp(lo, hi)
}

/// A payment instrument fingerprint as the billing system would expose it.
fn payment(w: &mut World) -> String {
    w.new_id("pm_", 20)
}

/// Most prompts do not ask for written-out reasoning: classifier scores pile
/// up near zero with a thin tail.
fn low_cot(rng: &mut StdRng) -> f64 {
    let u: f64 = rng.random();
    round3(u * u * u * 0.4)
}

/// An explicit "explain step by step" request.
fn high_cot(rng: &mut StdRng) -> f64 {
    round3(uniform(rng, 0.55, 0.95))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Day of the week at local time, 0 = Sunday (1970-01-01 was a Thursday).
fn weekday(t: i64, offset_h: f64) -> i64 {
    let local = t + (offset_h * HOUR_MS as f64) as i64;
    (local.div_euclid(DAY_MS) + 4).rem_euclid(7)
}

fn is_weekend(t: i64, offset_h: f64) -> bool {
    matches!(weekday(t, offset_h), 0 | 6)
}

/// Signed distance in hours between two hours of day, in [-12, 12).
fn hour_diff(h: f64, centre: f64) -> f64 {
    (h - centre + 12.0).rem_euclid(24.0) - 12.0
}

/// Activity of office workers at a local hour of a workday: arrivals from
/// 07:30, a lunch dip, a taper after 17:00, a little late work.
fn office(h: f64) -> f64 {
    match h {
        h if h < 7.5 => 0.02,
        h if h < 9.0 => 0.02 + 0.98 * (h - 7.5) / 1.5,
        h if h < 12.0 => 1.0,
        h if h < 13.5 => 0.6,
        h if h < 17.0 => 1.0,
        h if h < 20.0 => 1.0 - 0.93 * (h - 17.0) / 3.0,
        _ => 0.05,
    }
}

/// One person's day: the generic diurnal curve shifted to their own rhythm
/// and sharpened, since an individual sleeps far more completely than a
/// population does.
fn personal(h: f64, shift: f64) -> f64 {
    diurnal(h - shift).powf(1.6)
}

/// Mean and maximum of a shape over a week of 15-minute steps from `from`.
fn week_stats(from: i64, shape: &impl Fn(i64) -> f64) -> (f64, f64) {
    let step = 15 * MINUTE_MS;
    let points = 7 * 96;
    let (mut sum, mut max) = (0.0, 0.0_f64);
    for i in 0..points {
        let v = shape(from + i * step).max(0.0);
        sum += v;
        max = max.max(v);
    }
    (sum / points as f64, max)
}

/// Event times in `[from, to)` of a Poisson process averaging `per_day`
/// events a day (over a week), shaped by `shape(t)` (any non-negative
/// function of time; only its relative size matters).
fn shaped_times(
    rng: &mut StdRng,
    from: i64,
    to: i64,
    per_day: f64,
    shape: impl Fn(i64) -> f64,
) -> Vec<i64> {
    if to <= from || per_day <= 0.0 {
        return Vec::new();
    }
    // Normalised over a whole week so weekday/weekend shapes average right.
    let (mean, max) = week_stats(from, &shape);
    if mean <= 0.0 {
        return Vec::new();
    }
    let scale = per_day / DAY_MS as f64 / mean;
    poisson_times(rng, from, to, max * 1.15 * scale, |t| {
        shape(t).max(0.0) * scale
    })
}

/// Send a request through the gateway's rate limiter: with probability
/// `p429` an attempt is rejected, and the client SDK retries the identical
/// request after an exponential backoff, up to `retries` times. Retries are
/// why 429s come with duplicate prompts in real traffic.
fn send(
    w: &mut World,
    rng: &mut StdRng,
    mut req: Req,
    out: Outcome,
    faults: Faults,
    p429: f64,
    retries: u32,
) {
    let mut attempt = 0;
    loop {
        if p429 > 0.0 && chance(rng, p429) {
            let limited = Faults {
                rate_limited: 1.0,
                ..faults
            };
            w.push(rng, req.clone(), out, limited);
            if attempt >= retries {
                return;
            }
            let backoff = 500.0 * 2f64.powi(attempt as i32) * uniform(rng, 0.75, 1.5);
            req.event_time += backoff as i64 + int(rng, 20, 120);
            attempt += 1;
        } else {
            w.push(rng, req, out, faults);
            return;
        }
    }
}

/// The fields that stay fixed for one client of an account.
#[derive(Debug, Clone)]
struct Client {
    account_id: String,
    key: String,
    ip: String,
    user_agent: &'static str,
}

impl Client {
    fn req(&self, t: i64, model: &'static str) -> Req {
        let mut req = base_req(&self.account_id, &self.key, t, model);
        req.client_ip = Some(self.ip.clone());
        req.user_agent = Some(self.user_agent);
        req
    }
}

/// Prompt-level facts of one prompt (what the upstream summariser emits).
#[derive(Debug, Clone, Copy)]
struct Prompt {
    fp: i64,
    template: i64,
    topic: &'static str,
    language: &'static str,
    tokens: i64,
    cot: f64,
}

impl Prompt {
    /// A one-off prompt nobody else writes.
    fn fresh(rng: &mut StdRng, topic: &'static str, language: &'static str, tokens: i64) -> Self {
        Prompt {
            fp: fingerprint(rng),
            template: fingerprint(rng),
            topic,
            language,
            tokens,
            cot: low_cot(rng),
        }
    }

    fn apply(&self, req: &mut Req) {
        req.prompt_fingerprint = Some(self.fp);
        req.template_fingerprint = Some(self.template);
        req.topic = Some(self.topic);
        req.prompt_language = Some(self.language);
        req.cot_elicitation_score = Some(self.cot);
    }
}

/// A Zipf-weighted set of prompts.
struct Pool {
    items: Vec<Prompt>,
    cumulative: Vec<f64>,
}

impl Pool {
    fn new(items: Vec<Prompt>, s: f64) -> Pool {
        let mut acc = 0.0;
        let cumulative = zipf_weights(items.len(), s)
            .into_iter()
            .map(|x| {
                acc += x;
                acc
            })
            .collect();
        Pool { items, cumulative }
    }

    fn draw(&self, rng: &mut StdRng) -> Prompt {
        let total = *self.cumulative.last().expect("pools are never empty");
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|c| *c <= x);
        self.items[i.min(self.items.len() - 1)]
    }
}

/// Which seed-wide prompt pool.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PoolKind {
    /// Questions many people ask ("what is the difference between affect and
    /// effect", "write a cover letter for ..."), in every area.
    Popular,
    /// Textbook and homework problems students paste in.
    Homework,
}

/// The seed-wide pools, per language, built on first use. They depend only
/// on (seed, kind, language), so every population that draws from them sees
/// the same prompts: a popular question is shared across unrelated accounts
/// and populations.
struct Pools {
    seed: u64,
    pools: BTreeMap<(PoolKind, &'static str), Pool>,
}

impl Pools {
    fn new(seed: u64) -> Pools {
        Pools {
            seed,
            pools: BTreeMap::new(),
        }
    }

    fn draw(&mut self, rng: &mut StdRng, kind: PoolKind, language: &'static str) -> Prompt {
        let seed = self.seed;
        self.pools
            .entry((kind, language))
            .or_insert_with(|| build_pool(seed, kind, language))
            .draw(rng)
    }
}

fn build_pool(seed: u64, kind: PoolKind, language: &'static str) -> Pool {
    let name = match kind {
        PoolKind::Popular => "popular-prompts",
        PoolKind::Homework => "homework-problems",
    };
    let mut rng = dist::stream(seed, &format!("{name}/{language}"));
    // English dominates; other languages have smaller head sets.
    let n = match (kind, language) {
        (PoolKind::Popular, "en") => 2_000,
        (PoolKind::Popular, _) => 500,
        (PoolKind::Homework, "en") => 1_200,
        (PoolKind::Homework, _) => 300,
    };
    // Many popular prompts are one phrasing with different entities ("what is
    // the capital of X"): a smaller, also skewed, set of templates.
    let templates: Vec<i64> = (0..n / 4).map(|_| fingerprint(&mut rng)).collect();
    let template_weights = zipf_weights(templates.len(), 1.0);
    let items = (0..n)
        .map(|_| {
            let template = templates[weighted(&mut rng, &template_weights)];
            match kind {
                PoolKind::Popular => {
                    let topic = TOPICS[weighted(&mut rng, &TOPIC_MIX)];
                    Prompt {
                        fp: fingerprint(&mut rng),
                        template,
                        topic,
                        language,
                        tokens: tokens(lognormal(&mut rng, 18.0, 0.7), 2, 400),
                        cot: if chance(&mut rng, 0.08) {
                            high_cot(&mut rng)
                        } else {
                            low_cot(&mut rng)
                        },
                    }
                }
                PoolKind::Homework => {
                    let topic = ["math", "science", "coding", "reasoning"]
                        [weighted(&mut rng, &[0.45, 0.25, 0.25, 0.05])];
                    Prompt {
                        fp: fingerprint(&mut rng),
                        template,
                        topic,
                        language,
                        tokens: tokens(lognormal(&mut rng, 90.0, 0.6), 15, 1_500),
                        cot: low_cot(&mut rng),
                    }
                }
            }
        })
        .collect();
    // Zipf s = 0.9: the top question is a few percent of all draws, the
    // tail is long (assumption, the usual shape of query popularity).
    Pool::new(items, 0.9)
}

/// Phrasings many unrelated people use around their own content ("translate
/// this into ...", "fix this code: ..."): shared templates, distinct prompts.
fn common_templates(seed: u64) -> Vec<i64> {
    let mut rng = dist::stream(seed, "common-templates");
    (0..40).map(|_| fingerprint(&mut rng)).collect()
}

/// Exit /24s of commercial VPN providers: a popular exit carries many
/// unrelated users.
fn vpn_exits(seed: u64) -> Vec<[u8; 3]> {
    let mut rng = dist::stream(seed, "vpn-exits");
    (0..40).map(|_| cloud_prefix(&mut rng)).collect()
}

/// /24s of hosted CI runners (a cloud provider's published ranges): every
/// pipeline on hosted runners calls from one of them, run after run.
fn ci_runner_prefixes(seed: u64) -> Vec<[u8; 3]> {
    let mut rng = dist::stream(seed, "ci-runners");
    (0..200)
        .map(|_| {
            [
                *pick(&mut rng, &[20u8, 40, 52, 13]),
                int(&mut rng, 0, 255) as u8,
                int(&mut rng, 0, 255) as u8,
            ]
        })
        .collect()
}

/// A university: its campus NAT puts every on-campus student behind one /24,
/// and each course's problem set is pasted in by many of its students.
struct University {
    country: &'static Country,
    language: &'static str,
    campus: [u8; 3],
    courses: Vec<Vec<Prompt>>,
}

fn universities(seed: u64) -> (Vec<University>, Vec<f64>) {
    let mut rng = dist::stream(seed, "universities");
    let unis: Vec<University> = (0..60)
        .map(|_| {
            let country = pick_country(&mut rng);
            let language = country.languages[0].0;
            let campus = [
                *pick(&mut rng, country.residential_octets),
                int(&mut rng, 0, 255) as u8,
                int(&mut rng, 0, 255) as u8,
            ];
            let courses = (0..3)
                .map(|_| {
                    let topic = *pick(&mut rng, &["math", "science", "coding"]);
                    let template = fingerprint(&mut rng);
                    (0..int(&mut rng, 20, 60))
                        .map(|_| Prompt {
                            fp: fingerprint(&mut rng),
                            // Problem sets are written in a house style.
                            template: if chance(&mut rng, 0.5) {
                                template
                            } else {
                                fingerprint(&mut rng)
                            },
                            topic,
                            language,
                            tokens: tokens(lognormal(&mut rng, 120.0, 0.5), 20, 1_500),
                            cot: low_cot(&mut rng),
                        })
                        .collect()
                })
                .collect();
            University {
                country,
                language,
                campus,
                courses,
            }
        })
        .collect();
    // Enrolment is skewed: a few big universities, many small colleges.
    let weights = zipf_weights(unis.len(), 0.8);
    (unis, weights)
}

/// When (if ever) an account starts using the newly released model, and for
/// what share of its traffic. Benign users adopt new models too, just
/// gradually: the eager within hours, most within days, many never.
#[derive(Debug, Clone, Copy)]
struct Adoption {
    at: i64,
    share: f64,
}

impl Adoption {
    fn draw(w: &World, rng: &mut StdRng, ever: f64, mean_delay_h: f64, share: f64) -> Adoption {
        let adopts = chance(rng, ever);
        let delay = exponential(rng, mean_delay_h * HOUR_MS as f64) as i64;
        let share = (share * uniform(rng, 0.5, 1.5)).clamp(0.0, 1.0);
        match w.new_model {
            Some((_, released)) if adopts => Adoption {
                at: released + delay,
                share,
            },
            _ => Adoption {
                at: i64::MAX,
                share: 0.0,
            },
        }
    }

    fn model(&self, w: &World, rng: &mut StdRng, t: i64, usual: &'static str) -> &'static str {
        if t >= self.at && chance(rng, self.share) {
            w.new_model_at(t).unwrap_or(usual)
        } else {
            usual
        }
    }
}

/// A consumer's card (or none, on the free tier): mostly billed where they
/// live, some expats and travellers.
fn consumer_billing(
    w: &mut World,
    rng: &mut StdRng,
    c: &'static Country,
    pays: bool,
) -> (Option<&'static str>, Option<String>) {
    if !pays {
        return (None, None);
    }
    let billing = if chance(rng, 0.96) {
        c.code
    } else {
        pick_country(rng).code
    };
    (Some(billing), Some(payment(w)))
}

// ---------------------------------------------------------------------------
// chat_user
// ---------------------------------------------------------------------------

/// Interactive humans using the API through a chat front end or playground.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatUser {
    /// Median chat sessions per day of one user (log-normal across users).
    pub sessions_per_day_median: f64,
    /// Log-space spread of sessions per day across users: account sizes vary
    /// by orders of magnitude.
    pub sessions_per_day_sigma: f64,
    /// Mean conversations per session (geometric).
    pub conversations_per_session: f64,
    /// Mean user turns per conversation (geometric).
    pub turns_per_conversation: f64,
    /// Median seconds a user reads and types between turns (log-normal).
    pub think_seconds_median: f64,
    /// Share of conversations opening with a popular question from the
    /// seed-wide pool (same prompt fingerprint across unrelated accounts).
    pub popular_share: f64,
    /// Share of turns regenerated or resent (the same prompt seconds later).
    pub retry_share: f64,
    /// Share of turns asking to "explain step by step".
    pub step_by_step_share: f64,
    /// Share of users who call through a commercial VPN (shared exit /24s).
    pub vpn_share: f64,
    /// Share of accounts created during the span (new sign-ups).
    pub new_signup_share: f64,
    /// Share of users who try a model released mid-span.
    pub new_model_adoption: f64,
}

impl Default for ChatUser {
    fn default() -> Self {
        ChatUser {
            sessions_per_day_median: 1.5,
            sessions_per_day_sigma: 1.1,
            conversations_per_session: 1.6,
            turns_per_conversation: 2.8,
            think_seconds_median: 40.0,
            popular_share: 0.12,
            retry_share: 0.03,
            step_by_step_share: 0.05,
            vpn_share: 0.04,
            new_signup_share: 0.02,
            new_model_adoption: 0.35,
        }
    }
}

impl ChatUser {
    fn generate(&self, w: &mut World, stream: &str, label: &Label, accounts: usize) {
        let p = self;
        let mut rng = w.rng(stream);
        let mut pools = Pools::new(w.seed);
        let shared_templates = common_templates(w.seed);
        let vpn = vpn_exits(w.seed);
        let vpn_weights = zipf_weights(vpn.len(), 1.0);
        for _ in 0..accounts {
            let c = pick_country(&mut rng);
            let tz = c.utc_offset(&mut rng);
            let account_id = w.new_id("acct_", 16);
            let key = w.new_id("key_", 12);
            let tier = if chance(&mut rng, 0.65) {
                "free"
            } else {
                "build"
            };
            let pays = tier == "build" || chance(&mut rng, 0.2);
            let (billing_country, payment_fingerprint) = consumer_billing(w, &mut rng, c, pays);
            let created_at = if chance(&mut rng, p.new_signup_share) {
                w.start + (w.duration() as f64 * uniform(&mut rng, 0.0, 0.8)) as i64
            } else {
                days_before(&mut rng, w.start, 1.0, 4.0 * 365.0)
            };
            let org_id = chance(&mut rng, 0.05).then(|| w.new_id("org_", 12));
            w.add_account(
                Account {
                    account_id: account_id.clone(),
                    org_id,
                    created_at,
                    tier,
                    country: Some(c.code),
                    billing_country,
                    payment_fingerprint,
                    signup_channel: "web",
                    verified: false,
                },
                label.clone(),
            );

            // Habits of this person and their client.
            let per_day = lognormal(
                &mut rng,
                p.sessions_per_day_median,
                p.sessions_per_day_sigma,
            );
            let shift = 2.5 * normal(&mut rng);
            let temperature = match rng.random::<f64>() {
                x if x < 0.7 => None,
                x if x < 0.75 => Some(0.0),
                _ => Some(round1(uniform(&mut rng, 0.5, 1.0))),
            };
            let max_tokens = if chance(&mut rng, 0.6) {
                None
            } else {
                Some(*pick(&mut rng, &[1024, 2048, 4096, 8192]))
            };
            let p_large = uniform(&mut rng, 0.0, 1.0).powi(2);
            let adoption = Adoption::draw(w, &mut rng, p.new_model_adoption, 18.0, 0.5);
            let topic_weights: Vec<f64> = TOPIC_MIX
                .iter()
                .map(|m| m * uniform(&mut rng, 0.05, 1.0).powi(2))
                .collect();
            let primary_language = c.language(&mut rng);
            let user_agent = *pick(&mut rng, HUMAN_AGENTS);
            let system_prompt =
                chance(&mut rng, 0.3).then(|| (fingerprint(&mut rng), int(&mut rng, 20, 400)));
            let on_vpn = chance(&mut rng, p.vpn_share);
            let vpn_exit = vpn[weighted(&mut rng, &vpn_weights)];
            let mut ip = c.residential_ip(&mut rng);

            // Sessions may have started before the span; their in-span tail
            // is kept.
            let from = (w.start - HOUR_MS).max(created_at);
            let starts = shaped_times(&mut rng, from, w.end, per_day, |t| {
                let weekend = if is_weekend(t, tz) { 0.85 } else { 1.0 };
                personal(local_hour(t, tz), shift) * weekend
            });
            for session_start in starts {
                if on_vpn && chance(&mut rng, 0.8) {
                    ip = ip_in(&mut rng, vpn_exit);
                } else if chance(&mut rng, 0.15) {
                    // Home, phone, café: the address moves between sessions.
                    ip = c.residential_ip(&mut rng);
                }
                let mut t = session_start;
                let conversations = geometric(&mut rng, p.conversations_per_session).min(8);
                for _ in 0..conversations {
                    let turns = geometric(&mut rng, p.turns_per_conversation).min(25);
                    let topic = TOPICS[weighted(&mut rng, &topic_weights)];
                    let language = if chance(&mut rng, 0.85) {
                        primary_language
                    } else {
                        c.language(&mut rng)
                    };
                    let usual = if chance(&mut rng, p_large) {
                        MODEL_LARGE
                    } else {
                        MODEL_SMALL
                    };
                    let model = adoption.model(w, &mut rng, t, usual);
                    let endpoint = if chance(&mut rng, 0.04) {
                        EP_COMPLETIONS
                    } else {
                        EP_MESSAGES
                    };
                    // Grown-ups help with homework too: some math and science
                    // openers are textbook problems students also paste in.
                    let pool = if matches!(topic, "math" | "science") && chance(&mut rng, 0.3) {
                        PoolKind::Homework
                    } else {
                        PoolKind::Popular
                    };
                    let opener = chance(&mut rng, p.popular_share)
                        .then(|| pools.draw(&mut rng, pool, language));
                    let conv_topic = opener.map_or(topic, |o| o.topic);
                    let mut context = 0;
                    for turn in 1..=turns {
                        let prompt = match opener {
                            Some(o) if turn == 1 => o,
                            _ => {
                                let len = tokens(lognormal(&mut rng, 60.0, 1.1), 2, 6_000);
                                let mut fresh = Prompt::fresh(&mut rng, conv_topic, language, len);
                                if chance(&mut rng, 0.08) {
                                    fresh.template = *pick(&mut rng, &shared_templates);
                                }
                                if chance(&mut rng, p.step_by_step_share) {
                                    fresh.cot = high_cot(&mut rng);
                                }
                                fresh
                            }
                        };
                        let reasoning = matches!(conv_topic, "math" | "coding" | "reasoning")
                            && chance(&mut rng, 0.12);
                        let sys_tokens = system_prompt.map_or(0, |(_, n)| n);
                        let mut req = base_req(&account_id, &key, t, model);
                        prompt.apply(&mut req);
                        req.endpoint = endpoint;
                        req.client_ip = Some(ip.clone());
                        req.user_agent = Some(user_agent);
                        req.prompt_tokens = sys_tokens + context + prompt.tokens;
                        req.system_prompt_hash = system_prompt.map(|(h, _)| h);
                        req.conversation_turns = turn;
                        req.temperature = temperature;
                        req.max_tokens = max_tokens;
                        // Curious developers peek at token probabilities now and then.
                        if chance(&mut rng, 0.005) {
                            req.logprobs = true;
                            req.top_logprobs = *pick(&mut rng, &[0, 5, 5, 10]);
                        }
                        req.reasoning_requested = reasoning;
                        req.reasoning_effort =
                            reasoning.then(|| *pick(&mut rng, &["low", "medium", "high"]));
                        let completion = tokens(lognormal(&mut rng, 350.0, 0.8), 5, 6_000);
                        let out = Outcome {
                            completion,
                            reasoning: if reasoning {
                                lognormal(&mut rng, 900.0, 0.8) as i64
                            } else {
                                0
                            },
                            // The prompt cache serves earlier turns.
                            cached: (context as f64 * 0.9) as i64,
                            tool_use: false,
                        };
                        let faults = Faults {
                            rate_limited: 0.0,
                            error: 0.003,
                            refused: 0.004,
                        };
                        let retry = chance(&mut rng, p.retry_share).then(|| {
                            let mut again = req.clone();
                            // Regenerate after reading, or a resend after a stall.
                            again.event_time = t + int(&mut rng, 1_500, 40_000);
                            again
                        });
                        w.push(&mut rng, req, out, faults);
                        if let Some(again) = retry {
                            t = again.event_time;
                            w.push(&mut rng, again, out, faults);
                        }
                        context += prompt.tokens + completion;
                        let think = lognormal(&mut rng, p.think_seconds_median * 1_000.0, 0.9)
                            .clamp(3_000.0, 20.0 * 60_000.0);
                        t += (think + completion as f64 * 10.0) as i64;
                    }
                    t +=
                        lognormal(&mut rng, 150_000.0, 1.0).clamp(10_000.0, 40.0 * 60_000.0) as i64;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// student
// ---------------------------------------------------------------------------

/// Students working through homework: step-by-step explanations of math,
/// science and coding problems, evenings and school hours.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Student {
    /// Median homework sessions per day of one student (log-normal).
    pub sessions_per_day_median: f64,
    /// Log-space spread of sessions per day across students.
    pub sessions_per_day_sigma: f64,
    /// Mean problems asked about per session (geometric).
    pub questions_per_session: f64,
    /// Median minutes between problems (working, reading).
    pub minutes_between_questions: f64,
    /// Share of problems followed by short follow-up turns ("why step 3?").
    pub follow_up_share: f64,
    /// Share of an enrolled student's problems taken from their course's
    /// problem set (same fingerprint across classmates).
    pub course_share: f64,
    /// Share of problems from the seed-wide homework pool (textbook problems
    /// shared across all students and some chat users).
    pub homework_pool_share: f64,
    /// Share of problems asked with "explain step by step".
    pub step_by_step_share: f64,
    /// Share of requests with extended reasoning switched on.
    pub reasoning_share: f64,
    /// Share of accounts created through the education sign-up path.
    pub education_signup_share: f64,
    /// Share of students at a university (campus network, course problem sets).
    pub enrolled_share: f64,
    /// Share of students who try a model released mid-span.
    pub new_model_adoption: f64,
}

impl Default for Student {
    fn default() -> Self {
        Student {
            sessions_per_day_median: 0.8,
            sessions_per_day_sigma: 0.9,
            questions_per_session: 4.0,
            minutes_between_questions: 4.0,
            follow_up_share: 0.45,
            course_share: 0.3,
            homework_pool_share: 0.25,
            step_by_step_share: 0.7,
            reasoning_share: 0.15,
            education_signup_share: 0.65,
            enrolled_share: 0.7,
            new_model_adoption: 0.25,
        }
    }
}

/// When students study: school hours on weekdays, a strong evening peak
/// around 21:00 that runs past midnight, lighter weekends with a Sunday-
/// evening rush.
fn study(t: i64, tz: f64) -> f64 {
    let h = local_hour(t, tz);
    let bump = |c: f64, s: f64| (-hour_diff(h, c).powi(2) / (2.0 * s * s)).exp();
    let day = weekday(t, tz);
    let school = if matches!(day, 0 | 6) {
        0.0
    } else {
        0.45 * bump(13.0, 2.5)
    };
    let evening = match day {
        6 => 0.35,
        0 => 1.2,
        _ => 1.0,
    } * bump(21.0, 2.2);
    school + evening + 0.02
}

impl Student {
    fn generate(&self, w: &mut World, stream: &str, label: &Label, accounts: usize) {
        let p = self;
        let mut rng = w.rng(stream);
        let mut pools = Pools::new(w.seed);
        let (unis, uni_weights) = universities(w.seed);
        let vpn = vpn_exits(w.seed);
        for _ in 0..accounts {
            let enrolled = chance(&mut rng, p.enrolled_share);
            let uni = &unis[weighted(&mut rng, &uni_weights)];
            let course = &uni.courses[int(&mut rng, 0, uni.courses.len() as i64 - 1) as usize];
            // International students: most live where their university is.
            let c = if enrolled && chance(&mut rng, 0.9) {
                uni.country
            } else {
                pick_country(&mut rng)
            };
            let tz = c.utc_offset(&mut rng);
            let account_id = w.new_id("acct_", 16);
            let key = w.new_id("key_", 12);
            let education = chance(&mut rng, p.education_signup_share);
            // Education credits come on the build tier; most others stay free.
            let tier = if education && chance(&mut rng, 0.4) || chance(&mut rng, 0.1) {
                "build"
            } else {
                "free"
            };
            let pays = tier == "build" && !education;
            let (billing_country, payment_fingerprint) = consumer_billing(w, &mut rng, c, pays);
            // Half signed up when term started (early September).
            let created_at = if chance(&mut rng, 0.5) {
                days_before(&mut rng, w.start, 55.0, 75.0)
            } else {
                days_before(&mut rng, w.start, 1.0, 700.0)
            };
            w.add_account(
                Account {
                    account_id: account_id.clone(),
                    org_id: None,
                    created_at,
                    tier,
                    country: Some(c.code),
                    billing_country,
                    payment_fingerprint,
                    signup_channel: if education { "education" } else { "web" },
                    verified: false,
                },
                label.clone(),
            );

            let per_day = lognormal(
                &mut rng,
                p.sessions_per_day_median,
                p.sessions_per_day_sigma,
            );
            let language = if enrolled {
                uni.language
            } else {
                c.language(&mut rng)
            };
            let p_large = uniform(&mut rng, 0.2, 0.8);
            let adoption = Adoption::draw(w, &mut rng, p.new_model_adoption, 24.0, 0.5);
            let user_agent = if chance(&mut rng, 0.2) {
                *pick(&mut rng, SDK_AGENTS)
            } else {
                *pick(&mut rng, HUMAN_AGENTS)
            };
            let on_vpn = chance(&mut rng, 0.02);
            let vpn_exit = *pick(&mut rng, &vpn);
            let home_ip = c.residential_ip(&mut rng);
            let max_tokens = chance(&mut rng, 0.3).then(|| *pick(&mut rng, &[2048, 4096]));

            let from = w.start - HOUR_MS;
            let starts = shaped_times(&mut rng, from.max(created_at), w.end, per_day, |t| {
                study(t, tz)
            });
            for session_start in starts {
                let h = local_hour(session_start, tz);
                let on_campus = enrolled
                    && !is_weekend(session_start, tz)
                    && (8.0..17.0).contains(&h)
                    && chance(&mut rng, 0.7);
                let ip = if on_vpn {
                    ip_in(&mut rng, vpn_exit)
                } else if on_campus {
                    ip_in(&mut rng, uni.campus)
                } else {
                    home_ip.clone()
                };
                let mut t = session_start;
                let questions = geometric(&mut rng, p.questions_per_session).min(15);
                for _ in 0..questions {
                    let u: f64 = rng.random();
                    let mut problem = if enrolled && u < p.course_share {
                        *pick(&mut rng, course)
                    } else if u < p.course_share + p.homework_pool_share {
                        pools.draw(&mut rng, PoolKind::Homework, language)
                    } else if chance(&mut rng, 0.1) {
                        pools.draw(&mut rng, PoolKind::Popular, language)
                    } else {
                        let topic = *pick(&mut rng, &["math", "math", "science", "coding"]);
                        let len = tokens(lognormal(&mut rng, 80.0, 0.8), 5, 3_000);
                        Prompt::fresh(&mut rng, topic, language, len)
                    };
                    problem.cot = if chance(&mut rng, p.step_by_step_share) {
                        high_cot(&mut rng)
                    } else {
                        round3(uniform(&mut rng, 0.05, 0.45))
                    };
                    let usual = if chance(&mut rng, p_large) {
                        MODEL_LARGE
                    } else {
                        MODEL_SMALL
                    };
                    let model = adoption.model(w, &mut rng, t, usual);
                    let follow_ups = if chance(&mut rng, p.follow_up_share) {
                        int(&mut rng, 1, 3)
                    } else {
                        0
                    };
                    let mut context = 0;
                    for turn in 1..=follow_ups + 1 {
                        let prompt = if turn == 1 {
                            problem
                        } else {
                            let len = int(&mut rng, 6, 60);
                            let mut f = Prompt::fresh(&mut rng, problem.topic, language, len);
                            f.cot = round3(uniform(&mut rng, 0.3, 0.85));
                            f
                        };
                        let reasoning = chance(&mut rng, p.reasoning_share);
                        let mut req = base_req(&account_id, &key, t, model);
                        prompt.apply(&mut req);
                        req.client_ip = Some(ip.clone());
                        req.user_agent = Some(user_agent);
                        req.prompt_tokens = context + prompt.tokens;
                        req.conversation_turns = turn;
                        req.max_tokens = max_tokens;
                        req.reasoning_requested = reasoning;
                        req.reasoning_effort =
                            reasoning.then(|| *pick(&mut rng, &["low", "medium", "high"]));
                        let completion = tokens(lognormal(&mut rng, 550.0, 0.6), 30, 5_000);
                        let out = Outcome {
                            completion,
                            reasoning: if reasoning {
                                lognormal(&mut rng, 1_500.0, 0.8) as i64
                            } else {
                                0
                            },
                            cached: (context as f64 * 0.9) as i64,
                            tool_use: false,
                        };
                        let retry = chance(&mut rng, 0.03).then(|| {
                            let mut again = req.clone();
                            again.event_time = t + int(&mut rng, 2_000, 30_000);
                            again
                        });
                        w.push(&mut rng, req, out, Faults::NORMAL);
                        if let Some(again) = retry {
                            t = again.event_time;
                            w.push(&mut rng, again, out, Faults::NORMAL);
                        }
                        context += prompt.tokens + completion;
                        t += (lognormal(&mut rng, 60_000.0, 0.8) + completion as f64 * 12.0) as i64;
                    }
                    t += lognormal(&mut rng, p.minutes_between_questions * 60_000.0, 0.8)
                        .clamp(15_000.0, 45.0 * 60_000.0) as i64;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// researcher
// ---------------------------------------------------------------------------

/// Academic and industry researchers probing the model from notebooks and
/// scripts: logprobs with top_logprobs ≈ 5, temperature 0, small max_tokens,
/// small sweeps that rerun one prompt set under several settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Researcher {
    /// Median scripted runs per workday of one researcher (log-normal).
    pub runs_per_workday_median: f64,
    /// Log-space spread of runs per workday across researchers.
    pub runs_per_workday_sigma: f64,
    /// Median requests per run (log-normal, sigma 0.8).
    pub requests_per_run_median: f64,
    /// Share of researchers whose work uses token log-probabilities.
    pub logprobs_share: f64,
    /// top_logprobs most of them ask for (the common API maximum-of-choice).
    pub top_logprobs: i64,
    /// Share of runs capping max_tokens at a handful of tokens (answer-letter
    /// or next-token probes).
    pub small_max_tokens_share: f64,
    /// Share of runs at temperature 0.
    pub temperature_zero_share: f64,
    /// Share of runs rerunning the prompts of an earlier run (after a code fix).
    pub rerun_share: f64,
    /// Share of runs sampling n > 1 completions (self-consistency studies).
    pub self_consistency_share: f64,
    /// Share of runs restricting outputs to label tokens with a small
    /// logit_bias map (zero-shot classification).
    pub logit_bias_share: f64,
    /// Probability per workday of a small sweep (one prompt set under
    /// several models or temperatures).
    pub sweep_probability: f64,
    /// Median prompts in a sweep's prompt set (log-normal, sigma 0.7).
    pub sweep_prompts_median: f64,
    /// Median requests per second of a sweep script.
    pub sweep_rate_median: f64,
    /// Share of researchers in a lab group sharing an org and a grant card.
    pub lab_share: f64,
    /// Largest lab group.
    pub lab_size_max: i64,
    /// Share of researchers who try a model released mid-span (most do).
    pub new_model_adoption: f64,
}

impl Default for Researcher {
    fn default() -> Self {
        Researcher {
            runs_per_workday_median: 1.5,
            runs_per_workday_sigma: 0.8,
            requests_per_run_median: 20.0,
            logprobs_share: 0.55,
            top_logprobs: 5,
            small_max_tokens_share: 0.3,
            temperature_zero_share: 0.6,
            rerun_share: 0.3,
            self_consistency_share: 0.08,
            logit_bias_share: 0.05,
            sweep_probability: 0.25,
            sweep_prompts_median: 300.0,
            sweep_rate_median: 1.5,
            lab_share: 0.4,
            lab_size_max: 6,
            new_model_adoption: 0.6,
        }
    }
}

/// The settings of one scripted run.
#[derive(Debug, Clone, Copy)]
struct Probe {
    temperature: Option<f64>,
    max_tokens: Option<i64>,
    logprobs: bool,
    top_logprobs: i64,
    logit_bias: i64,
    n: i64,
    reasoning: bool,
    endpoint: &'static str,
}

/// What the researchers of one lab share (or one independent researcher has).
struct Lab {
    country: &'static Country,
    tz: f64,
    org: Option<String>,
    card: Option<String>,
    network: Option<[u8; 3]>,
    verified: bool,
}

/// A run's prompts: usually one format ("Q: ...\nA:") around different
/// items.
fn research_prompts(
    rng: &mut StdRng,
    focus: &[f64],
    language: &'static str,
    count: usize,
) -> Vec<Prompt> {
    let template = chance(rng, 0.6).then(|| fingerprint(rng));
    (0..count)
        .map(|_| {
            let topic = TOPICS[weighted(rng, focus)];
            let len = tokens(lognormal(rng, 300.0, 0.9), 5, 8_000);
            let mut p = Prompt::fresh(rng, topic, language, len);
            if let Some(t) = template {
                p.template = t;
            }
            p
        })
        .collect()
}

/// The next gap of a scripted client: `mean_ms` with Gaussian jitter of
/// relative size `cv`.
fn jittered(rng: &mut StdRng, mean_ms: f64, cv: f64) -> i64 {
    (mean_ms * (1.0 + cv * normal(rng)).max(0.05)) as i64
}

impl Researcher {
    fn probe(&self, rng: &mut StdRng, uses_logprobs: bool, top: i64) -> Probe {
        let logprobs = chance(rng, if uses_logprobs { 0.75 } else { 0.03 });
        let small = chance(rng, self.small_max_tokens_share);
        let zero = chance(rng, self.temperature_zero_share);
        let n = if !zero && chance(rng, self.self_consistency_share) {
            *pick(rng, &[5, 8, 10, 16])
        } else {
            1
        };
        let logit_bias = if chance(rng, self.logit_bias_share) {
            int(rng, 2, 8)
        } else {
            0
        };
        Probe {
            temperature: Some(if zero {
                0.0
            } else {
                *pick(rng, &[0.5, 0.7, 0.7, 1.0])
            }),
            max_tokens: Some(if small {
                *pick(rng, &[1, 1, 2, 5, 16, 32])
            } else {
                *pick(rng, &[256, 512, 1024, 2048])
            }),
            logprobs,
            top_logprobs: if logprobs { top } else { 0 },
            logit_bias,
            n,
            reasoning: !small && chance(rng, 0.08),
            endpoint: if logprobs && small && chance(rng, 0.5) {
                EP_COMPLETIONS
            } else {
                EP_MESSAGES
            },
        }
    }

    fn generate(&self, w: &mut World, stream: &str, label: &Label, accounts: usize) {
        let p = self;
        let mut rng = w.rng(stream);
        let mut made = 0;
        while made < accounts {
            let in_lab = chance(&mut rng, p.lab_share);
            let size = if in_lab {
                (int(&mut rng, 2, p.lab_size_max.max(2)) as usize).min(accounts - made)
            } else {
                1
            };
            let country = pick_country(&mut rng);
            let tz = country.utc_offset(&mut rng);
            let org = in_lab.then(|| w.new_id("org_", 12));
            let card = in_lab.then(|| payment(w));
            let network = in_lab.then(|| {
                [
                    *pick(&mut rng, country.residential_octets),
                    int(&mut rng, 0, 255) as u8,
                    int(&mut rng, 0, 255) as u8,
                ]
            });
            let lab = Lab {
                country,
                tz,
                org,
                card,
                network,
                verified: in_lab && chance(&mut rng, 0.5),
            };
            for _ in 0..size {
                self.researcher(w, &mut rng, label, &lab);
            }
            made += size;
        }
    }

    fn researcher(&self, w: &mut World, rng: &mut StdRng, label: &Label, lab: &Lab) {
        let p = self;
        let c = lab.country;
        let tz = lab.tz;
        let account_id = w.new_id("acct_", 16);
        let key = w.new_id("key_", 12);
        let card = match &lab.card {
            Some(card) => Some(card.clone()),
            None => chance(rng, 0.9).then(|| payment(w)),
        };
        w.add_account(
            Account {
                account_id: account_id.clone(),
                org_id: lab.org.clone(),
                created_at: days_before(rng, w.start, 10.0, 3.0 * 365.0),
                tier: pick_str(rng, &["build", "build", "build", "scale", "free"]),
                country: Some(c.code),
                billing_country: card.as_ref().map(|_| c.code),
                payment_fingerprint: card,
                signup_channel: if chance(rng, 0.7) { "research" } else { "web" },
                verified: lab.verified,
            },
            label.clone(),
        );

        let uses_logprobs = chance(rng, p.logprobs_share);
        let top = if chance(rng, 0.8) {
            p.top_logprobs
        } else {
            *pick(rng, &[1, 2, 10, 20])
        };
        // Most researchers work on one or two areas.
        let focus: Vec<f64> = TOPIC_MIX
            .iter()
            .map(|m| m * uniform(rng, 0.0, 1.0).powi(4) + 1e-6)
            .collect();
        let language = if chance(rng, 0.85) {
            "en"
        } else {
            c.language(rng)
        };
        let adoption = Adoption::draw(w, rng, p.new_model_adoption, 8.0, 0.6);
        let usual = if chance(rng, 0.5) {
            MODEL_LARGE
        } else {
            MODEL_SMALL
        };
        let ip = match lab.network {
            Some(net) if chance(rng, 0.7) => ip_in(rng, net),
            _ => c.residential_ip(rng),
        };
        let client = Client {
            account_id,
            key,
            ip,
            user_agent: pick_str(rng, &SDK_AGENTS[..2]),
        };
        let per_workday = lognormal(rng, p.runs_per_workday_median, p.runs_per_workday_sigma);
        let gap_ms = lognormal(rng, 2_500.0, 0.5);
        let mut sets: Vec<Vec<Prompt>> = Vec::new();

        let work = |t: i64| {
            let h = local_hour(t, tz);
            let late = 0.15 * (-hour_diff(h, 22.5).powi(2) / 2.0).exp();
            let base = office(h) + late;
            if is_weekend(t, tz) {
                0.2 * base
            } else {
                base
            }
        };
        // Runs per workday as a weekly average: five workdays, two light days.
        let per_day = per_workday * (5.0 + 2.0 * 0.2) / 7.0;
        for run_start in shaped_times(rng, w.start, w.end, per_day, work) {
            let probe = p.probe(rng, uses_logprobs, top);
            let model = adoption.model(w, rng, run_start, usual);
            let prompts = if !sets.is_empty() && chance(rng, p.rerun_share) {
                pick(rng, &sets).clone()
            } else {
                let count = tokens(lognormal(rng, p.requests_per_run_median, 0.8), 2, 400);
                let set = research_prompts(rng, &focus, language, count as usize);
                sets.push(set.clone());
                set
            };
            let mut t = run_start;
            for prompt in &prompts {
                push_probe(w, rng, &client, t, model, probe, prompt);
                t += jittered(rng, gap_ms, 0.6);
            }
        }

        // Sweeps: one prompt set under several configurations, back to back.
        let first_day = w.start.div_euclid(DAY_MS);
        let last_day = (w.end - 1).div_euclid(DAY_MS);
        for day in first_day..=last_day {
            let noon = day * DAY_MS + 12 * HOUR_MS - (tz * HOUR_MS as f64) as i64;
            if is_weekend(noon, tz) || !chance(rng, p.sweep_probability) {
                continue;
            }
            let start = noon - 2 * HOUR_MS + (uniform(rng, 0.0, 6.0) * HOUR_MS as f64) as i64;
            let count = tokens(lognormal(rng, p.sweep_prompts_median, 0.7), 30, 3_000);
            let set = research_prompts(rng, &focus, language, count as usize);
            let probe = p.probe(rng, uses_logprobs, top);
            let configs = int(rng, 1, 3);
            let rate = lognormal(rng, p.sweep_rate_median, 0.5).clamp(0.2, 10.0);
            let mut t = start;
            for i in 0..configs {
                // Comparing the new model with the old ones is the point
                // of many sweeps once it is out.
                let model = match w.new_model_at(t) {
                    Some(m) if i == 0 && t >= adoption.at => m,
                    _ => *pick(rng, &[MODEL_SMALL, MODEL_LARGE]),
                };
                let mut probe = probe;
                if i > 0 && chance(rng, 0.4) {
                    probe.temperature = Some(*pick(rng, &[0.0, 0.3, 0.7, 1.0]));
                }
                for prompt in &set {
                    push_probe(w, rng, &client, t, model, probe, prompt);
                    t += jittered(rng, 1_000.0 / rate, 0.4);
                }
                // Look at the results, tweak, start the next configuration.
                t += lognormal(rng, 10.0 * MINUTE_MS as f64, 0.8) as i64;
            }
        }
    }
}

fn push_probe(
    w: &mut World,
    rng: &mut StdRng,
    client: &Client,
    t: i64,
    model: &'static str,
    probe: Probe,
    prompt: &Prompt,
) {
    let mut req = client.req(t, model);
    prompt.apply(&mut req);
    req.endpoint = probe.endpoint;
    req.prompt_tokens = prompt.tokens;
    req.n = probe.n;
    req.temperature = probe.temperature;
    req.max_tokens = probe.max_tokens;
    req.logprobs = probe.logprobs;
    req.top_logprobs = probe.top_logprobs;
    req.logit_bias_size = probe.logit_bias;
    req.reasoning_requested = probe.reasoning;
    req.reasoning_effort = probe.reasoning.then_some("medium");
    let out = Outcome {
        completion: tokens(lognormal(rng, 250.0, 0.9), 1, 4_000),
        reasoning: if probe.reasoning {
            lognormal(rng, 1_200.0, 0.7) as i64
        } else {
            0
        },
        cached: 0,
        tool_use: false,
    };
    w.push(rng, req, out, Faults::NORMAL);
}

// ---------------------------------------------------------------------------
// Products: what an app built on the API sends for its end users
// ---------------------------------------------------------------------------

/// What an app does with the model, which decides the shape of its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProductKind {
    /// General chat assistant: end users' own multi-turn conversations.
    Assistant,
    /// Writing tool: templated flows ("rewrite this email more politely").
    Writing,
    /// Customer-support bot: retrieved documents in the prompt, tools.
    Support,
    /// Coding or task agent: loops of tool calls seconds apart.
    Agent,
    /// Classifier/extractor: temperature 0, a few output tokens, one template.
    Classifier,
    /// Tutoring app: step-by-step explanations for its learners.
    Tutor,
}

/// Knobs of a population of products.
#[derive(Debug, Clone, Copy)]
struct ProductKnobs {
    templated_share: f64,
    example_share: f64,
    popular_share: f64,
    tools_share: f64,
    new_model_adoption: f64,
}

/// One app's fixed configuration, as deployed.
#[derive(Clone)]
struct Product {
    kind: ProductKind,
    model: &'static str,
    adoption: Adoption,
    /// (hash, tokens) of each feature's system prompt; the first dominates.
    system_prompts: Vec<(i64, i64)>,
    system_weights: Vec<f64>,
    /// (tool_count, tools_hash).
    tools: Option<(i64, i64)>,
    temperature: Option<f64>,
    max_tokens: Option<i64>,
    flows: Vec<i64>,
    flow_weights: Vec<f64>,
    /// Canned example prompts the UI offers: identical for every end user.
    examples: Vec<Prompt>,
    templated_share: f64,
    example_share: f64,
    popular_share: f64,
    market: &'static Country,
    main_topic: &'static str,
    top_logprobs: i64,
    logit_bias: i64,
}

impl Product {
    fn draw(
        w: &World,
        rng: &mut StdRng,
        kind: ProductKind,
        market: &'static Country,
        k: ProductKnobs,
    ) -> Product {
        let (main_topic, tools_p, templated, temperature, max_tokens) = match kind {
            ProductKind::Assistant => (
                *pick(rng, &["chat", "writing", "other"]),
                k.tools_share * 0.5,
                k.templated_share * 0.4,
                *pick(rng, &[None, Some(0.7), Some(1.0), Some(0.5)]),
                Some(*pick(rng, &[1024, 2048, 4096])),
            ),
            ProductKind::Writing => (
                "writing",
                k.tools_share * 0.2,
                (k.templated_share * 2.5).min(0.9),
                *pick(rng, &[Some(0.7), Some(0.3), None]),
                Some(*pick(rng, &[512, 1024, 2048])),
            ),
            ProductKind::Support => (
                *pick(rng, &["other", "chat", "coding"]),
                (k.tools_share * 1.7).min(1.0),
                k.templated_share * 0.5,
                *pick(rng, &[Some(0.0), Some(0.2), Some(0.3)]),
                Some(*pick(rng, &[512, 1024])),
            ),
            ProductKind::Agent => (
                *pick(rng, &["coding", "coding", "other"]),
                1.0,
                k.templated_share * 0.3,
                *pick(rng, &[Some(0.0), None, Some(0.2)]),
                Some(*pick(rng, &[4096, 8192])),
            ),
            ProductKind::Classifier => (
                *pick(rng, &["other", "writing", "chat"]),
                0.0,
                0.95,
                Some(0.0),
                Some(*pick(rng, &[1, 3, 5, 10, 20])),
            ),
            ProductKind::Tutor => (
                *pick(rng, &["math", "science", "coding"]),
                0.0,
                k.templated_share * 0.5,
                None,
                Some(2048),
            ),
        };
        let mut system_prompts = vec![(fingerprint(rng), int(rng, 150, 2_500))];
        let mut system_weights = vec![1.0];
        if kind != ProductKind::Classifier && chance(rng, 0.4) {
            for _ in 0..int(rng, 1, 3) {
                system_prompts.push((fingerprint(rng), int(rng, 100, 1_500)));
                system_weights.push(uniform(rng, 0.03, 0.12));
            }
        }
        let tools = chance(rng, tools_p).then(|| (int(rng, 2, 20), fingerprint(rng)));
        let flows: Vec<i64> = (0..int(rng, 1, 8)).map(|_| fingerprint(rng)).collect();
        let flow_weights = zipf_weights(flows.len(), 1.0);
        let language = market.languages[0].0;
        let examples = (0..int(rng, 3, 6))
            .map(|_| {
                let len = int(rng, 8, 40);
                Prompt::fresh(rng, main_topic, language, len)
            })
            .collect();
        let (top_logprobs, logit_bias) = if kind == ProductKind::Classifier {
            (
                if chance(rng, 0.3) {
                    *pick(rng, &[1, 5])
                } else {
                    0
                },
                if chance(rng, 0.3) { int(rng, 2, 5) } else { 0 },
            )
        } else {
            (0, 0)
        };
        Product {
            kind,
            model: if kind == ProductKind::Classifier || chance(rng, 0.45) {
                MODEL_SMALL
            } else {
                MODEL_LARGE
            },
            adoption: Adoption::draw(w, rng, k.new_model_adoption, 24.0, 0.4),
            system_prompts,
            system_weights,
            tools,
            temperature,
            max_tokens,
            flows,
            flow_weights,
            examples,
            templated_share: templated,
            example_share: if matches!(
                kind,
                ProductKind::Assistant | ProductKind::Writing | ProductKind::Tutor
            ) {
                k.example_share
            } else {
                0.0
            },
            popular_share: if matches!(kind, ProductKind::Assistant | ProductKind::Tutor) {
                k.popular_share
            } else {
                0.0
            },
            market,
            main_topic,
            top_logprobs,
            logit_bias,
        }
    }

    fn draw_kind(rng: &mut StdRng) -> ProductKind {
        use ProductKind::*;
        [Assistant, Writing, Support, Agent, Classifier, Tutor]
            [weighted(rng, &[0.3, 0.22, 0.18, 0.14, 0.1, 0.06])]
    }

    /// Mean requests per end-user interaction (agent loops send several).
    fn requests_per_interaction(&self) -> f64 {
        if self.kind == ProductKind::Agent {
            4.0
        } else {
            1.0
        }
    }

    /// The requests of one end-user interaction starting at `t`.
    #[allow(clippy::too_many_arguments)]
    fn interaction(
        &self,
        w: &mut World,
        rng: &mut StdRng,
        pools: &mut Pools,
        client: &Client,
        t: i64,
        p429: f64,
        faults: Faults,
    ) {
        let language = self.market.language(rng);
        let sys = self.system_prompts[weighted(rng, &self.system_weights)];
        let model = self.adoption.model(w, rng, t, self.model);
        let topic = if chance(rng, 0.7) {
            self.main_topic
        } else {
            TOPICS[weighted(rng, &TOPIC_MIX)]
        };
        let u: f64 = rng.random();
        let mut prompt = if u < self.example_share {
            *pick(rng, &self.examples)
        } else if u < self.example_share + self.popular_share {
            pools.draw(rng, PoolKind::Popular, language)
        } else {
            let len = match self.kind {
                ProductKind::Writing => lognormal(rng, 250.0, 0.9),
                ProductKind::Classifier => lognormal(rng, 150.0, 0.8),
                _ => lognormal(rng, 70.0, 1.0),
            };
            let mut p = Prompt::fresh(rng, topic, language, tokens(len, 2, 12_000));
            if chance(rng, self.templated_share) {
                p.template = self.flows[weighted(rng, &self.flow_weights)];
            }
            p
        };
        prompt.cot = match self.kind {
            ProductKind::Tutor if chance(rng, 0.6) => high_cot(rng),
            _ if chance(rng, 0.02) => high_cot(rng),
            _ => prompt.cot,
        };
        let turns = match self.kind {
            ProductKind::Classifier => 1,
            ProductKind::Writing if chance(rng, 0.85) => 1,
            _ if chance(rng, 0.45) => 1,
            _ => 1 + geometric(rng, 2.5).min(30),
        };
        let history: i64 = (1..turns)
            .map(|_| tokens(lognormal(rng, 350.0, 0.6), 20, 3_000))
            .sum();
        let retrieved = if self.kind == ProductKind::Support {
            tokens(lognormal(rng, 1_800.0, 0.5), 200, 8_000)
        } else {
            0
        };
        let steps = if self.kind == ProductKind::Agent {
            geometric(rng, self.requests_per_interaction()).min(30)
        } else {
            1
        };
        let mut at = t;
        let mut context = history + retrieved;
        for step in 1..=steps {
            let mut req = client.req(at, model);
            prompt.apply(&mut req);
            if step > 1 {
                // Tool results fed back: a new prompt each step.
                req.prompt_fingerprint = Some(fingerprint(rng));
            }
            req.prompt_tokens = sys.1 + context + prompt.tokens;
            req.system_prompt_hash = Some(sys.0);
            req.conversation_turns = turns;
            req.temperature = self.temperature;
            req.max_tokens = self.max_tokens;
            if let Some((count, hash)) = self.tools {
                req.tool_count = count;
                req.tools_hash = Some(hash);
            }
            if self.top_logprobs > 0 {
                req.logprobs = true;
                req.top_logprobs = self.top_logprobs;
            }
            req.logit_bias_size = self.logit_bias;
            let completion = match self.kind {
                ProductKind::Classifier => int(rng, 1, 8),
                ProductKind::Agent => tokens(lognormal(rng, 180.0, 0.9), 10, 4_000),
                ProductKind::Tutor => tokens(lognormal(rng, 500.0, 0.6), 20, 4_000),
                _ => tokens(lognormal(rng, 280.0, 0.7), 5, 4_000),
            };
            let out = Outcome {
                completion,
                reasoning: 0,
                // The system prompt (and earlier turns) come from the cache.
                cached: if chance(rng, 0.85) {
                    sys.1 + context
                } else {
                    0
                },
                tool_use: self.tools.is_some()
                    && (step < steps || (steps == 1 && chance(rng, 0.3))),
            };
            send(w, rng, req, out, faults, p429, 2);
            context += prompt.tokens + completion + int(rng, 50, 1_500);
            at += tokens(lognormal(rng, 6_000.0, 0.7), 800, 90_000);
        }
    }
}

// ---------------------------------------------------------------------------
// app_backend
// ---------------------------------------------------------------------------

/// SaaS and consumer apps calling the API for their own users.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppBackend {
    /// Median mean requests per minute of one app (log-normal across apps).
    pub requests_per_minute_median: f64,
    /// Log-space spread of app sizes.
    pub requests_per_minute_sigma: f64,
    /// Cap on one app's mean requests per minute (keeps the volume budget).
    pub requests_per_minute_max: f64,
    /// Share of apps that send tool definitions (agent apps always do).
    pub tools_share: f64,
    /// Share of a typical app's prompts built from a product-flow template.
    pub templated_share: f64,
    /// Share of requests that are the app's canned example prompts.
    pub example_prompt_share: f64,
    /// Share of end-user prompts that are popular questions (seed-wide pool).
    pub popular_share: f64,
    /// Share of apps serving one regional market (the rest are global).
    pub regional_share: f64,
    /// Median ratio of an app's rate limit to its mean rate; below the
    /// daily peak-to-mean ratio, it gets 429s at peak.
    pub rate_limit_headroom_median: f64,
    /// Share of apps deploying a new system prompt or tool set mid-span.
    pub deploy_share: f64,
    /// Share of apps moving part of their traffic to a newly released model.
    pub new_model_adoption: f64,
    /// Share of requests from the developers' own testing (dev key, laptop).
    pub developer_share: f64,
}

impl Default for AppBackend {
    fn default() -> Self {
        AppBackend {
            requests_per_minute_median: 1.0,
            requests_per_minute_sigma: 1.2,
            requests_per_minute_max: 40.0,
            tools_share: 0.35,
            templated_share: 0.25,
            example_prompt_share: 0.03,
            popular_share: 0.04,
            regional_share: 0.7,
            rate_limit_headroom_median: 2.5,
            deploy_share: 0.3,
            new_model_adoption: 0.3,
            developer_share: 0.01,
        }
    }
}

/// Sign-up facts of a business account.
struct Biz {
    country: &'static Country,
    tier: &'static str,
    channel: &'static str,
    verified: bool,
    /// Range of the account's age at the start of the span, days.
    age_days: (f64, f64),
}

/// A company's or app's account with an org and a card.
fn business_account(w: &mut World, rng: &mut StdRng, label: &Label, biz: Biz) -> String {
    let Biz {
        country: c,
        tier,
        channel: signup_channel,
        verified,
        age_days,
    } = biz;
    let account_id = w.new_id("acct_", 16);
    let org_id = Some(w.new_id("org_", 12));
    let card = payment(w);
    w.add_account(
        Account {
            account_id: account_id.clone(),
            org_id,
            created_at: days_before(rng, w.start, age_days.0, age_days.1),
            tier,
            country: Some(c.code),
            billing_country: Some(c.code),
            payment_fingerprint: Some(card),
            signup_channel,
            verified,
        },
        label.clone(),
    );
    account_id
}

impl AppBackend {
    fn generate(&self, w: &mut World, stream: &str, label: &Label, accounts: usize) {
        let p = self;
        let mut rng = w.rng(stream);
        let mut pools = Pools::new(w.seed);
        for _ in 0..accounts {
            let market = pick_country(&mut rng);
            let tz = market.utc_offset(&mut rng);
            let tier = *pick(&mut rng, &["build", "scale", "scale"]);
            let channel = if chance(&mut rng, 0.5) {
                "web"
            } else {
                "startup"
            };
            let verified = chance(&mut rng, 0.5);
            let biz = Biz {
                country: market,
                tier,
                channel,
                verified,
                age_days: (60.0, 1_500.0),
            };
            let account_id = business_account(w, &mut rng, label, biz);
            let prod_key = w.new_id("key_", 12);
            let dev_key = w.new_id("key_", 12);
            let kind = Product::draw_kind(&mut rng);
            let knobs = ProductKnobs {
                templated_share: p.templated_share,
                example_share: p.example_prompt_share,
                popular_share: p.popular_share,
                tools_share: p.tools_share,
                new_model_adoption: p.new_model_adoption,
            };
            let mut product = Product::draw(w, &mut rng, kind, market, knobs);
            let per_min = lognormal(
                &mut rng,
                p.requests_per_minute_median,
                p.requests_per_minute_sigma,
            )
            .min(p.requests_per_minute_max);
            let regional = chance(&mut rng, p.regional_share);
            let shape = move |t: i64| {
                let weekend = if is_weekend(t, tz) { 0.8 } else { 1.0 };
                let h = local_hour(t, tz);
                weekend
                    * if regional {
                        0.2 + 0.8 * diurnal(h)
                    } else {
                        0.75 + 0.25 * diurnal(h)
                    }
            };
            let (mean, _) = week_stats(w.start, &shape);
            let headroom = lognormal(&mut rng, p.rate_limit_headroom_median, 0.4);
            let prefix = cloud_prefix(&mut rng);
            let ips: Vec<String> = (0..int(&mut rng, 2, 8))
                .map(|_| ip_in(&mut rng, prefix))
                .collect();
            let user_agent = *pick(&mut rng, SDK_AGENTS);
            let dev = Client {
                account_id: account_id.clone(),
                key: dev_key,
                ip: market.residential_ip(&mut rng),
                user_agent: pick_str(&mut rng, SDK_AGENTS),
            };
            let deploy_at = chance(&mut rng, p.deploy_share)
                .then(|| w.start + (w.duration() as f64 * uniform(&mut rng, 0.1, 0.9)) as i64);
            let faults = Faults {
                rate_limited: 0.0,
                error: 0.003,
                refused: 0.001,
            };
            let per_day = per_min * 1_440.0 / product.requests_per_interaction();
            let times = shaped_times(&mut rng, w.start, w.end, per_day, shape);
            let mut deployed = false;
            for t in times {
                // A deploy changes the prompt (and maybe the tools) for good.
                if !deployed && deploy_at.is_some_and(|at| t >= at) {
                    deployed = true;
                    product.system_prompts[0].0 = fingerprint(&mut rng);
                    if let Some(tools) = product.tools.as_mut() {
                        if chance(&mut rng, 0.5) {
                            *tools = (tools.0 + int(&mut rng, 0, 2), fingerprint(&mut rng));
                        }
                    }
                }
                if chance(&mut rng, p.developer_share) {
                    product.interaction(w, &mut rng, &mut pools, &dev, t, 0.0, faults);
                    continue;
                }
                let ratio = shape(t) / mean.max(1e-9);
                let p429 = (1.0 - headroom / ratio).max(0.0);
                let client = Client {
                    account_id: account_id.clone(),
                    key: prod_key.clone(),
                    ip: pick(&mut rng, &ips).clone(),
                    user_agent,
                };
                product.interaction(w, &mut rng, &mut pools, &client, t, p429, faults);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// enterprise_batch
// ---------------------------------------------------------------------------

/// A large verified enterprise's scheduled document-processing job.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnterpriseBatch {
    /// Local hour the daily job is scheduled at (01:30: nightly).
    pub start_local_hour: f64,
    /// Spread (± hours, uniform) of the scheduled hour across companies.
    pub start_jitter_hours: f64,
    /// Countries the companies are headquartered in (ISO codes, equally likely).
    pub countries: Vec<String>,
    /// Median hours one run lasts (log-normal, sigma 0.4).
    pub run_hours_median: f64,
    /// Longest run, hours.
    pub run_hours_max: f64,
    /// Median requests per second of the job's worker pool (log-normal,
    /// sigma 0.5 across companies).
    pub requests_per_second_median: f64,
    /// Coefficient of variation of the job's inter-request gaps.
    pub spacing_cv: f64,
    /// Median input tokens per document.
    pub prompt_tokens_median: f64,
    /// Median output tokens (extractions, labels, short summaries).
    pub completion_tokens_median: f64,
    /// Share of documents that are structured forms whose masked text repeats
    /// a template; the rest are free text.
    pub templated_share: f64,
    /// Share of a run's items resent at its end (the job's retry pass over
    /// failures and timeouts).
    pub retry_pass_share: f64,
}

impl Default for EnterpriseBatch {
    fn default() -> Self {
        EnterpriseBatch {
            start_local_hour: 1.5,
            start_jitter_hours: 1.5,
            countries: ["US", "US", "GB", "DE", "JP", "FR", "CA"]
                .map(String::from)
                .to_vec(),
            run_hours_median: 1.5,
            run_hours_max: 4.0,
            requests_per_second_median: 1.0,
            spacing_cv: 0.15,
            prompt_tokens_median: 4_000.0,
            completion_tokens_median: 180.0,
            templated_share: 0.3,
            retry_pass_share: 0.005,
        }
    }
}

impl EnterpriseBatch {
    fn generate(&self, w: &mut World, stream: &str, label: &Label, accounts: usize) {
        let p = self;
        let mut rng = w.rng(stream);
        for _ in 0..accounts {
            let code = if p.countries.is_empty() {
                "US".to_string()
            } else {
                pick(&mut rng, &p.countries).clone()
            };
            let c = geo::country(&code);
            let tz = c.utc_offset(&mut rng);
            let account_id = w.new_id("acct_", 16);
            let key = w.new_id("key_", 12);
            let org_id = Some(w.new_id("org_", 12));
            // Invoiced under a contract: usually no card on file.
            let card = chance(&mut rng, 0.3).then(|| payment(w));
            w.add_account(
                Account {
                    account_id: account_id.clone(),
                    org_id,
                    created_at: days_before(&mut rng, w.start, 200.0, 1_400.0),
                    tier: "enterprise",
                    country: Some(c.code),
                    billing_country: Some(c.code),
                    payment_fingerprint: card,
                    signup_channel: "enterprise_sales",
                    verified: true,
                },
                label.clone(),
            );

            let hour =
                p.start_local_hour + uniform(&mut rng, -p.start_jitter_hours, p.start_jitter_hours);
            let rps = lognormal(&mut rng, p.requests_per_second_median, 0.5).clamp(0.05, 50.0);
            let run_hours = lognormal(&mut rng, p.run_hours_median, 0.4).min(p.run_hours_max);
            let system_prompt = fingerprint(&mut rng);
            let sys_tokens = int(&mut rng, 300, 1_500);
            let forms: Vec<i64> = (0..int(&mut rng, 1, 4))
                .map(|_| fingerprint(&mut rng))
                .collect();
            let topic = *pick(
                &mut rng,
                &["writing", "writing", "other", "coding", "science"],
            );
            let language = c.languages[0].0;
            let max_tokens = *pick(&mut rng, &[256, 512, 1024]);
            let model = if chance(&mut rng, 0.6) {
                MODEL_SMALL
            } else {
                MODEL_LARGE
            };
            let prefix = cloud_prefix(&mut rng);
            let workers: Vec<String> = (0..int(&mut rng, 2, 8))
                .map(|_| ip_in(&mut rng, prefix))
                .collect();
            let user_agent = *pick(&mut rng, &SDK_AGENTS[..2]);

            // One run per local day, started by the scheduler a little late.
            let first_day = (w.start - DAY_MS).div_euclid(DAY_MS);
            let last_day = w.end.div_euclid(DAY_MS);
            for day in first_day..=last_day {
                let start = day * DAY_MS
                    + ((hour - tz) * HOUR_MS as f64) as i64
                    + int(&mut rng, 5_000, 4 * MINUTE_MS);
                let len = (run_hours * uniform(&mut rng, 0.8, 1.2) * HOUR_MS as f64) as i64;
                if start + len < w.start || start >= w.end {
                    continue;
                }
                let times =
                    regular_times(&mut rng, start, start + len, 1_000.0 / rps, p.spacing_cv);
                let mut failed: Vec<Req> = Vec::new();
                let mut last = start;
                for t in times {
                    last = t;
                    let mut req = base_req(&account_id, &key, t, model);
                    req.client_ip = Some(pick(&mut rng, &workers).clone());
                    req.user_agent = Some(user_agent);
                    let doc = tokens(
                        lognormal(&mut rng, p.prompt_tokens_median, 0.5),
                        300,
                        60_000,
                    );
                    let mut prompt = Prompt::fresh(&mut rng, topic, language, doc);
                    if chance(&mut rng, p.templated_share) {
                        prompt.template = *pick(&mut rng, &forms);
                    }
                    prompt.cot = round3(uniform(&mut rng, 0.0, 0.08));
                    prompt.apply(&mut req);
                    req.prompt_tokens = sys_tokens + doc;
                    req.system_prompt_hash = Some(system_prompt);
                    req.temperature = Some(0.0);
                    req.max_tokens = Some(max_tokens);
                    let out = Outcome {
                        completion: tokens(
                            lognormal(&mut rng, p.completion_tokens_median, 0.5),
                            5,
                            4_000,
                        ),
                        reasoning: 0,
                        cached: sys_tokens,
                        tool_use: false,
                    };
                    if chance(&mut rng, p.retry_pass_share) {
                        failed.push(req.clone());
                    }
                    w.push(&mut rng, req, out, Faults::NORMAL);
                }
                let mut t = last + int(&mut rng, 30_000, 5 * MINUTE_MS);
                for mut req in failed {
                    req.event_time = t;
                    let out = Outcome {
                        completion: tokens(
                            lognormal(&mut rng, p.completion_tokens_median, 0.5),
                            5,
                            4_000,
                        ),
                        reasoning: 0,
                        cached: 0,
                        tool_use: false,
                    };
                    w.push(&mut rng, req, out, Faults::NORMAL);
                    t += jittered(&mut rng, 1_000.0 / rps, p.spacing_cv);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// enterprise_fleet
// ---------------------------------------------------------------------------

/// A verified enterprise whose employees and teams each have an account, all
/// under one org and one corporate card.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnterpriseFleet {
    /// Accounts per company: the population's accounts are split into
    /// companies of this size.
    pub fleet_size: usize,
    /// Median requests per workday of one employee (log-normal).
    pub requests_per_workday_median: f64,
    /// Log-space spread across employees.
    pub requests_per_workday_sigma: f64,
    /// Share of a fleet's accounts that are team service accounts (an
    /// internal tool's backend): busier, templated, temperature 0.
    pub service_account_share: f64,
    /// Median requests per workday of a service account.
    pub service_requests_per_workday_median: f64,
    /// Internal tools per company, each with its own system prompt.
    pub internal_tools: i64,
    /// Share of accounts provisioned in bulk onboarding waves (created
    /// within minutes of each other by the identity provider).
    pub bulk_provisioned_share: f64,
    /// Share of employees moved to a newly released model (IT rolls it out).
    pub new_model_adoption: f64,
}

impl Default for EnterpriseFleet {
    fn default() -> Self {
        EnterpriseFleet {
            fleet_size: 50,
            requests_per_workday_median: 12.0,
            requests_per_workday_sigma: 1.0,
            service_account_share: 0.08,
            service_requests_per_workday_median: 150.0,
            internal_tools: 4,
            bulk_provisioned_share: 0.8,
            new_model_adoption: 0.4,
        }
    }
}

/// Workday office hours at `tz`.
fn workday(t: i64, tz: f64) -> f64 {
    if is_weekend(t, tz) {
        0.03
    } else {
        office(local_hour(t, tz))
    }
}

impl EnterpriseFleet {
    fn generate(&self, w: &mut World, stream: &str, label: &Label, accounts: usize) {
        let p = self;
        let mut rng = w.rng(stream);
        let size = p.fleet_size.max(1);
        let fleets = accounts.div_ceil(size);
        for f in 0..fleets {
            // Spread the remainder so fleets differ by at most one account.
            let members = accounts / fleets + usize::from(f < accounts % fleets);
            self.fleet(w, &mut rng, label, members);
        }
    }

    fn fleet(&self, w: &mut World, rng: &mut StdRng, label: &Label, members: usize) {
        let p = self;
        let hq = geo::country(pick_str(
            rng,
            &["US", "US", "GB", "DE", "FR", "JP", "IN", "CA"],
        ));
        // Offices: headquarters plus up to two others, each behind its own
        // egress /24 (remote staff tunnel through the corporate VPN).
        let mut offices: Vec<(&'static Country, f64, [u8; 3])> = Vec::new();
        offices.push((hq, hq.utc_offset(rng), cloud_prefix(rng)));
        for _ in 0..int(rng, 0, 2) {
            let c = pick_country(rng);
            offices.push((c, c.utc_offset(rng), cloud_prefix(rng)));
        }
        let office_weights: Vec<f64> = (0..offices.len())
            .map(|i| if i == 0 { 3.0 } else { 1.0 })
            .collect();
        let org = w.new_id("org_", 12);
        let card = payment(w);
        let waves: Vec<i64> = (0..int(rng, 1, 3))
            .map(|_| days_before(rng, w.start, 20.0, 500.0))
            .collect();
        let tools: Vec<(i64, i64, &'static str)> = (0..p.internal_tools.max(1))
            .map(|_| {
                (
                    fingerprint(rng),
                    int(rng, 200, 3_000),
                    *pick(rng, &["coding", "writing", "other", "chat"]),
                )
            })
            .collect();
        let tool_weights = zipf_weights(tools.len(), 1.0);
        let tool_agents: Vec<&'static str> = tools
            .iter()
            .map(|_| *pick(rng, &["atlas-sdk-python/0.9.1", "atlas-sdk-node/1.4.2"]))
            .collect();
        let rollout = Adoption::draw(w, rng, p.new_model_adoption, 36.0, 0.8);
        let default_model = if chance(rng, 0.5) {
            MODEL_LARGE
        } else {
            MODEL_SMALL
        };

        for _ in 0..members {
            let (country, tz, egress) = offices[weighted(rng, &office_weights)];
            let account_id = w.new_id("acct_", 16);
            let key = w.new_id("key_", 12);
            let created_at = if chance(rng, p.bulk_provisioned_share) {
                *pick(rng, &waves) + int(rng, 0, 40 * MINUTE_MS)
            } else {
                days_before(rng, w.start, 1.0, 400.0)
            };
            w.add_account(
                Account {
                    account_id: account_id.clone(),
                    org_id: Some(org.clone()),
                    created_at,
                    tier: "enterprise",
                    country: Some(country.code),
                    billing_country: Some(hq.code),
                    payment_fingerprint: Some(card.clone()),
                    signup_channel: "enterprise_sales",
                    verified: true,
                },
                label.clone(),
            );
            let service = chance(rng, p.service_account_share);
            let language = if chance(rng, 0.8) {
                country.languages[0].0
            } else {
                "en"
            };
            let engineer = chance(rng, 0.4);
            let my_tools: Vec<f64> = tool_weights
                .iter()
                .map(|x| x * uniform(rng, 0.1, 1.0))
                .collect();
            let my_ip = ip_in(rng, egress);
            if service {
                let tool = weighted(rng, &tool_weights);
                let (sys, sys_tokens, topic) = tools[tool];
                let flows: Vec<i64> = (0..int(rng, 1, 4)).map(|_| fingerprint(rng)).collect();
                let per_workday = lognormal(rng, p.service_requests_per_workday_median, 0.8);
                let per_day = per_workday * 5.0 / 7.0;
                let times = shaped_times(rng, w.start, w.end, per_day, |t| workday(t, tz));
                for t in times {
                    let model = rollout.model(w, rng, t, default_model);
                    let mut req = base_req(&account_id, &key, t, model);
                    req.client_ip = Some(ip_in(rng, egress));
                    req.user_agent = Some(tool_agents[tool]);
                    let len = tokens(lognormal(rng, 800.0, 0.8), 20, 20_000);
                    let mut prompt = Prompt::fresh(rng, topic, language, len);
                    if chance(rng, 0.8) {
                        prompt.template = *pick(rng, &flows);
                    }
                    prompt.apply(&mut req);
                    req.prompt_tokens = sys_tokens + len;
                    req.system_prompt_hash = Some(sys);
                    req.temperature = Some(0.0);
                    req.max_tokens = Some(1024);
                    let out = Outcome {
                        completion: tokens(lognormal(rng, 250.0, 0.7), 5, 4_000),
                        reasoning: 0,
                        cached: sys_tokens,
                        tool_use: false,
                    };
                    w.push(rng, req, out, Faults::NORMAL);
                }
                continue;
            }
            let per_workday = lognormal(
                rng,
                p.requests_per_workday_median,
                p.requests_per_workday_sigma,
            );
            // Sessions of about three requests each.
            let per_day = per_workday / 3.0 * 5.0 / 7.0;
            let sessions = shaped_times(rng, w.start, w.end, per_day, |t| workday(t, tz));
            for start in sessions {
                let tool = weighted(rng, &my_tools);
                let (sys, sys_tokens, tool_topic) = tools[tool];
                let topic = if engineer && chance(rng, 0.6) {
                    "coding"
                } else if chance(rng, 0.6) {
                    tool_topic
                } else {
                    TOPICS[weighted(rng, &TOPIC_MIX)]
                };
                let model = rollout.model(w, rng, start, default_model);
                let mut t = start;
                let mut context = 0;
                for turn in 1..=geometric(rng, 3.0).min(20) {
                    let len = tokens(lognormal(rng, 120.0, 1.1), 3, 20_000);
                    let mut prompt = Prompt::fresh(rng, topic, language, len);
                    if chance(rng, 0.03) {
                        prompt.cot = high_cot(rng);
                    }
                    let mut req = base_req(&account_id, &key, t, model);
                    prompt.apply(&mut req);
                    req.client_ip = Some(my_ip.clone());
                    req.user_agent = Some(tool_agents[tool]);
                    req.prompt_tokens = sys_tokens + context + len;
                    req.system_prompt_hash = Some(sys);
                    req.conversation_turns = turn;
                    let completion = tokens(lognormal(rng, 400.0, 0.8), 5, 6_000);
                    let out = Outcome {
                        completion,
                        reasoning: 0,
                        cached: sys_tokens + (context as f64 * 0.9) as i64,
                        tool_use: false,
                    };
                    w.push(rng, req, out, Faults::NORMAL);
                    context += len + completion;
                    t += (lognormal(rng, 60_000.0, 0.9).clamp(4_000.0, 30.0 * 60_000.0)
                        + completion as f64 * 10.0) as i64;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// eval_harness
// ---------------------------------------------------------------------------

/// An evaluation harness run once: a benchmark suite in a short, fast run,
/// then silence.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalHarness {
    /// Median questions per benchmark (log-normal, sigma 0.7).
    pub questions_median: f64,
    /// Fewest questions per benchmark.
    pub questions_min: i64,
    /// Most questions per benchmark.
    pub questions_max: i64,
    /// Most benchmarks in one run (uniform from 1).
    pub benchmarks_max: i64,
    /// Share of benchmarks scored as multiple choice from logprobs with
    /// max_tokens = 1; the rest are generative with "think step by step".
    pub multiple_choice_share: f64,
    /// top_logprobs of multiple-choice scoring.
    pub top_logprobs: i64,
    /// Share of benchmarks that are multilingual (questions in many languages).
    pub multilingual_share: f64,
    /// Share of generative benchmarks run with extended reasoning on.
    pub reasoning_share: f64,
    /// Median requests per second of the harness's worker pool.
    pub requests_per_second_median: f64,
    /// Share of runs evaluating the newest model when one is out.
    pub newest_model_share: f64,
    /// Share of runs started within hours of a mid-span release.
    pub near_release_share: f64,
    /// Share of runs that also score a baseline model on the same questions.
    pub baseline_share: f64,
    /// Share of runs preceded by smoke tests (a few questions, repeated).
    pub smoke_test_share: f64,
}

impl Default for EvalHarness {
    fn default() -> Self {
        EvalHarness {
            questions_median: 800.0,
            questions_min: 100,
            questions_max: 5_000,
            benchmarks_max: 3,
            multiple_choice_share: 0.55,
            top_logprobs: 5,
            multilingual_share: 0.15,
            reasoning_share: 0.3,
            requests_per_second_median: 3.0,
            newest_model_share: 0.7,
            near_release_share: 0.6,
            baseline_share: 0.4,
            smoke_test_share: 0.7,
        }
    }
}

/// One benchmark: its questions and how they are scored.
struct Benchmark {
    questions: Vec<Prompt>,
    multiple_choice: bool,
    reasoning: bool,
    endpoint: &'static str,
    max_tokens: i64,
    top_logprobs: i64,
}

impl EvalHarness {
    fn benchmark(&self, rng: &mut StdRng) -> Benchmark {
        let p = self;
        let multiple_choice = chance(rng, p.multiple_choice_share);
        let count = tokens(
            lognormal(rng, p.questions_median, 0.7),
            p.questions_min.max(1),
            p.questions_max.max(p.questions_min.max(1)),
        );
        let languages: &[&'static str] = if chance(rng, p.multilingual_share) {
            &["en", "es", "de", "fr", "ja", "ko", "pt", "zh", "hi"]
        } else {
            &["en"]
        };
        // Multiple-choice suites share a few-shot header per subject;
        // generative ones one or two instruction formats.
        let formats: Vec<(i64, &'static str)> = (0..if multiple_choice {
            int(rng, 5, 57)
        } else {
            int(rng, 1, 3)
        })
            .map(|_| {
                let topic = if multiple_choice {
                    *pick(
                        rng,
                        &["science", "math", "other", "reasoning", "coding", "writing"],
                    )
                } else {
                    *pick(rng, &["math", "reasoning", "coding"])
                };
                (fingerprint(rng), topic)
            })
            .collect();
        let questions = (0..count)
            .map(|i| {
                let (template, topic) = formats[(i as usize * formats.len()) / count as usize];
                let language = languages[i as usize % languages.len()];
                Prompt {
                    fp: fingerprint(rng),
                    template,
                    topic,
                    language,
                    tokens: if multiple_choice {
                        int(rng, 300, 1_500)
                    } else {
                        tokens(lognormal(rng, 150.0, 0.6), 20, 2_000)
                    },
                    cot: if multiple_choice {
                        round3(uniform(rng, 0.0, 0.1))
                    } else {
                        round3(uniform(rng, 0.6, 0.9))
                    },
                }
            })
            .collect();
        Benchmark {
            questions,
            multiple_choice,
            reasoning: !multiple_choice && chance(rng, p.reasoning_share),
            endpoint: if multiple_choice && chance(rng, 0.5) {
                EP_COMPLETIONS
            } else {
                EP_MESSAGES
            },
            max_tokens: if multiple_choice {
                1
            } else {
                *pick(rng, &[1024, 2048, 4096])
            },
            top_logprobs: if multiple_choice { p.top_logprobs } else { 0 },
        }
    }

    fn generate(&self, w: &mut World, stream: &str, label: &Label, accounts: usize) {
        let p = self;
        let mut rng = w.rng(stream);
        for _ in 0..accounts {
            let c = pick_country(&mut rng);
            let channel = *pick(&mut rng, &["research", "research", "web", "startup"]);
            let tier = if chance(&mut rng, 0.7) {
                "build"
            } else {
                "scale"
            };
            let verified = chance(&mut rng, 0.3);
            let biz = Biz {
                country: c,
                tier,
                channel,
                verified,
                age_days: (30.0, 1_500.0),
            };
            let account_id = business_account(w, &mut rng, label, biz);
            let key = w.new_id("key_", 12);
            let ip = if chance(&mut rng, 0.5) {
                let prefix = cloud_prefix(&mut rng);
                ip_in(&mut rng, prefix)
            } else {
                c.residential_ip(&mut rng)
            };
            let client = Client {
                account_id,
                key,
                ip,
                user_agent: if chance(&mut rng, 0.3) {
                    pick_str(&mut rng, geo::SCRIPT_AGENTS)
                } else {
                    pick_str(&mut rng, &SDK_AGENTS[..2])
                },
            };

            let span = w.duration();
            let near_release = w
                .new_model
                .filter(|(_, at)| *at < w.end)
                .filter(|_| chance(&mut rng, p.near_release_share));
            let run_start = match near_release {
                Some((_, at)) => at + exponential(&mut rng, 5.0 * HOUR_MS as f64) as i64,
                None => w.start + (span as f64 * uniform(&mut rng, 0.05, 0.9)) as i64,
            }
            .min(w.end - 20 * MINUTE_MS);
            let suite: Vec<Benchmark> = (0..int(&mut rng, 1, p.benchmarks_max.max(1)))
                .map(|_| self.benchmark(&mut rng))
                .collect();
            let target = match w.new_model_at(run_start) {
                Some(m) if chance(&mut rng, p.newest_model_share) => m,
                _ => *pick(&mut rng, &[MODEL_LARGE, MODEL_LARGE, MODEL_SMALL]),
            };
            let mut models = vec![target];
            if chance(&mut rng, p.baseline_share) {
                models.push(if target == MODEL_SMALL {
                    MODEL_LARGE
                } else {
                    MODEL_SMALL
                });
            }
            let rps = lognormal(&mut rng, p.requests_per_second_median, 0.6).clamp(0.3, 30.0);

            if chance(&mut rng, p.smoke_test_share) {
                // Getting the prompt format right: the first few questions,
                // over and over.
                let b = &suite[0];
                let few = int(&mut rng, 3, 10) as usize;
                let mut t = run_start - int(&mut rng, 20, 90) * MINUTE_MS;
                for _ in 0..int(&mut rng, 1, 4) {
                    for q in b.questions.iter().take(few) {
                        ask(w, &mut rng, &client, t, target, b, q);
                        t += jittered(&mut rng, 1_500.0, 0.5);
                    }
                    t += int(&mut rng, 2, 20) * MINUTE_MS;
                }
            }
            let mut t = run_start;
            for model in models {
                for b in &suite {
                    for q in &b.questions {
                        ask(w, &mut rng, &client, t, model, b, q);
                        t += jittered(&mut rng, 1_000.0 / rps, 0.5);
                    }
                    t += int(&mut rng, 5_000, 3 * MINUTE_MS);
                }
            }
        }
    }
}

fn ask(
    w: &mut World,
    rng: &mut StdRng,
    client: &Client,
    t: i64,
    model: &'static str,
    b: &Benchmark,
    q: &Prompt,
) {
    let mut req = client.req(t, model);
    q.apply(&mut req);
    req.endpoint = b.endpoint;
    req.prompt_tokens = q.tokens;
    req.temperature = Some(0.0);
    req.max_tokens = Some(b.max_tokens);
    if b.multiple_choice {
        req.logprobs = true;
        req.top_logprobs = b.top_logprobs;
    }
    req.reasoning_requested = b.reasoning;
    req.reasoning_effort = b.reasoning.then_some("high");
    let out = Outcome {
        completion: if b.multiple_choice {
            1
        } else {
            tokens(lognormal(rng, 350.0, 0.6), 20, 4_000)
        },
        reasoning: if b.reasoning {
            lognormal(rng, 2_000.0, 0.7) as i64
        } else {
            0
        },
        cached: 0,
        tool_use: false,
    };
    w.push(rng, req, out, Faults::NORMAL);
}

// ---------------------------------------------------------------------------
// launch_burst
// ---------------------------------------------------------------------------

/// A young startup's app on launch day: quiet, then a surge of curious
/// visitors, then a higher plateau of retained users.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LaunchBurst {
    /// Median requests per minute before the launch (log-normal, sigma 0.6).
    pub base_per_minute_median: f64,
    /// Lowest launch peak, as a multiple of the base rate.
    pub boost_min: f64,
    /// Highest launch peak, as a multiple of the base rate.
    pub boost_max: f64,
    /// Shortest peak, hours.
    pub burst_hours_min: f64,
    /// Longest peak, hours.
    pub burst_hours_max: f64,
    /// Base rate after the launch, as a multiple of the base before it.
    pub retained_factor: f64,
    /// Requests per minute the startup's tier allows; above it the gateway
    /// answers 429 and the SDK retries.
    pub rate_limit_per_minute: f64,
    /// Share of startups that upgrade their tier during the burst (limit x10).
    pub upgrade_share: f64,
    /// Share of requests that are the app's canned example prompts.
    pub example_prompt_share: f64,
}

impl Default for LaunchBurst {
    fn default() -> Self {
        LaunchBurst {
            base_per_minute_median: 2.0,
            boost_min: 10.0,
            boost_max: 40.0,
            burst_hours_min: 0.5,
            burst_hours_max: 4.0,
            retained_factor: 2.0,
            rate_limit_per_minute: 50.0,
            upgrade_share: 0.5,
            example_prompt_share: 0.12,
        }
    }
}

impl LaunchBurst {
    fn generate(&self, w: &mut World, stream: &str, label: &Label, accounts: usize) {
        let p = self;
        let mut rng = w.rng(stream);
        let mut pools = Pools::new(w.seed);
        for _ in 0..accounts {
            let market = geo::country(pick_str(
                &mut rng,
                &["US", "US", "US", "GB", "DE", "IN", "FR"],
            ));
            let tz = market.utc_offset(&mut rng);
            let biz = Biz {
                country: market,
                tier: "build",
                channel: if chance(&mut rng, 0.7) {
                    "startup"
                } else {
                    "web"
                },
                verified: false,
                age_days: (3.0, 40.0),
            };
            let account_id = business_account(w, &mut rng, label, biz);
            let key = w.new_id("key_", 12);
            let kind = *pick(
                &mut rng,
                &[
                    ProductKind::Assistant,
                    ProductKind::Assistant,
                    ProductKind::Writing,
                    ProductKind::Tutor,
                    ProductKind::Agent,
                ],
            );
            let knobs = ProductKnobs {
                templated_share: 0.2,
                example_share: p.example_prompt_share,
                popular_share: 0.04,
                tools_share: 0.3,
                new_model_adoption: 0.2,
            };
            let product = Product::draw(w, &mut rng, kind, market, knobs);

            let base = lognormal(&mut rng, p.base_per_minute_median, 0.6);
            let boost = uniform(&mut rng, p.boost_min, p.boost_max.max(p.boost_min));
            let burst_ms = uniform(
                &mut rng,
                p.burst_hours_min,
                p.burst_hours_max.max(p.burst_hours_min),
            ) * HOUR_MS as f64;
            // Launch posts go out on a weekday morning in the market.
            let launch = launch_time(w, &mut rng, tz, burst_ms as i64);
            let ramp = uniform(&mut rng, 5.0, 20.0) * MINUTE_MS as f64;
            let decay = uniform(&mut rng, 0.5, 2.0) * HOUR_MS as f64;
            let retained = p.retained_factor;
            let rate = move |t: i64| -> f64 {
                let x = (t - launch) as f64;
                let diurnal_shape = 0.4 + 0.6 * diurnal(local_hour(t, tz));
                let level = if x < 0.0 {
                    1.0
                } else if x < ramp {
                    1.0 + (boost - 1.0) * x / ramp
                } else if x < burst_ms {
                    boost
                } else {
                    retained + (boost - retained) * (-(x - burst_ms) / decay).exp()
                };
                base * level * diurnal_shape
            };
            let upgrade_at = chance(&mut rng, p.upgrade_share)
                .then(|| launch + (uniform(&mut rng, 0.3, 1.5) * HOUR_MS as f64) as i64);
            if let Some(at) = upgrade_at {
                w.update_account(&account_id, at, |a| a.tier = "scale");
            }
            let prefix = cloud_prefix(&mut rng);
            let ips: Vec<String> = (0..int(&mut rng, 1, 4))
                .map(|_| ip_in(&mut rng, prefix))
                .collect();
            let user_agent = *pick(&mut rng, SDK_AGENTS);
            let per_ms = |t: i64| rate(t) / product.requests_per_interaction() / MINUTE_MS as f64;
            let peak =
                base * boost.max(retained) / product.requests_per_interaction() / MINUTE_MS as f64;
            let faults = Faults {
                rate_limited: 0.0,
                error: 0.004,
                refused: 0.002,
            };
            for t in poisson_times(&mut rng, w.start, w.end, peak * 1.05, per_ms) {
                let limit = match upgrade_at {
                    Some(at) if t >= at => p.rate_limit_per_minute * 10.0,
                    _ => p.rate_limit_per_minute,
                };
                // Per-minute counts fluctuate around the rate: some 429s
                // begin a little below the limit.
                let p429 = (1.0 - limit / (rate(t) * 1.15)).max(0.0);
                let client = Client {
                    account_id: account_id.clone(),
                    key: key.clone(),
                    ip: pick(&mut rng, &ips).clone(),
                    user_agent,
                };
                product.interaction(w, &mut rng, &mut pools, &client, t, p429, faults);
            }
        }
    }
}

/// A weekday morning (09:00-13:00 local) comfortably inside the span, or any
/// time that fits when the span is short.
fn launch_time(w: &World, rng: &mut StdRng, tz: f64, burst_ms: i64) -> i64 {
    let lo = w.start + w.duration() / 10;
    let hi = (w.end - burst_ms - w.duration() / 10).max(lo + 1);
    let mornings: Vec<i64> = (lo.div_euclid(DAY_MS) - 1..=hi.div_euclid(DAY_MS) + 1)
        .map(|d| d * DAY_MS + ((9.0 - tz) * HOUR_MS as f64) as i64)
        .filter(|&t| t >= lo && t + 4 * HOUR_MS <= hi && !is_weekend(t, tz))
        .collect();
    if mornings.is_empty() {
        return lo + (uniform(rng, 0.0, 1.0) * (hi - lo) as f64) as i64;
    }
    *pick(rng, &mornings) + int(rng, 0, 4 * HOUR_MS)
}

// ---------------------------------------------------------------------------
// aggregator
// ---------------------------------------------------------------------------

/// An API aggregator / reseller: one very large account relaying the traffic
/// of many legitimate end customers worldwide.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Aggregator {
    /// Median mean requests per minute of one aggregator (log-normal).
    pub requests_per_minute_median: f64,
    /// Log-space spread across aggregators.
    pub requests_per_minute_sigma: f64,
    /// End customers behind one aggregator.
    pub customers: usize,
    /// Zipf exponent of customer sizes (a few big customers, a long tail).
    pub customer_skew: f64,
    /// 429 share at the aggregator's daily peak (its limit is sized a little
    /// below peak demand); none at the trough.
    pub peak_429_share: f64,
    /// Share of customers routed to a newly released model (many pick "latest").
    pub new_model_adoption: f64,
}

impl Default for Aggregator {
    fn default() -> Self {
        Aggregator {
            requests_per_minute_median: 35.0,
            requests_per_minute_sigma: 0.4,
            customers: 400,
            customer_skew: 1.1,
            peak_429_share: 0.02,
            new_model_adoption: 0.6,
        }
    }
}

/// User agents of the aggregator's customers' clients, passed through.
const RELAYED_AGENTS: &[&str] = &[
    "atlas-sdk-python/0.9.1",
    "atlas-sdk-python/0.8.4",
    "atlas-sdk-node/1.4.2",
    "openai-python/1.54.3",
    "openai-node/4.71.1",
    "litellm/1.52.9",
    "langchain-core/0.3.19",
    "python-httpx/0.27.0",
    "python-requests/2.32.3",
    "Go-http-client/2.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
];

impl Aggregator {
    fn generate(&self, w: &mut World, stream: &str, label: &Label, accounts: usize) {
        let p = self;
        let mut rng = w.rng(stream);
        let mut pools = Pools::new(w.seed);
        for _ in 0..accounts {
            let home = geo::country(pick_str(&mut rng, &["US", "US", "GB", "DE", "SG"]));
            let biz = Biz {
                country: home,
                tier: pick_str(&mut rng, &["scale", "enterprise"]),
                channel: "startup",
                verified: chance(&mut rng, 0.7),
                age_days: (300.0, 900.0),
            };
            let account_id = business_account(w, &mut rng, label, biz);
            let keys: Vec<String> = (0..int(&mut rng, 2, 4))
                .map(|_| w.new_id("key_", 12))
                .collect();
            let prefixes: Vec<[u8; 3]> = (0..int(&mut rng, 3, 8))
                .map(|_| cloud_prefix(&mut rng))
                .collect();
            let ips: Vec<String> = (0..40)
                .map(|_| {
                    let prefix = *pick(&mut rng, &prefixes);
                    ip_in(&mut rng, prefix)
                })
                .collect();
            let knobs = ProductKnobs {
                templated_share: 0.25,
                example_share: 0.02,
                popular_share: 0.06,
                tools_share: 0.35,
                new_model_adoption: p.new_model_adoption,
            };
            let n = p.customers.max(1);
            let sizes = zipf_weights(n, p.customer_skew);
            let customers: Vec<(Product, f64, &'static str)> = (0..n)
                .map(|_| {
                    let market = pick_country(&mut rng);
                    let tz = market.utc_offset(&mut rng);
                    let kind = Product::draw_kind(&mut rng);
                    let product = Product::draw(w, &mut rng, kind, market, knobs);
                    (product, tz, *pick(&mut rng, RELAYED_AGENTS))
                })
                .collect();
            // Customer mix by quarter hour of the UTC day: each customer
            // follows its own market's day.
            let bins: Vec<Vec<f64>> = (0..96)
                .map(|b| {
                    let t = b as i64 * 15 * MINUTE_MS;
                    customers
                        .iter()
                        .zip(&sizes)
                        .map(|((_, tz, _), s)| s * (0.25 + 0.75 * diurnal(local_hour(t, *tz))))
                        .collect()
                })
                .collect();
            let totals: Vec<f64> = bins.iter().map(|b| b.iter().sum()).collect();
            let bin = |t: i64| (t.rem_euclid(DAY_MS) / (15 * MINUTE_MS)) as usize;
            let shape = |t: i64| totals[bin(t)];
            let (mean, max) = week_stats(w.start, &shape);
            let size_total: f64 = sizes.iter().sum();
            let per_interaction: f64 = customers
                .iter()
                .zip(&sizes)
                .map(|((c, _, _), s)| c.requests_per_interaction() * s)
                .sum::<f64>()
                / size_total;
            let per_min = lognormal(
                &mut rng,
                p.requests_per_minute_median,
                p.requests_per_minute_sigma,
            );
            let per_day = per_min * 1_440.0 / per_interaction;
            let faults = Faults {
                rate_limited: 0.0,
                error: 0.004,
                refused: 0.003,
            };
            for t in shaped_times(&mut rng, w.start, w.end, per_day, shape) {
                let b = bin(t);
                let (product, _, agent) = &customers[weighted(&mut rng, &bins[b])];
                let p429 = if max > mean {
                    p.peak_429_share * ((totals[b] - mean) / (max - mean)).max(0.0)
                } else {
                    0.0
                };
                let client = Client {
                    account_id: account_id.clone(),
                    key: pick(&mut rng, &keys).clone(),
                    ip: pick(&mut rng, &ips).clone(),
                    user_agent: agent,
                };
                product.interaction(w, &mut rng, &mut pools, &client, t, p429, faults);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// ci_pipeline
// ---------------------------------------------------------------------------

/// A CI pipeline exercising an app's LLM integration: the same fixed test
/// suite on every scheduled run or commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CiPipeline {
    /// Share of pipelines on a cron schedule; the rest run on each commit
    /// (plus a nightly run).
    pub scheduled_share: f64,
    /// Cron intervals to choose from, minutes.
    pub intervals_minutes: Vec<i64>,
    /// Median commits per workday of a per-commit pipeline (log-normal).
    pub commits_per_workday_median: f64,
    /// Median prompts in a suite (log-normal, sigma 0.6).
    pub suite_size_median: f64,
    /// Largest suite.
    pub suite_size_max: i64,
    /// Share of pipelines on hosted runners, calling from shared cloud /24s
    /// used by every other hosted pipeline; the rest are self-hosted.
    pub hosted_runner_share: f64,
    /// Share of suites with tool-calling tests.
    pub tools_share: f64,
    /// Share of suites with a logprobs test.
    pub logprobs_share: f64,
    /// Share of pipelines running tests in parallel workers.
    pub parallel_share: f64,
    /// Probability per run that a developer has edited one test prompt.
    pub edit_probability: f64,
    /// Share of pipelines switched to a newly released model mid-span.
    pub new_model_adoption: f64,
}

impl Default for CiPipeline {
    fn default() -> Self {
        CiPipeline {
            scheduled_share: 0.6,
            intervals_minutes: vec![15, 30, 60, 60],
            commits_per_workday_median: 10.0,
            suite_size_median: 20.0,
            suite_size_max: 150,
            hosted_runner_share: 0.7,
            tools_share: 0.3,
            logprobs_share: 0.05,
            parallel_share: 0.4,
            edit_probability: 0.03,
            new_model_adoption: 0.5,
        }
    }
}

/// One test of a suite: a fixed request.
#[derive(Debug, Clone, Copy)]
struct Test {
    prompt: Prompt,
    model: &'static str,
    temperature: Option<f64>,
    max_tokens: i64,
    tools: Option<(i64, i64)>,
    logprobs: bool,
    system_prompt: Option<(i64, i64)>,
}

/// The times of a pipeline's runs in `[from, to)`.
fn ci_run_times(
    p: &CiPipeline,
    rng: &mut StdRng,
    from: i64,
    to: i64,
    tz: f64,
    scheduled: Option<i64>,
) -> Vec<i64> {
    // Scheduled workflows start late, by seconds to many minutes, when the
    // runner queue is busy at the top of the hour.
    let queue_delay = |rng: &mut StdRng| {
        lognormal(rng, 60_000.0, 1.0).clamp(2_000.0, 20.0 * MINUTE_MS as f64) as i64
    };
    match scheduled {
        Some(interval) => {
            let every = interval.max(1) * MINUTE_MS;
            let mut out = Vec::new();
            let mut slot = from.div_euclid(every) * every;
            while slot < to {
                if !chance(rng, 0.01) {
                    out.push(slot + queue_delay(rng));
                }
                slot += every;
            }
            out
        }
        None => {
            let per_workday = lognormal(rng, p.commits_per_workday_median, 0.6);
            let mut out = shaped_times(rng, from, to, per_workday * 5.0 / 7.0, |t| workday(t, tz));
            // Plus the nightly build at 02:00 local.
            let first = from.div_euclid(DAY_MS) - 1;
            for day in first..=to.div_euclid(DAY_MS) {
                let t = day * DAY_MS + ((2.0 - tz) * HOUR_MS as f64) as i64 + queue_delay(rng);
                if (from..to).contains(&t) {
                    out.push(t);
                }
            }
            out.sort_unstable();
            out
        }
    }
}

impl CiPipeline {
    fn generate(&self, w: &mut World, stream: &str, label: &Label, accounts: usize) {
        let p = self;
        let mut rng = w.rng(stream);
        let runners = ci_runner_prefixes(w.seed);
        for _ in 0..accounts {
            let c = pick_country(&mut rng);
            let tz = c.utc_offset(&mut rng);
            let tier = if chance(&mut rng, 0.7) {
                "build"
            } else {
                "scale"
            };
            let channel = if chance(&mut rng, 0.5) {
                "startup"
            } else {
                "web"
            };
            let biz = Biz {
                country: c,
                tier,
                channel,
                verified: chance(&mut rng, 0.2),
                age_days: (30.0, 900.0),
            };
            let account_id = business_account(w, &mut rng, label, biz);
            let key = w.new_id("key_", 12);
            let hosted = chance(&mut rng, p.hosted_runner_share);
            let own_prefix = cloud_prefix(&mut rng);
            let own_ips: Vec<String> = (0..int(&mut rng, 1, 3))
                .map(|_| ip_in(&mut rng, own_prefix))
                .collect();
            let user_agent = if chance(&mut rng, 0.75) {
                "atlas-sdk-python/0.9.1"
            } else {
                "atlas-sdk-node/1.4.2"
            };
            let language = c.languages[0].0;
            let model = if chance(&mut rng, 0.6) {
                MODEL_SMALL
            } else {
                MODEL_LARGE
            };
            let size = tokens(
                lognormal(&mut rng, p.suite_size_median, 0.6),
                3,
                p.suite_size_max.max(3),
            );
            let system_prompt =
                chance(&mut rng, 0.6).then(|| (fingerprint(&mut rng), int(&mut rng, 100, 2_000)));
            let tools = chance(&mut rng, p.tools_share)
                .then(|| (int(&mut rng, 1, 10), fingerprint(&mut rng)));
            let has_logprobs = chance(&mut rng, p.logprobs_share);
            let fixture_template = fingerprint(&mut rng);
            let mut suite: Vec<Test> = (0..size)
                .map(|i| {
                    let topic = TOPICS[weighted(&mut rng, &TOPIC_MIX)];
                    let len = tokens(lognormal(&mut rng, 120.0, 0.8), 3, 4_000);
                    let mut prompt = Prompt::fresh(&mut rng, topic, language, len);
                    // Parametrised tests: one f-string, different inputs.
                    if chance(&mut rng, 0.3) {
                        prompt.template = fixture_template;
                    }
                    if chance(&mut rng, 0.05) {
                        prompt.cot = high_cot(&mut rng);
                    }
                    Test {
                        prompt,
                        model: if chance(&mut rng, 0.15) {
                            MODEL_LARGE
                        } else {
                            model
                        },
                        temperature: if chance(&mut rng, 0.85) {
                            Some(0.0)
                        } else {
                            None
                        },
                        max_tokens: *pick(&mut rng, &[16, 32, 64, 128, 256]),
                        tools: tools.filter(|_| chance(&mut rng, 0.4)),
                        logprobs: has_logprobs && i == 0,
                        system_prompt: system_prompt.filter(|_| chance(&mut rng, 0.7)),
                    }
                })
                .collect();
            let switch = Adoption::draw(w, &mut rng, p.new_model_adoption, 24.0, 1.0);
            let parallel = chance(&mut rng, p.parallel_share);
            let gap = lognormal(&mut rng, 1_500.0, 0.5);
            let scheduled = (!p.intervals_minutes.is_empty()
                && chance(&mut rng, p.scheduled_share))
            .then(|| (*pick(&mut rng, &p.intervals_minutes)).max(1));

            for run in ci_run_times(p, &mut rng, w.start, w.end, tz, scheduled) {
                if chance(&mut rng, p.edit_probability) {
                    let i = int(&mut rng, 0, suite.len() as i64 - 1) as usize;
                    suite[i].prompt.fp = fingerprint(&mut rng);
                }
                let runner = if hosted {
                    let prefix = *pick(&mut rng, &runners);
                    ip_in(&mut rng, prefix)
                } else {
                    pick(&mut rng, &own_ips).clone()
                };
                let mut t = run + int(&mut rng, 10_000, 90_000);
                for (i, test) in suite.iter().enumerate() {
                    let model = if run >= switch.at {
                        w.new_model_at(run).unwrap_or(test.model)
                    } else {
                        test.model
                    };
                    let mut req = base_req(&account_id, &key, t, model);
                    test.prompt.apply(&mut req);
                    req.client_ip = Some(runner.clone());
                    req.user_agent = Some(user_agent);
                    req.prompt_tokens = test.prompt.tokens + test.system_prompt.map_or(0, |s| s.1);
                    req.system_prompt_hash = test.system_prompt.map(|s| s.0);
                    req.temperature = test.temperature;
                    req.max_tokens = Some(test.max_tokens);
                    if let Some((count, hash)) = test.tools {
                        req.tool_count = count;
                        req.tools_hash = Some(hash);
                    }
                    if test.logprobs {
                        req.logprobs = true;
                        req.top_logprobs = 5;
                    }
                    let out = Outcome {
                        completion: tokens(lognormal(&mut rng, 60.0, 0.8), 1, 4_000),
                        reasoning: 0,
                        cached: 0,
                        tool_use: test.tools.is_some(),
                    };
                    w.push(&mut rng, req, out, Faults::NORMAL);
                    // Parallel workers send in waves of four.
                    if !parallel || i % 4 == 3 {
                        t += jittered(&mut rng, gap, 0.5);
                    } else {
                        t += int(&mut rng, 5, 200);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use apache_avro::types::Value;
    use distill_watch::schemas::SchemaSet;

    use super::*;
    use crate::scenario::Realism;
    use crate::Traffic;

    /// 2026-11-02T00:00:00Z, a Monday.
    const START: i64 = 1_793_577_600_000;

    /// A decoded request with its response status, account and population.
    #[derive(Debug, Clone)]
    struct R {
        account: String,
        population: String,
        t: i64,
        model: String,
        ip: String,
        fp: i64,
        system: Option<i64>,
        temperature: Option<f64>,
        max_tokens: Option<i64>,
        logprobs: bool,
        top_logprobs: i64,
        cot: f64,
        topic: String,
        language: String,
        user_agent: String,
        status: String,
    }

    /// A decoded account (latest version).
    #[derive(Debug, Clone)]
    struct A {
        org: Option<String>,
        card: Option<String>,
        channel: String,
        verified: bool,
    }

    struct Decoded {
        requests: Vec<R>,
        accounts: BTreeMap<String, A>,
    }

    use crate::tests::{decode, Row};

    fn get<'a>(row: &'a Row, k: &str) -> &'a Value {
        match &row[k] {
            Value::Union(_, v) => v,
            v => v,
        }
    }

    fn text(row: &Row, k: &str) -> Option<String> {
        match get(row, k) {
            Value::String(s) | Value::Enum(_, s) => Some(s.clone()),
            _ => None,
        }
    }

    fn long(row: &Row, k: &str) -> Option<i64> {
        match get(row, k) {
            Value::Long(x) | Value::TimestampMillis(x) => Some(*x),
            Value::Int(x) => Some(i64::from(*x)),
            _ => None,
        }
    }

    fn double(row: &Row, k: &str) -> Option<f64> {
        match get(row, k) {
            Value::Double(x) => Some(*x),
            _ => None,
        }
    }

    fn boolean(row: &Row, k: &str) -> bool {
        matches!(get(row, k), Value::Boolean(true))
    }

    /// Generate the given populations (kind, params as TOML, accounts) into
    /// one world, the way `crate::generate` does.
    fn generate(specs: &[(&str, &str, usize)], hours: i64, seed: u64) -> Traffic {
        let mut w = World::new(seed, START, hours * HOUR_MS, 1.0)
            .with_release("atlas-4", START + 6 * HOUR_MS);
        for (i, (kind, params, accounts)) in specs.iter().enumerate() {
            let table: toml::Table = toml::from_str(params).expect("params parse");
            let b = Benign::parse(kind, table).expect("known kind");
            b.generate(&mut w, &format!("benign/{i}/{kind}"), kind, *accounts);
        }
        w.finish(&Realism::off())
    }

    /// [`generate`], decoded.
    fn run(specs: &[(&str, &str, usize)], hours: i64, seed: u64) -> (Traffic, Decoded) {
        let traffic = generate(specs, hours, seed);
        let decoded = decode_all(&traffic);
        (traffic, decoded)
    }

    /// Every kind, small: the aggregator at a few requests a minute.
    fn all_kinds(accounts: usize) -> Vec<(&'static str, &'static str, usize)> {
        Benign::KINDS
            .iter()
            .map(|k| match *k {
                "aggregator" => (*k, "requests_per_minute_median = 4.0", 1),
                _ => (*k, "", accounts),
            })
            .collect()
    }

    fn decode_all(t: &Traffic) -> Decoded {
        let set = SchemaSet::builtin();
        let population: BTreeMap<&str, &str> = t
            .truth
            .iter()
            .map(|r| (r.account_id.as_str(), r.label.group.as_str()))
            .collect();
        let status: BTreeMap<String, String> = t
            .responses
            .iter()
            .map(|r| {
                let row = decode(r, &set.response);
                (
                    text(&row, "request_id").unwrap(),
                    text(&row, "status").unwrap(),
                )
            })
            .collect();
        let mut requests: Vec<R> = t
            .requests
            .iter()
            .map(|r| {
                let row = decode(r, &set.request);
                let account = text(&row, "account_id").unwrap();
                R {
                    population: population[account.as_str()].to_string(),
                    account,
                    t: long(&row, "event_time").unwrap(),
                    model: text(&row, "model").unwrap(),
                    ip: text(&row, "client_ip").unwrap_or_default(),
                    fp: long(&row, "prompt_fingerprint").unwrap(),
                    system: long(&row, "system_prompt_hash"),
                    temperature: double(&row, "temperature"),
                    max_tokens: long(&row, "max_tokens"),
                    logprobs: boolean(&row, "logprobs"),
                    top_logprobs: long(&row, "top_logprobs").unwrap(),
                    cot: double(&row, "cot_elicitation_score").unwrap(),
                    topic: text(&row, "topic").unwrap(),
                    language: text(&row, "prompt_language").unwrap(),
                    user_agent: text(&row, "user_agent").unwrap_or_default(),
                    status: status[&text(&row, "request_id").unwrap()].clone(),
                }
            })
            .collect();
        requests.sort_by(|a, b| (&a.account, a.t).cmp(&(&b.account, b.t)));
        let accounts = t
            .accounts
            .iter()
            .map(|r| {
                let row = decode(r, &set.account);
                (
                    text(&row, "account_id").unwrap(),
                    A {
                        org: text(&row, "org_id"),
                        card: text(&row, "payment_fingerprint"),
                        channel: text(&row, "signup_channel").unwrap(),
                        verified: boolean(&row, "verified"),
                    },
                )
            })
            .collect();
        Decoded { requests, accounts }
    }

    fn by_account(reqs: &[R]) -> BTreeMap<&str, Vec<&R>> {
        let mut m: BTreeMap<&str, Vec<&R>> = BTreeMap::new();
        for r in reqs {
            m.entry(r.account.as_str()).or_default().push(r);
        }
        m
    }

    /// Coefficient of variation of the gaps between sorted times.
    fn cv(times: &[i64]) -> f64 {
        let gaps: Vec<f64> = times.windows(2).map(|p| (p[1] - p[0]) as f64).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        var.sqrt() / mean
    }

    fn median(mut xs: Vec<f64>) -> f64 {
        xs.sort_by(|a, b| a.total_cmp(b));
        xs[xs.len() / 2]
    }

    fn share(reqs: &[&R], mut f: impl FnMut(&R) -> bool) -> f64 {
        reqs.iter().filter(|r| f(r)).count() as f64 / reqs.len().max(1) as f64
    }

    #[test]
    fn every_kind_parses_rejects_typos_and_generates_labelled_traffic() {
        for kind in Benign::KINDS {
            assert!(Benign::parse(kind, toml::Table::new()).is_ok(), "{kind}");
            let mut bad = toml::Table::new();
            bad.insert("no_such_param".into(), toml::Value::Integer(1));
            let e = Benign::parse(kind, bad).unwrap_err();
            assert!(e.contains("no_such_param"), "{kind}: {e}");
        }
        assert!(Benign::parse("nope", toml::Table::new()).is_err());
        // A day and a half: long enough for nightly jobs and one-off runs to
        // land.
        let t = generate(&all_kinds(3), 36, 5);
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for row in &t.truth {
            assert!(!row.label.is_campaign());
            *seen.entry(row.label.group.as_str()).or_default() += 1;
        }
        for kind in Benign::KINDS {
            assert!(seen.contains_key(kind), "{kind} sent nothing");
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_differs() {
        let specs = all_kinds(2);
        let a = generate(&specs, 12, 9);
        assert_eq!(a, generate(&specs, 12, 9));
        assert_ne!(a.requests, generate(&specs, 12, 10).requests);
    }

    #[test]
    fn chat_users_are_bursty_diverse_and_share_popular_questions() {
        let (_, d) = run(&[("chat_user", "", 400), ("student", "", 200)], 48, 3);
        let chat: Vec<&R> = d
            .requests
            .iter()
            .filter(|r| r.population == "chat_user")
            .collect();
        let accounts = by_account(&d.requests);
        let cvs: Vec<f64> = accounts
            .values()
            .filter(|rs| rs[0].population == "chat_user" && rs.len() >= 10)
            .map(|rs| cv(&rs.iter().map(|r| r.t).collect::<Vec<_>>()))
            .collect();
        assert!(cvs.len() > 50);
        assert!(median(cvs) > 1.0, "human inter-arrivals are heavy-tailed");

        // Sizes vary by orders of magnitude.
        let mut sizes: Vec<usize> = accounts
            .values()
            .filter(|rs| rs[0].population == "chat_user")
            .map(|rs| rs.len())
            .collect();
        sizes.sort_unstable();
        assert!(sizes[sizes.len() * 9 / 10] >= 5 * sizes[sizes.len() / 4].max(1));

        // Popular questions: one fingerprint across unrelated accounts, and
        // across the chat and student populations.
        let mut owners: BTreeMap<i64, BTreeSet<(&str, &str)>> = BTreeMap::new();
        for r in &d.requests {
            owners
                .entry(r.fp)
                .or_default()
                .insert((r.account.as_str(), r.population.as_str()));
        }
        let widest = owners.values().map(BTreeSet::len).max().unwrap();
        assert!(
            widest >= 5,
            "most popular question asked by {widest} accounts"
        );
        assert!(owners.values().any(|o| {
            o.iter().any(|(_, p)| *p == "chat_user") && o.iter().any(|(_, p)| *p == "student")
        }));

        // Retries: the same prompt again within a minute, in one account.
        let retries = accounts
            .values()
            .filter(|rs| {
                rs.windows(2)
                    .any(|p| p[0].fp == p[1].fp && p[1].t - p[0].t < 60_000)
            })
            .count();
        assert!(retries > 10, "{retries} accounts retried");

        // Mostly diverse all the same.
        let distinct: BTreeSet<i64> = chat.iter().map(|r| r.fp).collect();
        assert!(distinct.len() as f64 > 0.85 * chat.len() as f64);
        let step = share(&chat, |r| r.cot > 0.5);
        assert!((0.01..0.2).contains(&step), "step-by-step share {step}");

        // Some adopt the new model after its release, gradually.
        let after: Vec<&R> = chat
            .iter()
            .copied()
            .filter(|r| r.t > START + 30 * HOUR_MS)
            .collect();
        let new = share(&after, |r| r.model == "atlas-4");
        assert!((0.02..0.4).contains(&new), "new-model share {new}");
        assert!(chat
            .iter()
            .all(|r| r.model != "atlas-4" || r.t >= START + 6 * HOUR_MS));
    }

    #[test]
    fn students_ask_step_by_step_in_the_evening() {
        let (_, d) = run(&[("student", "", 300)], 48, 4);
        let reqs: Vec<&R> = d.requests.iter().collect();
        assert!(share(&reqs, |r| r.cot > 0.5) > 0.4);
        assert!(
            share(&reqs, |r| matches!(
                r.topic.as_str(),
                "math" | "science" | "coding"
            )) > 0.8
        );
        let edu = d
            .accounts
            .values()
            .filter(|a| a.channel == "education")
            .count();
        assert!(edu as f64 > 0.4 * d.accounts.len() as f64);
        // Classmates paste the same problems.
        let mut owners: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
        for r in &reqs {
            owners.entry(r.fp).or_default().insert(r.account.as_str());
        }
        assert!(owners.values().filter(|o| o.len() >= 3).count() >= 10);
    }

    #[test]
    fn researchers_use_top_logprobs_five_and_temperature_zero() {
        let (_, d) = run(&[("researcher", "", 60)], 48, 6);
        let reqs: Vec<&R> = d.requests.iter().collect();
        let with: Vec<f64> = reqs
            .iter()
            .filter(|r| r.logprobs)
            .map(|r| r.top_logprobs as f64)
            .collect();
        assert!(with.len() > 100);
        assert_eq!(median(with), 5.0);
        assert!(share(&reqs, |r| r.temperature == Some(0.0)) > 0.3);
        assert!(share(&reqs, |r| r.max_tokens.is_some_and(|m| m <= 32)) > 0.1);
        let research = d
            .accounts
            .values()
            .filter(|a| a.channel == "research")
            .count();
        assert!(research as f64 > 0.5 * d.accounts.len() as f64);
    }

    #[test]
    fn app_backends_share_one_system_prompt_over_diverse_prompts() {
        let (_, d) = run(&[("app_backend", "", 10)], 12, 8);
        for rs in by_account(&d.requests).values().filter(|rs| rs.len() > 200) {
            let mut counts: BTreeMap<Option<i64>, usize> = BTreeMap::new();
            for r in rs {
                *counts.entry(r.system).or_default() += 1;
            }
            let top = *counts.values().max().unwrap() as f64 / rs.len() as f64;
            assert!(top > 0.5, "dominant system prompt share {top}");
            assert!(rs.iter().all(|r| r.system.is_some()));
            let distinct: BTreeSet<i64> = rs.iter().map(|r| r.fp).collect();
            assert!(distinct.len() as f64 > 0.7 * rs.len() as f64);
        }
    }

    #[test]
    fn enterprise_batch_is_regular_temperature_zero_and_all_different() {
        let (_, d) = run(&[("enterprise_batch", "", 2)], 48, 12);
        let accounts = by_account(&d.requests);
        assert_eq!(accounts.len(), 2);
        for (id, rs) in accounts {
            assert!(d.accounts[id].verified);
            assert!(rs.iter().all(|r| r.temperature == Some(0.0)));
            let distinct: BTreeSet<i64> = rs.iter().map(|r| r.fp).collect();
            assert!(distinct.len() as f64 > 0.98 * rs.len() as f64);
            // Within a run (gaps under a minute) spacing is machine-regular.
            let gaps: Vec<i64> = rs
                .windows(2)
                .map(|p| p[1].t - p[0].t)
                .filter(|g| *g < 60_000)
                .collect();
            let times: Vec<i64> = gaps
                .iter()
                .scan(0, |acc, g| {
                    *acc += g;
                    Some(*acc)
                })
                .collect();
            assert!(cv(&times) < 0.3, "batch spacing cv {}", cv(&times));
            // Nothing outside its nightly runs: at most a few hours a day.
            let hours: BTreeSet<i64> = rs.iter().map(|r| r.t / HOUR_MS).collect();
            assert!(hours.len() <= 2 * 6, "{} active hours", hours.len());
        }
    }

    #[test]
    fn enterprise_fleets_share_a_card_and_an_org_and_are_verified() {
        let (_, d) = run(&[("enterprise_fleet", "fleet_size = 50", 120)], 48, 13);
        let mut fleets: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (id, a) in &d.accounts {
            assert!(a.verified);
            let card = a.card.as_deref().expect("corporate card");
            fleets.entry(card).or_default().insert(id.as_str());
        }
        let sizes: Vec<usize> = fleets.values().map(BTreeSet::len).collect();
        assert_eq!(sizes, vec![40, 40, 40]);
        for members in fleets.values() {
            let orgs: BTreeSet<_> = members.iter().map(|m| d.accounts[*m].org.clone()).collect();
            assert_eq!(orgs.len(), 1);
        }
        // Office hours: little traffic in the local night of the office.
        let reqs: Vec<&R> = d.requests.iter().collect();
        assert!(reqs.len() > 1_000);
    }

    #[test]
    fn eval_harness_runs_once_with_logprobs_and_max_tokens_one() {
        let (_, d) = run(&[("eval_harness", "", 4)], 48, 14);
        for rs in by_account(&d.requests).values() {
            let span = rs.last().unwrap().t - rs[0].t;
            assert!(
                span < 12 * HOUR_MS,
                "harness active for {} h",
                span / HOUR_MS
            );
            assert!(rs.len() >= 100);
            assert!(rs.iter().all(|r| r.temperature == Some(0.0)));
            for r in rs.iter().filter(|r| r.logprobs) {
                assert_eq!(r.max_tokens, Some(1));
                assert_eq!(r.top_logprobs, 5);
            }
        }
    }

    #[test]
    fn launch_bursts_peak_several_times_their_base_and_hit_429s() {
        let params = "base_per_minute_median = 3.0\nboost_min = 30.0\nboost_max = 40.0";
        let (_, d) = run(&[("launch_burst", params, 2)], 48, 15);
        for rs in by_account(&d.requests).values() {
            let mut per10: BTreeMap<i64, usize> = BTreeMap::new();
            for r in rs {
                *per10.entry(r.t / (10 * MINUTE_MS)).or_default() += 1;
            }
            let counts: Vec<f64> = per10.values().map(|c| *c as f64).collect();
            let peak = counts.iter().cloned().fold(0.0, f64::max);
            assert!(peak > 4.0 * median(counts), "no burst");
            assert!(rs.iter().any(|r| r.status == "rate_limited"));
            let systems: BTreeSet<_> = rs.iter().map(|r| r.system).collect();
            assert!(systems.len() <= 4);
        }
    }

    #[test]
    fn aggregator_is_huge_diverse_and_around_the_clock() {
        let (_, d) = run(
            &[("aggregator", "requests_per_minute_median = 20.0", 1)],
            24,
            16,
        );
        let reqs: Vec<&R> = d.requests.iter().collect();
        assert!(reqs.len() > 15_000);
        let hours: BTreeSet<i64> = reqs.iter().map(|r| r.t / HOUR_MS).collect();
        assert_eq!(hours.len(), 24);
        let systems: BTreeSet<_> = reqs.iter().map(|r| r.system).collect();
        let agents: BTreeSet<_> = reqs.iter().map(|r| r.user_agent.as_str()).collect();
        let languages: BTreeSet<_> = reqs.iter().map(|r| r.language.as_str()).collect();
        let topics: BTreeSet<_> = reqs.iter().map(|r| r.topic.as_str()).collect();
        assert!(systems.len() > 100 && agents.len() >= 5 && languages.len() >= 5);
        assert_eq!(topics.len(), TOPICS.len());
        assert!(reqs.iter().any(|r| r.status == "rate_limited"));
        let prefixes: BTreeSet<_> = reqs
            .iter()
            .map(|r| r.ip.rsplit_once('.').unwrap().0)
            .collect();
        assert!(prefixes.len() >= 3);
    }

    #[test]
    fn ci_pipelines_rerun_the_same_suite() {
        let params = "scheduled_share = 1.0\nintervals_minutes = [30]";
        let (_, d) = run(&[("ci_pipeline", params, 3)], 12, 17);
        for rs in by_account(&d.requests).values() {
            let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
            for r in rs {
                *counts.entry(r.fp).or_default() += 1;
            }
            // 24 runs in 12 h; each test prompt repeats in nearly all of them.
            let repeated = rs.iter().filter(|r| counts[&r.fp] >= 10).count();
            assert!(repeated as f64 > 0.8 * rs.len() as f64);
            assert!(share(rs, |r| r.temperature == Some(0.0)) > 0.6);
            assert!(rs.iter().all(|r| r.max_tokens.is_some_and(|m| m <= 256)));
        }
    }

    #[test]
    fn shared_pools_depend_on_the_seed_only() {
        let mut a = dist::stream(1, "x");
        let mut b = dist::stream(1, "y");
        let mut pa = Pools::new(42);
        let mut pb = Pools::new(42);
        let xs: BTreeSet<i64> = (0..500)
            .map(|_| pa.draw(&mut a, PoolKind::Popular, "en").fp)
            .collect();
        let ys: BTreeSet<i64> = (0..500)
            .map(|_| pb.draw(&mut b, PoolKind::Popular, "en").fp)
            .collect();
        assert!(xs.intersection(&ys).count() > 20);
    }

    /// Per-population feature summary of the eval scenario (SIGNALS.md's
    /// feature families, medians over accounts). Run with
    /// `cargo test --release -p distill-watch-traffic benign_feature_summary -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn benign_feature_summary() {
        let scenario = crate::Scenario::builtin("eval").unwrap();
        let release = scenario.start_ms + 26 * HOUR_MS;
        let mut w = World::new(1, scenario.start_ms, scenario.duration_ms, 0.25)
            .with_release("atlas-4", release);
        for (i, p) in scenario.benign.iter().enumerate() {
            let n = w.scaled(p.accounts);
            p.kind
                .generate(&mut w, &format!("benign/{i}/{}", p.name), &p.name, n);
        }
        let traffic = w.finish(&Realism::off());
        let d = decode_all(&traffic);
        let mut owners: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
        for r in &d.requests {
            owners.entry(r.fp).or_default().insert(r.account.as_str());
        }
        let mut by_pop: BTreeMap<&str, Vec<Vec<&R>>> = BTreeMap::new();
        for rs in by_account(&d.requests).into_values() {
            by_pop
                .entry(rs[0].population.as_str())
                .or_default()
                .push(rs);
        }
        println!(
            "{:<17} {:>5} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}",
            "population",
            "accts",
            "req_md",
            "req_mx",
            "cv",
            "hours",
            "dup",
            "xacct",
            "sys1",
            "temp0",
            "lgprb",
            "mt<=1",
            "cot",
            "new"
        );
        let md = |xs: Vec<f64>| if xs.is_empty() { f64::NAN } else { median(xs) };
        for (pop, accounts) in &by_pop {
            let sizes: Vec<f64> = accounts.iter().map(|rs| rs.len() as f64).collect();
            let cvs: Vec<f64> = accounts
                .iter()
                .filter(|rs| rs.len() >= 10)
                .map(|rs| cv(&rs.iter().map(|r| r.t).collect::<Vec<_>>()))
                .collect();
            let hours: Vec<f64> = accounts
                .iter()
                .map(|rs| {
                    let h: BTreeSet<i64> = rs.iter().map(|r| r.t / HOUR_MS).collect();
                    h.len() as f64 / 2.0
                })
                .collect();
            let dup: Vec<f64> = accounts
                .iter()
                .map(|rs| {
                    let mut seen = BTreeSet::new();
                    share(rs, |r| !seen.insert(r.fp))
                })
                .collect();
            let xacct: Vec<f64> = accounts
                .iter()
                .map(|rs| share(rs, |r| owners[&r.fp].len() > 1))
                .collect();
            let sys1: Vec<f64> = accounts
                .iter()
                .map(|rs| {
                    let mut c: BTreeMap<Option<i64>, usize> = BTreeMap::new();
                    for r in rs {
                        *c.entry(r.system).or_default() += 1;
                    }
                    *c.values().max().unwrap() as f64 / rs.len() as f64
                })
                .collect();
            let per = |f: &dyn Fn(&R) -> bool| {
                md(accounts.iter().map(|rs| share(rs, |r| f(r))).collect())
            };
            let new: Vec<f64> = accounts
                .iter()
                .filter_map(|rs| {
                    let after: Vec<&R> = rs.iter().copied().filter(|r| r.t >= release).collect();
                    (!after.is_empty()).then(|| share(&after, |r| r.model == "atlas-4"))
                })
                .collect();
            let mut sorted = sizes.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            println!(
                "{:<17} {:>5} {:>6.0} {:>6.0} {:>5.2} {:>5.1} {:>5.3} {:>5.3} {:>5.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2}",
                pop,
                accounts.len(),
                md(sizes),
                sorted.last().unwrap(),
                md(cvs),
                md(hours),
                md(dup),
                md(xacct),
                md(sys1),
                per(&|r: &R| r.temperature == Some(0.0)),
                per(&|r: &R| r.logprobs),
                per(&|r: &R| r.max_tokens.is_some_and(|m| m <= 1)),
                per(&|r: &R| r.cot > 0.5),
                md(new),
            );
        }
        let limited = d
            .requests
            .iter()
            .filter(|r| r.status == "rate_limited")
            .count();
        println!("429s: {limited} of {}", d.requests.len());
    }
}
