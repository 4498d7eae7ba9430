//! Distillation campaigns, each grounded in what SIGNALS.md reports.
//!
//! The campaigns are deliberately *not* all extreme on every feature: the
//! hydra cluster is unremarkable per account and only stands out across
//! accounts, which is the point the public reports make.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::benign::{base_req, days_before};
use super::dist::{
    fingerprint, int, lognormal, pick, poisson_times, regular_times, uniform, weighted,
    zipf_weights, MINUTE_MS,
};
use super::geo::{cloud_prefix, ip_in, SCRIPT_AGENT, SCRIPT_AGENTS, SDK_AGENTS};
use super::model::{
    Account, Faults, Outcome, Req, World, EP_COMPLETIONS, MODEL_LARGE, MODEL_NEW, MODEL_SMALL,
};

pub const COT_HARVEST: &str = "cot-harvest";
pub const COT_HARVESTER: &str = "cot_harvester";
pub const LOGIT_EXTRACTION: &str = "logit-extraction";
pub const LOGIT_EXTRACTOR: &str = "logit_extractor";
pub const HYDRA: &str = "hydra";
pub const HYDRA_MEMBER: &str = "hydra_member";

const TEN_MIN_MS: f64 = 10.0 * MINUTE_MS as f64;

/// A prompt template of a campaign: masked text hash, what it is about, and
/// how long its filled-in prompts are.
#[derive(Clone, Copy)]
struct Template {
    fingerprint: i64,
    topic: &'static str,
    tokens: i64,
}

fn templates(
    rng: &mut StdRng,
    n: usize,
    topics: &[&'static str],
    tokens: (i64, i64),
) -> Vec<Template> {
    (0..n)
        .map(|i| Template {
            fingerprint: fingerprint(rng),
            topic: topics[i % topics.len()],
            tokens: int(rng, tokens.0, tokens.1),
        })
        .collect()
}

/// Reasoning-trace harvesting, around the clock: machine-regular request
/// spacing, a handful of templates per account with entity slots, questions
/// re-asked, chain-of-thought elicitation on most prompts, long outputs.
/// Halfway through, about half of the traffic pivots to the new model.
pub fn cot_harvest(w: &mut World) {
    let mut rng = w.rng(COT_HARVEST);
    // The campaign's accounts draw from one template pool, so their template
    // sets overlap (a cross-account cluster key), without being identical.
    let pool = templates(&mut rng, 24, &["math", "coding", "reasoning"], (120, 400));
    // A few proxy exits shared by the campaign's accounts.
    let prefixes: Vec<[u8; 3]> = (0..3).map(|_| cloud_prefix(&mut rng)).collect();
    let midpoint = w.start + w.duration() / 2;
    for _ in 0..w.scaled(15.0) {
        let account_id = w.new_id("acct_", 16);
        let key = w.new_id("key_", 12);
        let country = *pick(&mut rng, &["US", "SG", "GB", "CA"]);
        let account = Account {
            account_id: account_id.clone(),
            org_id: None,
            created_at: days_before(&mut rng, w.start, 1.0, 10.0),
            tier: "build",
            country: Some(country),
            billing_country: Some(if rng.random_bool(0.6) {
                country
            } else {
                *pick(&mut rng, &["HK", "MY", "SG"])
            }),
            payment_fingerprint: Some(w.new_id("pm_", 20)),
            signup_channel: if rng.random_bool(0.5) {
                "research"
            } else {
                "startup"
            },
            verified: false,
        };
        w.add_account(account, COT_HARVESTER, Some(COT_HARVEST));

        let mut own = pool.clone();
        own.shuffle(&mut rng);
        own.truncate(10);
        let weights = zipf_weights(own.len(), uniform(&mut rng, 0.8, 1.3));
        let per_10min = uniform(&mut rng, 200.0, 400.0);
        let cv = uniform(&mut rng, 0.2, 0.4);
        let pivot_share = uniform(&mut rng, 0.35, 0.65);
        let temp_zero = uniform(&mut rng, 0.4, 0.8);
        let duplicate = uniform(&mut rng, 0.10, 0.20);
        let max_tokens = *pick(&mut rng, &[8192, 16000, 32000]);
        let prefix = *pick(&mut rng, &prefixes);
        let ips: Vec<String> = (0..2).map(|_| ip_in(&mut rng, prefix)).collect();
        let faults = Faults {
            rate_limited: uniform(&mut rng, 0.01, 0.04),
            error: 0.004,
            refused: 0.01,
        };
        let mut asked: Vec<i64> = Vec::new();

        let times = regular_times(&mut rng, w.start, w.end, TEN_MIN_MS / per_10min, cv);
        for t in times {
            let tpl = own[weighted(&mut rng, &weights)];
            let prompt_fp = if !asked.is_empty() && rng.random_bool(duplicate) {
                *pick(&mut rng, &asked)
            } else {
                let fp = fingerprint(&mut rng);
                asked.push(fp);
                fp
            };
            let model = if t >= midpoint && rng.random_bool(pivot_share) {
                MODEL_NEW
            } else {
                MODEL_LARGE
            };
            let temperature = if rng.random_bool(temp_zero) { 0.0 } else { 1.0 };
            let reasoning = rng.random_bool(0.85);
            let mut req = base_req(&account_id, &key, t, model);
            req.client_ip = Some(pick(&mut rng, &ips).clone());
            req.user_agent = Some(SCRIPT_AGENT);
            req.prompt_tokens = tpl.tokens + int(&mut rng, 0, 150);
            req.prompt_fingerprint = Some(prompt_fp);
            req.template_fingerprint = Some(tpl.fingerprint);
            // Sampling several answers at temperature 1 gets more traces per call.
            req.n = if temperature > 0.0 && rng.random_bool(0.25) {
                *pick(&mut rng, &[2, 4])
            } else {
                1
            };
            req.temperature = Some(temperature);
            req.max_tokens = Some(max_tokens);
            req.reasoning_requested = reasoning;
            req.reasoning_effort = reasoning.then(|| {
                if rng.random_bool(0.8) {
                    "high"
                } else {
                    "medium"
                }
            });
            req.cot_elicitation_score = Some(if rng.random_bool(0.8) {
                uniform(&mut rng, 0.75, 1.0)
            } else {
                uniform(&mut rng, 0.2, 0.6)
            });
            req.topic = Some(tpl.topic);
            req.prompt_language = Some(if rng.random_bool(0.95) { "en" } else { "zh" });
            let out = Outcome {
                completion: (req.prompt_tokens as f64 * uniform(&mut rng, 5.0, 15.0)) as i64,
                reasoning: if reasoning {
                    (lognormal(&mut rng, 2_500.0, 0.5) as i64).min(12_000)
                } else {
                    0
                },
                cached: 0,
                tool_use: false,
            };
            w.push(&mut rng, req, out, faults);
        }
    }
}

/// Logit-level extraction (Carlini et al. 2024): the same few prompts asked
/// over and over with different logit_bias maps, max_tokens = 1 and the
/// maximum top_logprobs, fast, against the small model, near the rate limit.
pub fn logit_extraction(w: &mut World) {
    let mut rng = w.rng(LOGIT_EXTRACTION);
    for _ in 0..w.scaled(3.0) {
        let account_id = w.new_id("acct_", 16);
        let key = w.new_id("key_", 12);
        let country = *pick(&mut rng, &["US", "DE", "GB"]);
        let account = Account {
            account_id: account_id.clone(),
            org_id: None,
            created_at: days_before(&mut rng, w.start, 1.0, 6.0),
            tier: "build",
            country: Some(country),
            billing_country: Some(country),
            payment_fingerprint: Some(w.new_id("pm_", 20)),
            signup_channel: "web",
            verified: false,
        };
        w.add_account(account, LOGIT_EXTRACTOR, Some(LOGIT_EXTRACTION));

        let per_10min = uniform(&mut rng, 400.0, 800.0);
        let cv = uniform(&mut rng, 0.3, 0.5);
        let formats: Vec<i64> = (0..int(&mut rng, 2, 3))
            .map(|_| fingerprint(&mut rng))
            .collect();
        let prompts: Vec<(i64, i64, i64)> = (0..int(&mut rng, 12, 25))
            .map(|_| {
                (
                    fingerprint(&mut rng),
                    *pick(&mut rng, &formats),
                    int(&mut rng, 8, 60),
                )
            })
            .collect();
        let weights = zipf_weights(prompts.len(), 0.6);
        let user_agent = *pick(&mut rng, SCRIPT_AGENTS);
        let prefix = cloud_prefix(&mut rng);
        let ip = ip_in(&mut rng, prefix);
        let faults = Faults {
            rate_limited: uniform(&mut rng, 0.04, 0.08),
            error: 0.003,
            refused: 0.0,
        };
        let times = regular_times(&mut rng, w.start, w.end, TEN_MIN_MS / per_10min, cv);
        for t in times {
            let (prompt_fp, template_fp, tokens) = prompts[weighted(&mut rng, &weights)];
            let mut req = base_req(&account_id, &key, t, MODEL_SMALL);
            req.endpoint = EP_COMPLETIONS;
            req.client_ip = Some(ip.clone());
            req.user_agent = Some(user_agent);
            req.prompt_tokens = tokens;
            req.prompt_fingerprint = Some(prompt_fp);
            req.template_fingerprint = Some(template_fp);
            req.temperature = Some(0.0);
            req.max_tokens = Some(1);
            req.logprobs = true;
            req.top_logprobs = 20;
            req.logit_bias_size = int(&mut rng, 50, 300);
            req.cot_elicitation_score = Some(uniform(&mut rng, 0.0, 0.05));
            // Probe prompts are token soup: the topic classifier gives up.
            req.topic = None;
            req.prompt_language = rng.random_bool(0.3).then_some("en");
            let out = Outcome {
                completion: 1,
                ..Outcome::default()
            };
            w.push(&mut rng, req, out, faults);
        }
    }
}

/// One hydra slot: a member account, and possibly the account that replaced
/// it when it stopped (banned, or its credit ran out) part-way through.
struct Slot {
    first: Member,
    replacement: Option<(i64, Member)>,
}

struct Member {
    account_id: String,
    key: String,
    user_agent: &'static str,
    prefix: [u8; 3],
}

impl Slot {
    fn member_at(&self, t: i64) -> &Member {
        match &self.replacement {
            Some((from, m)) if t >= *from => m,
            _ => &self.first,
        }
    }
}

/// A "hydra cluster": ~200 low-volume accounts behind one load balancer,
/// sharing one payment instrument and a few orgs, created together, firing
/// round-robin on one schedule over a shared template set, with ordinary
/// resold customer traffic mixed in. Per account it looks small; together it
/// is one harvesting operation.
pub fn hydra(w: &mut World) {
    let mut rng = w.rng(HYDRA);
    let slots_n = w.scaled(192.0);
    let replaced_n = ((slots_n as f64 * 0.04).round() as usize)
        .max(1)
        .min(slots_n);
    let payment_fp = w.new_id("pm_", 20);
    let orgs: Vec<String> = (0..int(&mut rng, 3, 4))
        .map(|_| w.new_id("org_", 12))
        .collect();
    let prefixes: Vec<[u8; 3]> = (0..4).map(|_| cloud_prefix(&mut rng)).collect();
    let created_base = days_before(&mut rng, w.start, 4.0, 8.0);
    let tpls = templates(
        &mut rng,
        4,
        &["reasoning", "math", "coding", "math"],
        (100, 450),
    );
    let tpl_weights = [0.4, 0.3, 0.2, 0.1];
    let languages = [
        ("zh", 0.35),
        ("en", 0.30),
        ("ru", 0.15),
        ("ko", 0.10),
        ("ja", 0.05),
        ("fa", 0.05),
    ];
    let lang_weights: Vec<f64> = languages.iter().map(|(_, x)| *x).collect();
    let declared = ["US", "GB", "DE", "CA", "SG", "JP", "KR", "AU", "HK"];

    let new_member = |w: &mut World, rng: &mut StdRng, i: usize| -> Member {
        let account_id = w.new_id("acct_", 16);
        let country = if rng.random_bool(0.25) {
            "HK"
        } else {
            *pick(rng, &declared)
        };
        let account = Account {
            account_id: account_id.clone(),
            org_id: Some(orgs[i % orgs.len()].clone()),
            created_at: created_base + int(rng, 0, 2 * 24 * 60) * MINUTE_MS,
            tier: if rng.random_bool(0.4) {
                "free"
            } else {
                "build"
            },
            country: Some(country),
            // One payment instrument, hence one billing country, for all.
            billing_country: Some("HK"),
            payment_fingerprint: Some(payment_fp.clone()),
            signup_channel: if rng.random_bool(0.5) {
                "education"
            } else {
                "startup"
            },
            verified: false,
        };
        w.add_account(account, HYDRA_MEMBER, Some(HYDRA));
        Member {
            account_id,
            key: w.new_id("key_", 12),
            user_agent: if rng.random_bool(0.8) {
                SCRIPT_AGENT
            } else {
                pick::<&str>(rng, SDK_AGENTS)
            },
            prefix: prefixes[i % prefixes.len()],
        }
    };

    let mut which: Vec<usize> = (0..slots_n).collect();
    which.shuffle(&mut rng);
    which.truncate(replaced_n);
    let mut slots = Vec::with_capacity(slots_n);
    for i in 0..slots_n {
        let first = new_member(w, &mut rng, i);
        slots.push(Slot {
            first,
            replacement: None,
        });
    }
    // Some members stop around mid-range (banned, or out of credit).
    // Replacements are registered like the rest (same days, same payment) and
    // take over the moment the original goes quiet.
    for &i in &which {
        let from = w.start + (w.duration() as f64 * uniform(&mut rng, 0.4, 0.55)) as i64;
        let m = new_member(w, &mut rng, i);
        slots[i].replacement = Some((from, m));
    }

    let per_member_10min = uniform(&mut rng, 20.0, 30.0);
    let gap = TEN_MIN_MS / (per_member_10min * slots_n as f64);
    let schedule = regular_times(&mut rng, w.start, w.end, gap, 0.15);
    let ordinary_rate = 0.15 / 0.85 / gap;
    let ordinary = poisson_times(&mut rng, w.start, w.end, ordinary_rate, |_| ordinary_rate);

    let mut asked: Vec<i64> = Vec::new();
    for (k, t) in schedule.into_iter().enumerate() {
        let m = slots[k % slots_n].member_at(t);
        let tpl = tpls[weighted(&mut rng, &tpl_weights)];
        // The same question occasionally goes out through two accounts.
        let prompt_fp = if !asked.is_empty() && rng.random_bool(0.05) {
            *pick(&mut rng, &asked)
        } else {
            let fp = fingerprint(&mut rng);
            asked.push(fp);
            fp
        };
        let reasoning = rng.random_bool(0.7);
        let high_cot = rng.random_bool(0.88);
        let mut req = member_req(&mut rng, m, t);
        req.prompt_tokens = tpl.tokens + int(&mut rng, 0, 200);
        req.prompt_fingerprint = Some(prompt_fp);
        req.template_fingerprint = Some(tpl.fingerprint);
        req.temperature = Some(0.0);
        req.max_tokens = Some(16_000);
        req.reasoning_requested = reasoning;
        req.reasoning_effort = reasoning.then_some("high");
        req.cot_elicitation_score = Some(if high_cot {
            uniform(&mut rng, 0.7, 1.0)
        } else {
            uniform(&mut rng, 0.3, 0.6)
        });
        req.topic = Some(tpl.topic);
        req.prompt_language = Some(languages[weighted(&mut rng, &lang_weights)].0);
        let out = Outcome {
            completion: (lognormal(&mut rng, 2_000.0, 0.4) as i64).max(100),
            reasoning: if reasoning {
                lognormal(&mut rng, 1_500.0, 0.5) as i64
            } else {
                0
            },
            cached: 0,
            tool_use: false,
        };
        let faults = Faults {
            rate_limited: 0.0,
            error: 0.004,
            refused: if high_cot { 0.02 } else { 0.0 },
        };
        w.push(&mut rng, req, out, faults);
    }

    // Resold ordinary customer traffic through the same accounts.
    for t in ordinary {
        let slot = &slots[int(&mut rng, 0, slots_n as i64 - 1) as usize];
        let m = slot.member_at(t);
        let mut req = member_req(&mut rng, m, t);
        let turns = if rng.random_bool(0.8) {
            1
        } else {
            int(&mut rng, 2, 3)
        };
        req.conversation_turns = turns;
        req.model = *pick(&mut rng, &[MODEL_SMALL, MODEL_LARGE]);
        req.prompt_tokens = turns * (lognormal(&mut rng, 150.0, 0.9) as i64).clamp(5, 4_000);
        req.prompt_fingerprint = Some(fingerprint(&mut rng));
        req.template_fingerprint = Some(fingerprint(&mut rng));
        req.temperature = if rng.random_bool(0.5) {
            None
        } else {
            Some(0.7)
        };
        req.max_tokens = Some(4096);
        req.cot_elicitation_score = Some(uniform(&mut rng, 0.0, 0.3));
        req.topic = Some(*pick(&mut rng, &["chat", "writing", "coding", "other"]));
        req.prompt_language = Some(languages[weighted(&mut rng, &lang_weights)].0);
        let out = Outcome {
            completion: (lognormal(&mut rng, 300.0, 0.8) as i64).max(5),
            ..Outcome::default()
        };
        w.push(&mut rng, req, out, Faults::NORMAL);
    }
}

fn member_req(rng: &mut StdRng, m: &Member, t: i64) -> Req {
    let mut req = base_req(&m.account_id, &m.key, t, MODEL_LARGE);
    req.client_ip = Some(ip_in(rng, m.prefix));
    req.user_agent = Some(m.user_agent);
    req
}
