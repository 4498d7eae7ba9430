//! Scenario files: what traffic to simulate, as data.
//!
//! A scenario (TOML, shipped in `deploy/scenarios/`) names the simulated span,
//! the benign populations, the distillation campaigns and the streaming
//! faults, each with its parameters. Unknown keys are errors, so a typo in a
//! parameter name never silently falls back to a default. The shipped files
//! are compiled in ([`Scenario::builtin`]); any other file is read with
//! [`Scenario::from_file`].

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::benign::Benign;
use crate::campaigns::Campaign;

/// Scenarios compiled into the binary, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("demo", include_str!("../../../deploy/scenarios/demo.toml")),
    ("eval", include_str!("../../../deploy/scenarios/eval.toml")),
    ("ci", include_str!("../../../deploy/scenarios/ci.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("reading scenario {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario {origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("no scenario named {name:?}: built in are {known}; or give a path to a .toml file")]
    Unknown { name: String, known: String },
}

/// One benign population of a scenario.
#[derive(Debug, Clone)]
pub struct Population {
    /// Label written to the ground truth (defaults to the kind).
    pub name: String,
    /// Accounts at scale 1.
    pub accounts: f64,
    pub kind: Benign,
}

/// One distillation campaign of a scenario.
#[derive(Debug, Clone)]
pub struct CampaignSpec {
    /// Campaign id written to the ground truth; unique within the scenario.
    pub id: String,
    /// Accounts at scale 1.
    pub accounts: f64,
    pub style: Campaign,
}

/// A model that appears part-way through the span (SIGNALS.md: one campaign
/// moved half its traffic to a newly released model within 24 hours).
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub model: String,
    /// Offset from the start of the span.
    pub at_ms: i64,
}

/// Streaming faults injected into the delivered event order. On by default
/// in every scenario: a detector must survive them, and each one is counted
/// by the worker (see `docs/DETECTION.md`, "Streaming realism").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Realism {
    /// Master switch.
    pub enabled: bool,
    /// Share of events delivered late but within the pipeline's
    /// out-of-orderness bound (placed normally in their window).
    pub reorder_share: f64,
    /// How late such events arrive at most; must stay below `out_of_orderness`.
    #[serde(deserialize_with = "de_duration")]
    pub reorder_max: Duration,
    /// Share of events delivered after their window closed (the DLQ's
    /// `late_event`).
    pub late_share: f64,
    /// How late those arrive; must exceed window + max_response_delay +
    /// out_of_orderness so that they are late for certain.
    #[serde(deserialize_with = "de_duration")]
    pub late_delay: Duration,
    /// Share of events delivered twice (producer retries).
    pub duplicate_share: f64,
    /// Share of responses that finish after `max_response_delay` (slow
    /// streams, client timeouts): the request stays unanswered in its window.
    pub slow_response_share: f64,
    #[serde(deserialize_with = "de_duration")]
    pub slow_response_min: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub slow_response_max: Duration,
    /// Share of exchanges whose request event is lost upstream while the
    /// response arrives.
    pub orphan_response_share: f64,
    /// Share of accounts with a second version mid-span (verified later, card
    /// changed, tier upgraded).
    pub account_update_share: f64,
    /// Share of accounts whose record never reaches the accounts topic.
    pub unknown_account_share: f64,
    /// The pipeline settings the faults are designed against (defaults of
    /// `deploy/distill-watch.toml` and of the jobs' window).
    #[serde(deserialize_with = "de_duration")]
    pub out_of_orderness: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_response_delay: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub window: Duration,
}

impl Default for Realism {
    fn default() -> Self {
        Realism {
            enabled: true,
            reorder_share: 0.01,
            reorder_max: Duration::from_secs(20),
            late_share: 0.0005,
            late_delay: Duration::from_secs(45 * 60),
            duplicate_share: 0.002,
            slow_response_share: 0.001,
            slow_response_min: Duration::from_secs(3 * 60),
            slow_response_max: Duration::from_secs(12 * 60),
            orphan_response_share: 0.0005,
            account_update_share: 0.03,
            unknown_account_share: 0.002,
            out_of_orderness: Duration::from_secs(30),
            max_response_delay: Duration::from_secs(120),
            window: Duration::from_secs(600),
        }
    }
}

impl Realism {
    /// No faults at all: perfectly ordered, complete input.
    pub fn off() -> Realism {
        Realism {
            enabled: false,
            ..Realism::default()
        }
    }

    fn check(&self) -> Result<(), String> {
        let shares = [
            ("reorder_share", self.reorder_share),
            ("late_share", self.late_share),
            ("duplicate_share", self.duplicate_share),
            ("slow_response_share", self.slow_response_share),
            ("orphan_response_share", self.orphan_response_share),
            ("account_update_share", self.account_update_share),
            ("unknown_account_share", self.unknown_account_share),
        ];
        for (name, v) in shares {
            if !(0.0..=0.2).contains(&v) {
                return Err(format!("[realism] {name} = {v}: must be in [0, 0.2]"));
            }
        }
        let exchange_shares = self.reorder_share
            + self.late_share
            + self.duplicate_share
            + self.slow_response_share
            + self.orphan_response_share;
        if exchange_shares > 0.5 {
            return Err("[realism] the exchange fault shares add up to more than 0.5".into());
        }
        if self.reorder_max >= self.out_of_orderness {
            return Err(format!(
                "[realism] reorder_max ({:?}) must be below out_of_orderness ({:?}): those events are meant to stay in bounds",
                self.reorder_max, self.out_of_orderness
            ));
        }
        let must_exceed = self.window + self.max_response_delay + self.out_of_orderness;
        if self.late_delay <= must_exceed {
            return Err(format!(
                "[realism] late_delay ({:?}) must exceed window + max_response_delay + out_of_orderness ({must_exceed:?}), or some 'late' events would not be late",
                self.late_delay
            ));
        }
        if self.slow_response_min <= self.max_response_delay
            || self.slow_response_max < self.slow_response_min
        {
            return Err(format!(
                "[realism] slow responses must take longer than max_response_delay ({:?}): slow_response_min {:?}, slow_response_max {:?}",
                self.max_response_delay, self.slow_response_min, self.slow_response_max
            ));
        }
        Ok(())
    }
}

/// A parsed, checked scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Seed used when the command line gives none.
    pub seed: u64,
    /// Start of the event-time span, epoch milliseconds.
    pub start_ms: i64,
    pub duration_ms: i64,
    pub release: Option<Release>,
    pub realism: Realism,
    pub benign: Vec<Population>,
    pub campaigns: Vec<CampaignSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_seed")]
    seed: u64,
    start: String,
    duration: String,
    #[serde(default)]
    new_model: Option<RawRelease>,
    #[serde(default)]
    realism: Realism,
    #[serde(default)]
    benign: Vec<toml::Table>,
    #[serde(default)]
    campaign: Vec<toml::Table>,
}

fn default_seed() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    model: String,
    /// Offset from the start, e.g. "26h".
    released_after: String,
}

impl Scenario {
    /// A shipped scenario by name, or a file path.
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        let path = Path::new(name_or_path);
        let builtin = BUILTIN.iter().any(|(n, _)| *n == name_or_path);
        if !builtin && (path.extension().is_some_and(|e| e == "toml") || path.exists()) {
            return Scenario::from_file(path);
        }
        Scenario::builtin(name_or_path)
    }

    pub fn builtin(name: &str) -> Result<Scenario, ScenarioError> {
        let (_, text) =
            BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| ScenarioError::Unknown {
                    name: name.to_string(),
                    known: BUILTIN
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        Scenario::parse(text, &format!("{name} (built in)"))
    }

    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let start_ms = parse_instant(&raw.start).map_err(&invalid)?;
        let duration_ms = ms(&raw.duration).map_err(&invalid)?;
        if duration_ms < 10 * 60_000 {
            return Err(invalid(format!(
                "duration {} is shorter than one 10-minute window",
                raw.duration
            )));
        }
        raw.realism.check().map_err(&invalid)?;
        let release = match raw.new_model {
            Some(r) => {
                let at_ms = ms(&r.released_after).map_err(&invalid)?;
                if at_ms >= duration_ms {
                    return Err(invalid(format!(
                        "new_model.released_after ({}) is not inside the span ({})",
                        r.released_after, raw.duration
                    )));
                }
                Some(Release {
                    model: r.model,
                    at_ms,
                })
            }
            None => None,
        };
        let mut benign = Vec::new();
        for (i, mut t) in raw.benign.into_iter().enumerate() {
            let at = format!("benign #{}", i + 1);
            let kind = take_string(&mut t, "kind").map_err(|m| invalid(format!("{at}: {m}")))?;
            let name = match t.remove("name") {
                Some(v) => v
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("{at}: name must be a string")))?,
                None => kind.clone(),
            };
            let accounts =
                take_count(&mut t, "accounts").map_err(|m| invalid(format!("{at}: {m}")))?;
            let kind =
                Benign::parse(&kind, t).map_err(|m| invalid(format!("{at} ({name}): {m}")))?;
            benign.push(Population {
                name,
                accounts,
                kind,
            });
        }
        let mut campaigns: Vec<CampaignSpec> = Vec::new();
        for (i, mut t) in raw.campaign.into_iter().enumerate() {
            let at = format!("campaign #{}", i + 1);
            let style = take_string(&mut t, "style").map_err(|m| invalid(format!("{at}: {m}")))?;
            let id = take_string(&mut t, "id").map_err(|m| invalid(format!("{at}: {m}")))?;
            if campaigns.iter().any(|c| c.id == id) {
                return Err(invalid(format!("{at}: campaign id {id:?} is used twice")));
            }
            if !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(format!(
                    "{at}: campaign id {id:?} may only hold letters, digits, '-' and '_'"
                )));
            }
            let accounts =
                take_count(&mut t, "accounts").map_err(|m| invalid(format!("{at}: {m}")))?;
            let style =
                Campaign::parse(&style, t).map_err(|m| invalid(format!("{at} ({id}): {m}")))?;
            if style.needs_release() && release.is_none() {
                return Err(invalid(format!(
                    "{at} ({id}): this style pivots to a newly released model; declare [new_model] in the scenario"
                )));
            }
            campaigns.push(CampaignSpec {
                id,
                accounts,
                style,
            });
        }
        Ok(Scenario {
            name: raw.name,
            description: raw.description,
            seed: raw.seed,
            start_ms,
            duration_ms,
            release,
            realism: raw.realism,
            benign,
            campaigns,
        })
    }
}

fn take_string(t: &mut toml::Table, key: &str) -> Result<String, String> {
    match t.remove(key) {
        Some(toml::Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{key} must be a string")),
        None => Err(format!("{key} is missing")),
    }
}

fn take_count(t: &mut toml::Table, key: &str) -> Result<f64, String> {
    let v = match t.remove(key) {
        Some(toml::Value::Integer(i)) => i as f64,
        Some(toml::Value::Float(f)) => f,
        Some(_) => return Err(format!("{key} must be a number")),
        None => return Err(format!("{key} is missing")),
    };
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{key} must be a non-negative number"));
    }
    Ok(v)
}

fn ms(text: &str) -> Result<i64, String> {
    Ok(distill_watch::config::parse_duration(text)?.as_millis() as i64)
}

/// Deserializes "30s"-style durations (same syntax as the worker's config).
pub fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    distill_watch::config::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// `2026-11-02T00:00:00Z` (UTC only, whole seconds) or epoch milliseconds.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    let bad =
        || format!("instant {text:?}: expected YYYY-MM-DDTHH:MM:SSZ (UTC) or epoch milliseconds");
    let b = t.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| t[r].parse::<i64>().map_err(|_| bad());
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return Err(bad());
    }
    Ok((days_from_civil(y, mo, d) * 86_400 + h * 3_600 + mi * 60 + s) * 1_000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm), so no date crate is needed for one conversion.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Deserialize a population's or campaign's parameters, rejecting unknown keys.
pub fn params<T: serde::de::DeserializeOwned>(t: toml::Table) -> Result<T, String> {
    toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_as_utc() {
        assert_eq!(parse_instant("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_instant("2026-11-02T00:00:00Z"), Ok(1_793_577_600_000));
        assert_eq!(parse_instant("2000-03-01T12:30:15Z"), Ok(951_913_815_000));
        assert!(parse_instant("2026-13-02T00:00:00Z").is_err());
        assert!(parse_instant("yesterday").is_err());
    }

    #[test]
    fn shipped_scenarios_parse() {
        for (name, _) in BUILTIN {
            let s = Scenario::builtin(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&s.name, name);
            assert!(!s.benign.is_empty() && !s.campaigns.is_empty());
            assert!(s.realism.enabled, "{name}: realism is on by default");
        }
        let eval = Scenario::builtin("eval").unwrap();
        let benign: f64 = eval.benign.iter().map(|p| p.accounts).sum();
        assert!(benign >= 5_000.0, "eval has {benign} benign accounts");
        assert!(eval.duration_ms >= 2 * 86_400_000);
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let base = "name = \"t\"\nstart = \"2026-11-02T00:00:00Z\"\nduration = \"1h\"\n";
        let err = |extra: &str| {
            Scenario::parse(&format!("{base}{extra}"), "test")
                .unwrap_err()
                .to_string()
        };
        assert!(err("[realism]\nreorder_shar = 0.1\n").contains("reorder_shar"));
        assert!(err("[realism]\nlate_delay = \"5m\"\n").contains("late_delay"));
        assert!(err("[[benign]]\nkind = \"nope\"\naccounts = 1\n").contains("nope"));
        assert!(err("[[campaign]]\nstyle = \"cot_harvest\"\naccounts = 1\n").contains("id"));
        assert!(Scenario::parse(base, "test").is_ok());
        let e = Scenario::load("no-such-scenario").unwrap_err().to_string();
        assert!(e.contains("eval"), "{e}");
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/scenarios/ci.toml"
        );
        assert_eq!(Scenario::load(file).unwrap().name, "ci");
        let e = Scenario::load("/no/such/file.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/file.toml"), "{e}");
    }
}
