//! The generator's in-memory events and their Avro encoding.
//!
//! Populations describe traffic with these plain structs; only this module
//! knows the field order of `schemas/*.avsc`. Fields are listed in schema order
//! so a reviewer can check them side by side with the `.avsc` files.

use std::collections::{BTreeSet, HashSet};

use apache_avro::types::Value;
use rand::rngs::StdRng;
use rand::Rng;

use distill_watch::schemas::{encode_framed, SchemaSet};

use crate::dist::{self, int, lognormal, uniform};
use crate::realism;
use crate::scenario::Realism;
use crate::truth::{Label, TruthRow};
use crate::Record;

/// Models on offer from the start of the span. A scenario may release a
/// new one part-way through ([`World::new_model`]).
pub const MODEL_SMALL: &str = "atlas-3";
pub const MODEL_LARGE: &str = "atlas-3-large";

pub const EP_MESSAGES: &str = "/v1/messages";
pub const EP_COMPLETIONS: &str = "/v1/completions";

/// Hard ceiling on response latency: the gateway's generation deadline.
pub const MAX_LATENCY_MS: i64 = 120_000;

/// One account version (`Account.avsc`).
#[derive(Debug, Clone, Default)]
pub struct Account {
    pub account_id: String,
    pub org_id: Option<String>,
    pub created_at: i64,
    pub tier: &'static str,
    pub country: Option<&'static str>,
    pub billing_country: Option<&'static str>,
    pub payment_fingerprint: Option<String>,
    pub signup_channel: &'static str,
    pub verified: bool,
}

/// One API request (`ApiRequest.avsc`); `request_id` is assigned by
/// [`World::push`].
#[derive(Debug, Clone, Default)]
pub struct Req {
    pub request_id: String,
    pub account_id: String,
    pub event_time: i64,
    pub api_key_id: Option<String>,
    pub model: &'static str,
    pub endpoint: &'static str,
    pub client_ip: Option<String>,
    pub user_agent: Option<&'static str>,
    pub prompt_tokens: i64,
    pub prompt_fingerprint: Option<i64>,
    pub template_fingerprint: Option<i64>,
    pub system_prompt_hash: Option<i64>,
    pub conversation_turns: i64,
    pub n: i64,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i64>,
    pub logprobs: bool,
    pub top_logprobs: i64,
    pub logit_bias_size: i64,
    pub tool_count: i64,
    pub tools_hash: Option<i64>,
    pub reasoning_requested: bool,
    pub reasoning_effort: Option<&'static str>,
    pub cot_elicitation_score: Option<f64>,
    pub topic: Option<&'static str>,
    pub prompt_language: Option<&'static str>,
}

/// Response outcome, in `ResponseStatus` symbol order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Error,
    RateLimited,
    Refused,
}

impl Status {
    fn avro(self) -> Value {
        let (i, s) = match self {
            Status::Ok => (0, "ok"),
            Status::Error => (1, "error"),
            Status::RateLimited => (2, "rate_limited"),
            Status::Refused => (3, "refused"),
        };
        Value::Enum(i, s.to_string())
    }
}

/// One API response (`ApiResponse.avsc`); request id, account and the
/// request's time come from the paired [`Req`].
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: Status,
    pub completion_tokens: i64,
    pub reasoning_tokens: i64,
    pub cached_tokens: i64,
    pub finish_reason: Option<&'static str>,
    pub latency_ms: i64,
}

/// What the model would produce if the request succeeds (per choice).
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub completion: i64,
    pub reasoning: i64,
    pub cached: i64,
    pub tool_use: bool,
}

/// Probabilities of the non-ok outcomes for a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub rate_limited: f64,
    pub error: f64,
    pub refused: f64,
}

impl Faults {
    /// Background failure rates of a healthy API.
    pub const NORMAL: Faults = Faults {
        rate_limited: 0.0,
        error: 0.003,
        refused: 0.0,
    };
}

/// Decode throughput (tokens per second) of each model; bigger models are
/// slower, which is what makes reasoning-heavy harvesting slow per request.
fn tokens_per_second(model: &str) -> f64 {
    match model {
        MODEL_SMALL => 150.0,
        MODEL_LARGE => 95.0,
        // A newly released model: faster than the large one it replaces.
        _ => 120.0,
    }
}

/// Turn a request and its would-be outcome into a response: roll the status,
/// apply `max_tokens`, and derive latency from prompt size, output size and
/// model speed, keeping it under the gateway deadline.
pub fn respond(rng: &mut StdRng, req: &Req, out: Outcome, faults: Faults) -> Resp {
    let u: f64 = rng.random();
    let (rl, err, refused) = (faults.rate_limited, faults.error, faults.refused);
    if u < rl {
        // A 429 is answered by the gateway without touching a model: fast.
        return Resp {
            status: Status::RateLimited,
            completion_tokens: 0,
            reasoning_tokens: 0,
            cached_tokens: 0,
            finish_reason: None,
            latency_ms: int(rng, 15, 90),
        };
    }
    if u < rl + err {
        return Resp {
            status: Status::Error,
            completion_tokens: 0,
            reasoning_tokens: 0,
            cached_tokens: 0,
            finish_reason: None,
            latency_ms: (lognormal(rng, 2_500.0, 1.0) as i64).clamp(300, 30_000),
        };
    }
    let uncached = (req.prompt_tokens - out.cached).max(0) as f64;
    let ttft = uniform(rng, 300.0, 550.0) + uncached * 0.03 + out.cached as f64 * 0.004;
    if u < rl + err + refused {
        let completion = int(rng, 15, 60);
        let latency = ttft + completion as f64 / tokens_per_second(req.model) * 1000.0;
        return Resp {
            status: Status::Refused,
            completion_tokens: completion,
            reasoning_tokens: 0,
            cached_tokens: out.cached,
            finish_reason: Some("content_filter"),
            latency_ms: latency as i64,
        };
    }

    let n = req.n.max(1);
    let mut per_choice = out.completion.max(1);
    let mut reasoning = out.reasoning.max(0);
    let mut finish = if out.tool_use { "tool_use" } else { "stop" };
    if let Some(m) = req.max_tokens {
        if per_choice > m {
            per_choice = m;
            finish = "length";
        }
    }
    let tps = tokens_per_second(req.model) * uniform(rng, 0.8, 1.25);
    let mut latency = ttft + (per_choice + reasoning) as f64 / tps * 1000.0;
    let deadline = MAX_LATENCY_MS as f64 - uniform(rng, 500.0, 15_000.0);
    if latency > deadline {
        // The gateway stops generation at its deadline: the client gets what
        // was produced so far, cut like a max_tokens stop.
        let budget = ((deadline - ttft) / 1000.0 * tps).max(2.0);
        let factor = budget / (per_choice + reasoning) as f64;
        reasoning = (reasoning as f64 * factor) as i64;
        per_choice = ((per_choice as f64 * factor) as i64).max(1);
        finish = "length";
        latency = deadline;
    }
    Resp {
        status: Status::Ok,
        completion_tokens: per_choice * n,
        reasoning_tokens: reasoning * n,
        cached_tokens: out.cached.min(req.prompt_tokens),
        finish_reason: Some(finish),
        latency_ms: (latency as i64).clamp(1, MAX_LATENCY_MS),
    }
}

fn null() -> Value {
    Value::Union(0, Box::new(Value::Null))
}

fn some(v: Value) -> Value {
    Value::Union(1, Box::new(v))
}

fn opt_str(v: Option<&str>) -> Value {
    v.map_or_else(null, |s| some(Value::String(s.to_string())))
}

fn opt_long(v: Option<i64>) -> Value {
    v.map_or_else(null, |x| some(Value::Long(x)))
}

fn opt_double(v: Option<f64>) -> Value {
    v.map_or_else(null, |x| some(Value::Double(x)))
}

fn opt_int(v: Option<i64>) -> Value {
    v.map_or_else(null, |x| some(Value::Int(to_i32(x))))
}

/// Counts are `i64` while generating (no overflow worries in arithmetic);
/// the schema's `int`s are far from saturating, but saturate rather than wrap.
fn to_i32(x: i64) -> i32 {
    i32::try_from(x).unwrap_or(if x < 0 { i32::MIN } else { i32::MAX })
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

impl Account {
    fn avro(&self, version: i64, updated_at: i64) -> Value {
        record(vec![
            ("account_id", Value::String(self.account_id.clone())),
            ("org_id", opt_str(self.org_id.as_deref())),
            ("created_at", Value::TimestampMillis(self.created_at)),
            ("tier", Value::String(self.tier.to_string())),
            ("country", opt_str(self.country)),
            ("billing_country", opt_str(self.billing_country)),
            (
                "payment_fingerprint",
                opt_str(self.payment_fingerprint.as_deref()),
            ),
            (
                "signup_channel",
                Value::String(self.signup_channel.to_string()),
            ),
            ("verified", Value::Boolean(self.verified)),
            ("version", Value::Long(version)),
            ("updated_at", Value::TimestampMillis(updated_at)),
        ])
    }
}

impl Req {
    pub(crate) fn avro(&self) -> Value {
        record(vec![
            ("request_id", Value::String(self.request_id.clone())),
            ("account_id", Value::String(self.account_id.clone())),
            ("event_time", Value::TimestampMillis(self.event_time)),
            ("api_key_id", opt_str(self.api_key_id.as_deref())),
            ("model", Value::String(self.model.to_string())),
            ("endpoint", Value::String(self.endpoint.to_string())),
            ("client_ip", opt_str(self.client_ip.as_deref())),
            ("user_agent", opt_str(self.user_agent)),
            ("prompt_tokens", Value::Int(to_i32(self.prompt_tokens))),
            ("prompt_fingerprint", opt_long(self.prompt_fingerprint)),
            ("template_fingerprint", opt_long(self.template_fingerprint)),
            ("system_prompt_hash", opt_long(self.system_prompt_hash)),
            (
                "conversation_turns",
                Value::Int(to_i32(self.conversation_turns)),
            ),
            ("n", Value::Int(to_i32(self.n))),
            ("temperature", opt_double(self.temperature)),
            ("max_tokens", opt_int(self.max_tokens)),
            ("logprobs", Value::Boolean(self.logprobs)),
            ("top_logprobs", Value::Int(to_i32(self.top_logprobs))),
            ("logit_bias_size", Value::Int(to_i32(self.logit_bias_size))),
            ("tool_count", Value::Int(to_i32(self.tool_count))),
            ("tools_hash", opt_long(self.tools_hash)),
            (
                "reasoning_requested",
                Value::Boolean(self.reasoning_requested),
            ),
            ("reasoning_effort", opt_str(self.reasoning_effort)),
            (
                "cot_elicitation_score",
                opt_double(self.cot_elicitation_score),
            ),
            ("topic", opt_str(self.topic)),
            ("prompt_language", opt_str(self.prompt_language)),
        ])
    }
}

impl Resp {
    pub(crate) fn avro(&self, req: &Req) -> Value {
        record(vec![
            ("request_id", Value::String(req.request_id.clone())),
            ("account_id", Value::String(req.account_id.clone())),
            ("event_time", Value::TimestampMillis(self.event_time(req))),
            ("status", self.status.avro()),
            (
                "completion_tokens",
                Value::Int(to_i32(self.completion_tokens)),
            ),
            (
                "reasoning_tokens",
                Value::Int(to_i32(self.reasoning_tokens)),
            ),
            ("cached_tokens", Value::Int(to_i32(self.cached_tokens))),
            ("finish_reason", opt_str(self.finish_reason)),
            ("latency_ms", Value::Int(to_i32(self.latency_ms))),
        ])
    }

    pub fn event_time(&self, req: &Req) -> i64 {
        req.event_time + self.latency_ms
    }
}

/// One account with every version it will have, and its label.
struct AccountEntry {
    /// (version, updated_at, record); version 1 takes effect at creation.
    versions: Vec<(i64, i64, Account)>,
    label: Label,
}

/// Everything generated so far, plus the id allocators that keep ids unique.
/// Populations add accounts and exchanges; [`World::finish`] applies the
/// streaming faults and encodes everything.
pub struct World {
    pub seed: u64,
    pub start: i64,
    pub end: i64,
    pub scale: f64,
    /// A model released part-way through the span, and when (absolute).
    pub new_model: Option<(&'static str, i64)>,
    accounts: Vec<AccountEntry>,
    index: std::collections::HashMap<String, usize>,
    events: Vec<(Req, Resp)>,
    ids: BTreeSet<String>,
    request_ids: HashSet<String>,
    id_rng: StdRng,
}

impl World {
    pub fn new(seed: u64, start: i64, duration_ms: i64, scale: f64) -> Self {
        Self {
            seed,
            start,
            end: start + duration_ms.max(0),
            scale: if scale.is_finite() {
                scale.max(0.0)
            } else {
                1.0
            },
            new_model: None,
            accounts: Vec::new(),
            index: std::collections::HashMap::new(),
            events: Vec::new(),
            ids: BTreeSet::new(),
            request_ids: HashSet::new(),
            id_rng: dist::stream(seed, "ids"),
        }
    }

    /// Release `model` at absolute time `at` (epoch ms).
    pub fn with_release(mut self, model: &str, at: i64) -> Self {
        // Models are `&'static str` everywhere in the generator; one leaked
        // name per generated scenario is a few bytes.
        self.new_model = Some((Box::leak(model.to_string().into_boxed_str()), at));
        self
    }

    /// The newly released model, if it is available at `t`.
    pub fn new_model_at(&self, t: i64) -> Option<&'static str> {
        self.new_model.and_then(|(m, at)| (t >= at).then_some(m))
    }

    /// The random stream of one population (see [`dist::stream`]).
    pub fn rng(&self, label: &str) -> StdRng {
        dist::stream(self.seed, label)
    }

    /// A population size at this scale. A population given any accounts at
    /// all keeps at least one, so every behaviour is present even in small
    /// test runs; zero stays zero.
    pub fn scaled(&self, n: f64) -> usize {
        if n <= 0.0 {
            return 0;
        }
        ((n * self.scale).round() as usize).max(1)
    }

    pub fn duration(&self) -> i64 {
        self.end - self.start
    }

    /// A fresh opaque id with `prefix`. Ids say nothing about the population:
    /// a detector must not be able to cheat by reading them.
    pub fn new_id(&mut self, prefix: &str, hex_len: usize) -> String {
        loop {
            let id = format!("{prefix}{}", dist::hex(&mut self.id_rng, hex_len));
            if self.ids.insert(id.clone()) {
                return id;
            }
        }
    }

    /// Add an account (version 1, in force from `created_at`).
    pub fn add_account(&mut self, account: Account, label: Label) {
        self.index
            .insert(account.account_id.clone(), self.accounts.len());
        self.accounts.push(AccountEntry {
            versions: vec![(1, account.created_at, account)],
            label,
        });
    }

    /// Give an account a new version in force from `at`, derived from its
    /// latest one by `change`. Returns false for an unknown account.
    pub fn update_account(
        &mut self,
        account_id: &str,
        at: i64,
        change: impl FnOnce(&mut Account),
    ) -> bool {
        let Some(&i) = self.index.get(account_id) else {
            return false;
        };
        let entry = &mut self.accounts[i];
        let (last_version, last_at, last) = entry.versions.last().expect("version 1 exists");
        let mut next = last.clone();
        change(&mut next);
        let at = at.max(*last_at + 1);
        entry.versions.push((last_version + 1, at, next));
        true
    }

    /// The latest version of an account.
    pub fn account(&self, account_id: &str) -> Option<&Account> {
        let &i = self.index.get(account_id)?;
        self.accounts[i].versions.last().map(|(_, _, a)| a)
    }

    /// Ids of all accounts added so far, in creation order.
    pub fn account_ids(&self) -> impl Iterator<Item = &str> {
        self.accounts
            .iter()
            .map(|e| e.versions[0].2.account_id.as_str())
    }

    /// Record a request and its response. Requests outside the configured
    /// range are dropped (populations may simulate activity that started
    /// before the range, like a chat session already under way); returns
    /// whether the request was kept.
    pub fn push(&mut self, rng: &mut StdRng, mut req: Req, out: Outcome, faults: Faults) -> bool {
        if req.event_time < self.start || req.event_time >= self.end {
            return false;
        }
        let resp = respond(rng, &req, out, faults);
        req.request_id = loop {
            let id = format!("req_{}", dist::hex(&mut self.id_rng, 24));
            if self.request_ids.insert(id.clone()) {
                break id;
            }
        };
        self.events.push((req, resp));
        true
    }

    /// Requests recorded so far.
    pub fn request_count(&self) -> usize {
        self.events.len()
    }

    /// Apply the streaming faults of `realism` and encode everything.
    pub fn finish(mut self, realism: &Realism) -> crate::Traffic {
        let set = SchemaSet::builtin();
        let mut rng = dist::stream(self.seed, "realism");
        // Sorted by (time, id): a total order independent of the order in
        // which populations were generated.
        self.events.sort_by(|(a, _), (b, _)| {
            (a.event_time, &a.request_id).cmp(&(b.event_time, &b.request_id))
        });

        let ids: Vec<String> = self.account_ids().map(str::to_string).collect();
        let plan = realism::plan_accounts(&mut rng, realism, &ids, self.start, self.end);
        for (account_id, at, change) in &plan.updates {
            let (id, at) = (account_id.clone(), *at);
            let mut fresh = None;
            if matches!(change, realism::AccountChange::NewCard) {
                fresh = Some(self.new_id("pm_", 20));
            }
            self.update_account(&id, at, |a| change.apply(a, fresh));
        }
        let unknown: HashSet<&str> = plan.unknown.iter().map(String::as_str).collect();

        let mut accounts = Vec::new();
        let mut published = 0;
        let mut truth = Vec::with_capacity(self.accounts.len());
        for entry in &self.accounts {
            let id = &entry.versions[0].2.account_id;
            if !unknown.contains(id.as_str()) {
                published += 1;
                for (version, at, a) in &entry.versions {
                    accounts.push(Record {
                        key: id.clone(),
                        value: encode_framed(&set.account, a.avro(*version, *at))
                            .expect("generator builds Account values in schema order"),
                        event_time_ms: *at,
                        deliver_ms: *at,
                    });
                }
            }
            truth.push(TruthRow {
                account_id: id.clone(),
                label: entry.label.clone(),
                first_request_ms: None,
            });
        }

        let delivered = realism::deliver(&mut rng, realism, &mut self.events, &unknown);
        let mut injected = delivered.injected;
        injected.account_updates = plan.updates.len() as u64;
        injected.unknown_accounts = plan.unknown.len() as u64;
        injected.account_records = accounts.len() as u64;
        injected.accounts_published = published;

        let mut first: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        for d in &delivered.requests {
            let req = &self.events[d.event].0;
            let e = first
                .entry(req.account_id.as_str())
                .or_insert(req.event_time);
            *e = (*e).min(req.event_time);
        }
        for row in &mut truth {
            row.first_request_ms = first.get(row.account_id.as_str()).copied();
        }
        // Accounts that never sent a request in the span (a hydra replacement
        // never called on, a user who stayed away) cannot be detected from
        // traffic: they are account records only, not evaluation subjects.
        truth.retain(|row| row.first_request_ms.is_some());
        let requests = delivered
            .requests
            .iter()
            .map(|d| {
                let req = &self.events[d.event].0;
                Record {
                    key: req.account_id.clone(),
                    value: encode_framed(&set.request, req.avro())
                        .expect("generator builds ApiRequest values in schema order"),
                    event_time_ms: req.event_time,
                    deliver_ms: d.deliver_ms,
                }
            })
            .collect();
        let responses = delivered
            .responses
            .iter()
            .map(|d| {
                let (req, resp) = &self.events[d.event];
                Record {
                    key: req.account_id.clone(),
                    value: encode_framed(&set.response, resp.avro(req))
                        .expect("generator builds ApiResponse values in schema order"),
                    event_time_ms: resp.event_time(req),
                    deliver_ms: d.deliver_ms,
                }
            })
            .collect();
        crate::Traffic {
            accounts,
            requests,
            responses,
            truth,
            injected,
        }
    }
}
