//! Benign populations: the false-positive traps of SIGNALS.md.
//!
//! Each trap shares some surface features with distillation (volume, regular
//! timing, temperature 0, logprobs, a shared system prompt, bursts, 429s) and
//! differs in the ones that matter (diverse prompts, no reasoning harvesting,
//! old verified identities, one-off activity), so a detector that keys on a
//! single feature will trip on them.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::dist::{
    diurnal, fingerprint, geometric, int, local_hour, lognormal, normal, pick, poisson_times,
    regular_times, uniform, weighted, DAY_MS, HOUR_MS, MINUTE_MS,
};
use super::geo::{self, cloud_prefix, ip_in, pick_country, HUMAN_AGENTS, SDK_AGENTS};
use super::model::{
    Account, Faults, Outcome, Req, World, EP_COMPLETIONS, EP_MESSAGES, MODEL_LARGE, MODEL_NEW,
    MODEL_SMALL,
};

pub const CHAT_USER: &str = "chat_user";
pub const APP_BACKEND: &str = "app_backend";
pub const ENTERPRISE_BATCH: &str = "enterprise_batch";
pub const EVAL_HARNESS: &str = "eval_harness";
pub const LAUNCH_BURST: &str = "launch_burst";

const TEN_MIN_MS: f64 = 10.0 * MINUTE_MS as f64;

/// A request with the fields every population sets, the rest at schema
/// defaults (single turn, n = 1, nothing optional).
pub fn base_req(account_id: &str, api_key: &str, t: i64, model: &'static str) -> Req {
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

/// Days before `start`, with a random time of day, for `created_at`.
pub fn days_before(rng: &mut StdRng, start: i64, lo_days: f64, hi_days: f64) -> i64 {
    start - (uniform(rng, lo_days, hi_days) * DAY_MS as f64) as i64
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A payment instrument fingerprint as the billing system would expose it.
fn payment(w: &mut World) -> String {
    w.new_id("pm_", 20)
}

const TOPICS: [&str; 5] = ["chat", "writing", "coding", "math", "other"];

/// Interactive humans: sessions of multi-turn conversations separated by long
/// gaps, modulated by local time of day. Heavy-tailed inter-arrivals (CV well
/// above 1), diverse prompts, a little "explain step by step" homework.
pub fn chat_users(w: &mut World) {
    let mut rng = w.rng(CHAT_USER);
    // Phrasings many people use ("translate this into ...", "fix this code"):
    // the same template across unrelated accounts, a template-set trap.
    let common_templates: Vec<i64> = (0..30).map(|_| fingerprint(&mut rng)).collect();
    for _ in 0..w.scaled(400.0) {
        let c = pick_country(&mut rng);
        let tz = c.utc_offset(&mut rng);
        let account_id = w.new_id("acct_", 16);
        let key = w.new_id("key_", 12);
        let tier = if rng.random_bool(0.7) {
            "free"
        } else {
            "build"
        };
        let pays = tier == "build" || rng.random_bool(0.3);
        let billing = if !pays {
            None
        } else if rng.random_bool(0.96) {
            Some(c.code)
        } else {
            // Expats and travellers: a card from somewhere else.
            Some(pick_country(&mut rng).code)
        };
        let account = Account {
            account_id: account_id.clone(),
            org_id: rng.random_bool(0.05).then(|| w.new_id("org_", 12)),
            created_at: days_before(&mut rng, w.start, 60.0, 4.0 * 365.0),
            tier,
            country: Some(c.code),
            billing_country: billing,
            payment_fingerprint: if pays { Some(payment(w)) } else { None },
            signup_channel: "web",
            verified: false,
        };
        w.add_account(account, CHAT_USER, None);

        // Habits of this person and their client.
        let sessions_per_hour = lognormal(&mut rng, 1.2, 0.8);
        let temperature = if rng.random_bool(0.7) {
            None
        } else {
            Some(round1(uniform(&mut rng, 0.7, 1.0)))
        };
        let max_tokens = if rng.random_bool(0.6) {
            None
        } else {
            Some(*pick(&mut rng, &[2048, 4096, 8192]))
        };
        let model_weights = [0.55, 0.4, 0.05];
        let models = [MODEL_SMALL, MODEL_LARGE, MODEL_NEW];
        let topic_weights: Vec<f64> = (0..TOPICS.len())
            .map(|_| uniform(&mut rng, 0.1, 1.0).powi(2))
            .collect();
        let user_agent = *pick(&mut rng, HUMAN_AGENTS);
        let system_prompt = rng
            .random_bool(0.3)
            .then(|| (fingerprint(&mut rng), int(&mut rng, 30, 400)));
        let mut ip = c.residential_ip(&mut rng);

        // Sessions may have started before the range; their in-range tail is kept.
        let max_rate = sessions_per_hour / HOUR_MS as f64;
        let starts = poisson_times(&mut rng, w.start - 45 * MINUTE_MS, w.end, max_rate, |t| {
            max_rate * diurnal(local_hour(t, tz))
        });
        for session_start in starts {
            if rng.random_bool(0.1) {
                ip = c.residential_ip(&mut rng);
            }
            let mut t = session_start;
            let conversations = geometric(&mut rng, 2.2).min(8);
            for _ in 0..conversations {
                let turns = geometric(&mut rng, 3.5).min(15);
                let template = rng
                    .random_bool(0.08)
                    .then(|| *pick(&mut rng, &common_templates));
                let topic = TOPICS[weighted(&mut rng, &topic_weights)];
                let model = models[weighted(&mut rng, &model_weights)];
                let language = c.language(&mut rng);
                let endpoint = if rng.random_bool(0.05) {
                    EP_COMPLETIONS
                } else {
                    EP_MESSAGES
                };
                let mut context = 0;
                for turn in 1..=turns {
                    let user_msg = (lognormal(&mut rng, 60.0, 1.0) as i64).clamp(3, 4_000);
                    let sys_tokens = system_prompt.map_or(0, |(_, n)| n);
                    let homework = rng.random_bool(0.1);
                    let cot = if homework {
                        uniform(&mut rng, 0.5, 0.8)
                    } else {
                        uniform(&mut rng, 0.0, 0.3)
                    };
                    let reasoning = (topic == "math" || topic == "coding") && rng.random_bool(0.15);
                    let logprobs = rng.random_bool(0.01);
                    let mut req = base_req(&account_id, &key, t, model);
                    req.endpoint = endpoint;
                    req.client_ip = Some(ip.clone());
                    req.user_agent = Some(user_agent);
                    req.prompt_tokens = sys_tokens + context + user_msg;
                    req.prompt_fingerprint = Some(fingerprint(&mut rng));
                    req.template_fingerprint =
                        Some(template.unwrap_or_else(|| fingerprint(&mut rng)));
                    req.system_prompt_hash = system_prompt.map(|(h, _)| h);
                    req.conversation_turns = turn;
                    req.temperature = temperature;
                    req.max_tokens = max_tokens;
                    req.logprobs = logprobs;
                    req.top_logprobs = if logprobs { 5 } else { 0 };
                    req.reasoning_requested = reasoning;
                    req.reasoning_effort = reasoning.then(|| *pick(&mut rng, &["low", "medium"]));
                    req.cot_elicitation_score = Some(cot);
                    req.topic = Some(topic);
                    req.prompt_language = Some(language);
                    let completion = (lognormal(&mut rng, 350.0, 0.8) as i64).clamp(5, 6_000);
                    let out = Outcome {
                        completion,
                        reasoning: if reasoning {
                            lognormal(&mut rng, 800.0, 0.7) as i64
                        } else {
                            0
                        },
                        // The prompt cache serves earlier turns of the conversation.
                        cached: if turn > 1 {
                            (context as f64 * 0.9) as i64
                        } else {
                            0
                        },
                        tool_use: false,
                    };
                    let faults = Faults {
                        rate_limited: 0.0,
                        error: 0.003,
                        refused: 0.004,
                    };
                    // Regenerate / retry: the very same prompt again a few seconds later.
                    let retry = rng.random_bool(0.03).then(|| {
                        let mut again = req.clone();
                        again.event_time = t + int(&mut rng, 2_000, 25_000);
                        again
                    });
                    w.push(&mut rng, req, out, faults);
                    if let Some(again) = retry {
                        w.push(&mut rng, again, out, faults);
                    }
                    context += user_msg + completion;
                    // Read the answer, think, type the next message.
                    let think = lognormal(&mut rng, 40_000.0, 0.9).clamp(3_000.0, 15.0 * 60_000.0);
                    t += (think + completion as f64 * 8.0) as i64;
                }
                t += lognormal(&mut rng, 180_000.0, 1.0).clamp(20_000.0, 40.0 * 60_000.0) as i64;
            }
        }
    }
}

/// SaaS backends calling the API for their own users: steady Poisson traffic
/// with a mild diurnal shape, one system prompt (and tool set) per app, user
/// prompts all different, half of them in multi-turn conversations.
pub fn app_backends(w: &mut World) {
    let mut rng = w.rng(APP_BACKEND);
    let n = w.scaled(10.0);
    let busiest = int(&mut rng, 0, n as i64 - 1) as usize;
    for app in 0..n {
        let market = pick_country(&mut rng);
        let tz = market.utc_offset(&mut rng);
        let account_id = w.new_id("acct_", 16);
        let key = w.new_id("key_", 12);
        let account = Account {
            account_id: account_id.clone(),
            org_id: Some(w.new_id("org_", 12)),
            created_at: days_before(&mut rng, w.start, 200.0, 1_500.0),
            tier: "scale",
            country: Some(market.code),
            billing_country: Some(market.code),
            payment_fingerprint: Some(payment(w)),
            signup_channel: if rng.random_bool(0.5) {
                "web"
            } else {
                "startup"
            },
            verified: rng.random_bool(0.5),
        };
        w.add_account(account, APP_BACKEND, None);

        let per_10min = if app == busiest {
            uniform(&mut rng, 420.0, 480.0)
        } else {
            uniform(&mut rng, 180.0, 420.0)
        };
        let max_rate = per_10min / TEN_MIN_MS;
        let system_prompt = fingerprint(&mut rng);
        let sys_tokens = int(&mut rng, 300, 2_500);
        let tools = rng
            .random_bool(0.4)
            .then(|| (int(&mut rng, 3, 12), fingerprint(&mut rng)));
        let temperature = *pick(
            &mut rng,
            &[Some(0.0), Some(0.0), Some(0.3), Some(0.7), Some(1.0), None],
        );
        let max_tokens = *pick(&mut rng, &[1024, 2048, 4096]);
        let model = *pick(&mut rng, &[MODEL_SMALL, MODEL_LARGE, MODEL_SMALL]);
        let main_topic = *pick(&mut rng, &["writing", "coding", "chat", "other"]);
        // A few product flows ("summarise this email: ...") are templated.
        let flows: Vec<i64> = (0..5).map(|_| fingerprint(&mut rng)).collect();
        let prefix = cloud_prefix(&mut rng);
        let ips: Vec<String> = (0..4).map(|_| ip_in(&mut rng, prefix)).collect();
        let user_agent = *pick(&mut rng, SDK_AGENTS);
        let faults = Faults {
            rate_limited: if app == busiest { 0.01 } else { 0.002 },
            error: 0.003,
            refused: 0.001,
        };

        let times = poisson_times(&mut rng, w.start, w.end, max_rate, |t| {
            max_rate * (0.5 + 0.5 * diurnal(local_hour(t, tz)))
        });
        for t in times {
            let turns = if rng.random_bool(0.5) {
                1
            } else {
                1 + geometric(&mut rng, 2.5).min(20)
            };
            let user_msg = (lognormal(&mut rng, 80.0, 1.0) as i64).clamp(3, 6_000);
            let history = (1..turns)
                .map(|_| (lognormal(&mut rng, 350.0, 0.6) as i64).min(3_000))
                .sum::<i64>();
            let mut req = base_req(&account_id, &key, t, model);
            req.client_ip = Some(pick(&mut rng, &ips).clone());
            req.user_agent = Some(user_agent);
            req.prompt_tokens = sys_tokens + history + user_msg;
            req.prompt_fingerprint = Some(fingerprint(&mut rng));
            req.template_fingerprint = Some(if rng.random_bool(0.15) {
                *pick(&mut rng, &flows)
            } else {
                fingerprint(&mut rng)
            });
            req.system_prompt_hash = Some(system_prompt);
            req.conversation_turns = turns;
            req.temperature = temperature;
            req.max_tokens = Some(max_tokens);
            if let Some((count, hash)) = tools {
                req.tool_count = count;
                req.tools_hash = Some(hash);
            }
            req.cot_elicitation_score = Some(if rng.random_bool(0.03) {
                uniform(&mut rng, 0.5, 0.7)
            } else {
                uniform(&mut rng, 0.0, 0.3)
            });
            req.topic = Some(if rng.random_bool(0.7) {
                main_topic
            } else {
                *pick(&mut rng, &TOPICS)
            });
            req.prompt_language = Some(market.language(&mut rng));
            let out = Outcome {
                completion: (lognormal(&mut rng, 280.0, 0.7) as i64).max(5),
                reasoning: 0,
                cached: if rng.random_bool(0.85) { sys_tokens } else { 0 },
                tool_use: tools.is_some() && rng.random_bool(0.3),
            };
            w.push(&mut rng, req, out, faults);
        }
    }
}

/// A verified enterprise's scheduled document-processing job: high volume at
/// very regular spacing and temperature 0 (like a harvester), but every
/// document different, long inputs and short outputs (unlike one).
pub fn enterprise_batch(w: &mut World) {
    let mut rng = w.rng(ENTERPRISE_BATCH);
    let account_id = w.new_id("acct_", 16);
    let key = w.new_id("key_", 12);
    let account = Account {
        account_id: account_id.clone(),
        org_id: Some(w.new_id("org_", 12)),
        created_at: days_before(&mut rng, w.start, 700.0, 1_400.0),
        tier: "enterprise",
        country: Some("US"),
        billing_country: Some("US"),
        // Invoiced: no card on file.
        payment_fingerprint: None,
        signup_channel: "enterprise_sales",
        verified: true,
    };
    w.add_account(account, ENTERPRISE_BATCH, None);

    // The job runs about an hour at full scale; smaller scales run it shorter
    // rather than slower, so its rate and regularity stay what they are.
    let len = ((HOUR_MS as f64 * w.scale) as i64)
        .max(10 * MINUTE_MS)
        .min(w.duration());
    let earliest = w.start + (w.duration() as f64 * uniform(&mut rng, 0.15, 0.35)) as i64;
    let job_start = earliest.min(w.end - len).max(w.start);
    let gap = TEN_MIN_MS / 2_000.0;
    let times = regular_times(&mut rng, job_start, job_start + len, gap, 0.08);

    let system_prompt = fingerprint(&mut rng);
    let sys_tokens = 650;
    let prefix = cloud_prefix(&mut rng);
    let ips: Vec<String> = (0..2).map(|_| ip_in(&mut rng, prefix)).collect();
    for t in times {
        let mut req = base_req(&account_id, &key, t, MODEL_SMALL);
        req.client_ip = Some(pick(&mut rng, &ips).clone());
        req.user_agent = Some("atlas-sdk-python/0.9.1");
        req.prompt_tokens = int(&mut rng, 2_000, 8_000);
        req.prompt_fingerprint = Some(fingerprint(&mut rng));
        req.template_fingerprint = Some(fingerprint(&mut rng));
        req.system_prompt_hash = Some(system_prompt);
        req.temperature = Some(0.0);
        req.max_tokens = Some(512);
        req.cot_elicitation_score = Some(uniform(&mut rng, 0.0, 0.1));
        req.topic = Some(if rng.random_bool(0.7) {
            "writing"
        } else {
            "other"
        });
        req.prompt_language = Some(if rng.random_bool(0.9) { "en" } else { "de" });
        let out = Outcome {
            completion: int(&mut rng, 50, 300),
            reasoning: 0,
            cached: sys_tokens,
            tool_use: false,
        };
        w.push(&mut rng, req, out, Faults::NORMAL);
    }
}

/// A researcher running a benchmark once: ~500 requests in ~8 minutes, half
/// multiple-choice scored with logprobs and max_tokens = 1 (like logit
/// extraction, but distinct questions and no logit_bias), half generative with
/// "let's think step by step" (like reasoning harvesting, but once, and
/// moderate scores). It evaluates the newest model, as researchers do.
pub fn eval_harness(w: &mut World) {
    let mut rng = w.rng(EVAL_HARNESS);
    let account_id = w.new_id("acct_", 16);
    let key = w.new_id("key_", 12);
    let c = geo::country(pick::<&str>(&mut rng, &["GB", "US", "DE"]));
    let account = Account {
        account_id: account_id.clone(),
        org_id: None,
        created_at: days_before(&mut rng, w.start, 365.0, 3.0 * 365.0),
        tier: "build",
        country: Some(c.code),
        billing_country: Some(c.code),
        payment_fingerprint: Some(payment(w)),
        signup_channel: "research",
        verified: false,
    };
    w.add_account(account, EVAL_HARNESS, None);

    let run_len = (8 * MINUTE_MS).min(w.duration());
    let run_start =
        w.start + ((w.duration() - run_len) as f64 * uniform(&mut rng, 0.2, 0.7)) as i64;
    // The harness submits a fixed question set with a few workers: jittered
    // gaps, stretched so that exactly the whole set fits the run.
    let count = 500;
    let gaps: Vec<f64> = (0..count)
        .map(|_| (1.0 + 0.5 * normal(&mut rng)).max(0.05))
        .collect();
    let total: f64 = gaps.iter().sum();
    let times: Vec<i64> = gaps
        .iter()
        .scan(0.0, |acc, g| {
            let t = *acc;
            *acc += g;
            Some(run_start + (t / total * run_len as f64) as i64)
        })
        .collect();
    let formats: Vec<i64> = (0..3).map(|_| fingerprint(&mut rng)).collect();
    let mut kinds: Vec<bool> = (0..times.len()).map(|i| i % 2 == 0).collect();
    kinds.shuffle(&mut rng);
    let ip = c.residential_ip(&mut rng);
    for (t, multiple_choice) in times.into_iter().zip(kinds) {
        let mut req = base_req(&account_id, &key, t, MODEL_NEW);
        req.client_ip = Some(ip.clone());
        req.user_agent = Some("atlas-sdk-python/0.9.1");
        req.prompt_fingerprint = Some(fingerprint(&mut rng));
        req.temperature = Some(0.0);
        req.topic = Some(if rng.random_bool(0.5) {
            "math"
        } else {
            "reasoning"
        });
        req.prompt_language = Some("en");
        let completion = if multiple_choice {
            req.endpoint = EP_COMPLETIONS;
            req.template_fingerprint = Some(formats[int(&mut rng, 0, 1) as usize]);
            req.prompt_tokens = int(&mut rng, 200, 900);
            req.max_tokens = Some(1);
            req.logprobs = true;
            req.top_logprobs = 5;
            req.cot_elicitation_score = Some(uniform(&mut rng, 0.0, 0.15));
            1
        } else {
            req.template_fingerprint = Some(formats[2]);
            req.prompt_tokens = int(&mut rng, 80, 400);
            req.max_tokens = Some(1024);
            req.cot_elicitation_score = Some(uniform(&mut rng, 0.5, 0.7));
            (lognormal(&mut rng, 350.0, 0.5) as i64).max(20)
        };
        let out = Outcome {
            completion,
            ..Outcome::default()
        };
        w.push(&mut rng, req, out, Faults::NORMAL);
    }
}

/// A young startup's app launching mid-range: quiet, then 5-10x its normal
/// rate for ~20 minutes (hitting its rate limit a little), diverse user
/// prompts behind one system prompt.
pub fn launch_burst(w: &mut World) {
    let mut rng = w.rng(LAUNCH_BURST);
    let account_id = w.new_id("acct_", 16);
    let key = w.new_id("key_", 12);
    let account = Account {
        account_id: account_id.clone(),
        org_id: Some(w.new_id("org_", 12)),
        created_at: days_before(&mut rng, w.start, 13.0, 15.0),
        tier: "build",
        country: Some("US"),
        billing_country: Some("US"),
        payment_fingerprint: Some(payment(w)),
        signup_channel: "startup",
        verified: false,
    };
    w.add_account(account, LAUNCH_BURST, None);

    let base = uniform(&mut rng, 25.0, 40.0) / TEN_MIN_MS;
    let boost = uniform(&mut rng, 5.0, 10.0);
    let burst_len = (20 * MINUTE_MS) as f64;
    let burst_start = w.start + (w.duration() as f64 * uniform(&mut rng, 0.35, 0.55)) as i64;
    let ramp_up = 2.0 * MINUTE_MS as f64;
    let ramp_down = 5.0 * MINUTE_MS as f64;
    // Fast rise when the launch post goes out, plateau, slower decay.
    let shape = move |t: i64| -> f64 {
        let x = (t - burst_start) as f64;
        if x < 0.0 {
            0.0
        } else if x < ramp_up {
            x / ramp_up
        } else if x < burst_len {
            1.0
        } else {
            (1.0 - (x - burst_len) / ramp_down).max(0.0)
        }
    };
    let times = poisson_times(&mut rng, w.start, w.end, base * boost, |t| {
        base * (1.0 + (boost - 1.0) * shape(t))
    });

    let system_prompt = fingerprint(&mut rng);
    let sys_tokens = 900;
    let prefix = cloud_prefix(&mut rng);
    let ips: Vec<String> = (0..3).map(|_| ip_in(&mut rng, prefix)).collect();
    for t in times {
        let in_burst = shape(t) > 0.5;
        let turns = if rng.random_bool(0.6) {
            1
        } else {
            1 + geometric(&mut rng, 2.0).min(10)
        };
        let mut req = base_req(&account_id, &key, t, MODEL_LARGE);
        req.client_ip = Some(pick(&mut rng, &ips).clone());
        req.user_agent = Some("atlas-sdk-node/1.4.2");
        req.prompt_tokens = sys_tokens + turns * (lognormal(&mut rng, 200.0, 0.7) as i64).max(5);
        req.prompt_fingerprint = Some(fingerprint(&mut rng));
        req.template_fingerprint = Some(fingerprint(&mut rng));
        req.system_prompt_hash = Some(system_prompt);
        req.conversation_turns = turns;
        req.temperature = Some(0.7);
        req.max_tokens = Some(2048);
        req.cot_elicitation_score = Some(uniform(&mut rng, 0.0, 0.3));
        req.topic = Some(*pick(&mut rng, &["chat", "writing", "other"]));
        req.prompt_language = Some("en");
        let out = Outcome {
            completion: (lognormal(&mut rng, 300.0, 0.7) as i64).max(5),
            reasoning: 0,
            cached: sys_tokens,
            tool_use: false,
        };
        let faults = Faults {
            rate_limited: if in_burst { 0.03 } else { 0.0 },
            error: 0.003,
            refused: 0.001,
        };
        w.push(&mut rng, req, out, faults);
    }
}
