//! Features → distillation risk: score, level and reasons, from the scoring
//! model in `jobs/scoring.toml`.
//!
//! The model is additive so every point of the score is explained: each
//! feature contributes `weight × ramp(value)`, where the ramp rises linearly
//! from 0 at `low` to 1 at `high` (or falls, when `high < low`), and the score
//! is the sum capped at 1. Reasons are the largest contributions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use serde::Deserialize;

use crate::jobs::ACCOUNT_KEY;

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("cannot read scoring model {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scoring model {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Score bands, by lower bound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    pub elevated: f64,
    pub high: f64,
    pub critical: f64,
}

/// One feature's part in the score.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureRule {
    pub feature: String,
    pub weight: f64,
    pub low: f64,
    pub high: f64,
    #[serde(default)]
    pub why: String,
    /// The family this rule's evidence belongs to: a family with a cap in
    /// `[family_caps]` contributes at most that much, however many of its
    /// rules fire (see [`ScoringModel::family_caps`]).
    #[serde(default)]
    pub family: Option<String>,
}

impl FeatureRule {
    /// weight × ramp(value); NULL contributes nothing.
    pub fn contribution(&self, value: Option<f64>) -> f64 {
        let Some(v) = value else { return 0.0 };
        let t = ((v - self.low) / (self.high - self.low)).clamp(0.0, 1.0);
        self.weight * t
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringModel {
    pub model_version: String,
    pub top_reasons: usize,
    pub levels: Levels,
    /// Most a family of rules may add to the score. Rules of one family
    /// read the same evidence several ways (the share of a window's
    /// requests eliciting reasoning, the hours of six in which most did),
    /// so without a cap one kind of behaviour could reach `high` on its
    /// own. When a family's contributions exceed its cap they are scaled
    /// down in proportion, and the reasons show the scaled values, so
    /// reasons still add up to the score.
    #[serde(default)]
    pub family_caps: BTreeMap<String, f64>,
    #[serde(rename = "rule")]
    pub rules: Vec<FeatureRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Low,
    Elevated,
    High,
    Critical,
}

impl Level {
    /// Index in the `RiskLevel` Avro enum.
    pub fn index(self) -> u32 {
        self as u32
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Elevated => "elevated",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "low" => Level::Low,
            "elevated" => Level::Elevated,
            "high" => Level::High,
            "critical" => Level::Critical,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub feature: String,
    pub value: f64,
    pub contribution: f64,
}

/// One per account and window; encoded by `sink` as the `RiskScore` schema.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskScore {
    pub account_id: String,
    pub window_start: i64,
    pub window_end: i64,
    pub score: f64,
    pub level: Level,
    pub reasons: Vec<Reason>,
    pub features: Vec<(String, Option<f64>)>,
    pub model_version: String,
    pub event_count: i64,
    pub response_count: i64,
    pub revision: i32,
    /// Set on a member score (see `cluster`): the cluster whose risk this
    /// record carries for the account.
    pub cluster_id: Option<String>,
}

/// Round to 9 decimals: results are compared byte for byte across runs, and
/// this keeps a last-bit difference in some future float path from showing.
pub fn round9(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

impl ScoringModel {
    pub fn load(path: &Path) -> Result<Self, ScoreError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScoreError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ScoreError> {
        let invalid = |message: String| ScoreError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let m: ScoringModel = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        m.validate().map_err(invalid)?;
        Ok(m)
    }

    /// Levels ordered, rules well-formed and unique, a version.
    pub fn validate(&self) -> Result<(), String> {
        let m = self;
        let invalid = |s: String| s;
        let l = &m.levels;
        if !(0.0 < l.elevated && l.elevated < l.high && l.high < l.critical && l.critical <= 1.0) {
            return Err(invalid(
                "levels must satisfy 0 < elevated < high < critical <= 1".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &m.rules {
            if !seen.insert(&r.feature) {
                return Err(invalid(format!("feature {} has two rules", r.feature)));
            }
            if r.low == r.high || !r.low.is_finite() || !r.high.is_finite() {
                return Err(invalid(format!(
                    "rule {}: low and high must be finite and differ",
                    r.feature
                )));
            }
            if !(r.weight > 0.0 && r.weight <= 1.0) {
                return Err(invalid(format!(
                    "rule {}: weight must be in (0, 1]",
                    r.feature
                )));
            }
        }
        for (family, cap) in &m.family_caps {
            if !(*cap > 0.0 && *cap <= 1.0) {
                return Err(invalid(format!(
                    "family_caps.{family}: a cap must be in (0, 1]"
                )));
            }
            if !m.rules.iter().any(|r| r.family.as_ref() == Some(family)) {
                return Err(invalid(format!(
                    "family_caps.{family}: no rule has family = {family:?}"
                )));
            }
        }
        if m.model_version.trim().is_empty() {
            return Err(invalid("model_version is empty".into()));
        }
        Ok(())
    }

    pub fn level(&self, score: f64) -> Level {
        let l = &self.levels;
        if score >= l.critical {
            Level::Critical
        } else if score >= l.high {
            Level::High
        } else if score >= l.elevated {
            Level::Elevated
        } else {
            Level::Low
        }
    }

    /// Features named by rules but produced by no job: a typo here would
    /// silently switch a detector off, so callers refuse to start.
    pub fn missing_features(&self, produced: &[String]) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| !produced.contains(&r.feature))
            .map(|r| r.feature.clone())
            .collect()
    }

    /// Score one subject's named feature values: (score, level, reasons),
    /// by the same arithmetic as [`score`](Self::score).
    pub fn score_values(&self, features: &[(String, Option<f64>)]) -> (f64, Level, Vec<Reason>) {
        self.explain(self.rules.iter().map(|rule| {
            let v = features
                .iter()
                .find(|(n, _)| *n == rule.feature)
                .and_then(|(_, v)| v.filter(|v| v.is_finite()))
                .map(round9);
            (rule, v)
        }))
    }

    /// Score, level and top reasons from each rule's (rounded) value.
    fn explain<'a>(
        &'a self,
        values: impl Iterator<Item = (&'a FeatureRule, Option<f64>)>,
    ) -> (f64, Level, Vec<Reason>) {
        let raw: Vec<(&FeatureRule, f64, f64)> = values
            .filter_map(|(rule, v)| {
                let v = v?;
                let c = rule.contribution(Some(v));
                (c > 0.0).then_some((rule, v, c))
            })
            .collect();
        let mut family_sums: BTreeMap<&str, f64> = BTreeMap::new();
        for (rule, _, c) in &raw {
            if let Some(f) = &rule.family {
                *family_sums.entry(f.as_str()).or_default() += c;
            }
        }
        let mut reasons: Vec<Reason> = raw
            .into_iter()
            .filter_map(|(rule, v, c)| {
                let scale = rule
                    .family
                    .as_deref()
                    .and_then(|f| Some((self.family_caps.get(f)?, family_sums[f])))
                    .map_or(1.0, |(cap, sum)| if sum > *cap { cap / sum } else { 1.0 });
                let c = round9(c * scale);
                (c > 0.0).then(|| Reason {
                    feature: rule.feature.clone(),
                    value: v,
                    contribution: c,
                })
            })
            .collect();
        // Folding from +0.0: `Sum` starts at -0.0, which would put a negative
        // zero on the wire for accounts with no reasons.
        let score = round9(
            reasons
                .iter()
                .fold(0.0, |acc, r| acc + r.contribution)
                .min(1.0),
        );
        // Ties broken by name so the order never depends on rule order.
        reasons.sort_by(|a, b| {
            b.contribution
                .total_cmp(&a.contribution)
                .then_with(|| a.feature.cmp(&b.feature))
        });
        reasons.truncate(self.top_reasons);
        (score, self.level(score), reasons)
    }

    /// Score every row of a merged feature table (see `jobs::run_all`).
    /// `counts` gives (event_count, response_count) per account.
    pub fn score(
        &self,
        features: &RecordBatch,
        counts: &BTreeMap<&str, (i64, i64)>,
        window_start: i64,
        window_end: i64,
        model_version: &str,
    ) -> Vec<RiskScore> {
        let schema = features.schema();
        let keys = features
            .column_by_name(ACCOUNT_KEY)
            .expect("run_all always emits the key")
            .as_string::<i32>();
        let columns: Vec<(String, &arrow::array::Float64Array)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() != ACCOUNT_KEY)
            .map(|(i, f)| {
                (
                    f.name().clone(),
                    features.column(i).as_primitive::<Float64Type>(),
                )
            })
            .collect();
        let rules: Vec<(&FeatureRule, Option<usize>)> = self
            .rules
            .iter()
            .map(|r| (r, columns.iter().position(|(n, _)| *n == r.feature)))
            .collect();
        let mut out = Vec::with_capacity(features.num_rows());
        for row in 0..features.num_rows() {
            let account = keys.value(row).to_string();
            let value = |col: usize| {
                let a = columns[col].1;
                (!a.is_null(row)).then(|| round9(a.value(row)))
            };
            let (score, level, reasons) =
                self.explain(rules.iter().map(|(rule, col)| (*rule, col.and_then(value))));
            let (event_count, response_count) =
                counts.get(account.as_str()).copied().unwrap_or((0, 0));
            out.push(RiskScore {
                features: (0..columns.len())
                    .map(|c| (columns[c].0.clone(), value(c)))
                    .collect(),
                account_id: account,
                window_start,
                window_end,
                score,
                level,
                reasons,
                model_version: model_version.to_string(),
                event_count,
                response_count,
                revision: 0,
                cluster_id: None,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    const MODEL: &str = r#"
model_version = "test-1"
top_reasons = 2
[levels]
elevated = 0.3
high = 0.6
critical = 0.85
[[rule]]
feature = "cot"
weight = 0.5
low = 0.2
high = 0.7
[[rule]]
feature = "cv"
weight = 0.3
low = 0.8
high = 0.2
[[rule]]
feature = "dup"
weight = 0.4
low = 0.1
high = 0.5
"#;

    fn features() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("account_id", DataType::Utf8, false),
                Field::new("cot", DataType::Float64, true),
                Field::new("cv", DataType::Float64, true),
                Field::new("dup", DataType::Float64, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Float64Array::from(vec![Some(0.95), Some(0.1)])),
                Arc::new(Float64Array::from(vec![Some(0.5), None])),
                Arc::new(Float64Array::from(vec![Some(0.3), Some(0.0)])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn additive_score_with_capped_sum_and_top_reasons() {
        let m = ScoringModel::parse(Path::new("s.toml"), MODEL).unwrap();
        let counts = BTreeMap::from([("a", (10, 9))]);
        let s = m.score(&features(), &counts, 0, 600_000, "v");
        assert_eq!(s.len(), 2);
        // cot 0.5 (capped ramp) + cv 0.3*0.5 + dup 0.4*0.5 = 0.85
        assert_eq!(s[0].score, 0.85);
        assert_eq!(s[0].level, Level::Critical);
        assert_eq!(s[0].reasons.len(), 2);
        assert_eq!(s[0].reasons[0].feature, "cot");
        assert_eq!(s[0].reasons[1].feature, "dup");
        assert_eq!(s[0].event_count, 10);
        assert_eq!(s[1].score, 0.0);
        assert_eq!(s[1].level, Level::Low);
        assert!(s[1].reasons.is_empty());
        assert_eq!(s[1].features[1], ("cv".to_string(), None));
    }

    #[test]
    fn a_capped_family_is_scaled_down_and_its_reasons_still_add_up() {
        // cv and dup as one family capped at 0.2: a's 0.15 + 0.2 = 0.35
        // become 0.0857.. + 0.1142.. = 0.2; cot (0.5) is outside it.
        let text = MODEL
            .replace(
                "feature = \"cv\"\n",
                "feature = \"cv\"\nfamily = \"window\"\n",
            )
            .replace(
                "feature = \"dup\"\n",
                "feature = \"dup\"\nfamily = \"window\"\n",
            )
            .replace("[levels]", "[family_caps]\nwindow = 0.2\n\n[levels]");
        let m = ScoringModel::parse(Path::new("s.toml"), &text).unwrap();
        let s = m.score(&features(), &BTreeMap::new(), 0, 600_000, "v");
        assert_eq!(s[0].score, 0.7);
        let c = |f: &str| {
            s[0].reasons
                .iter()
                .find(|r| r.feature == f)
                .map(|r| r.contribution)
        };
        assert_eq!(c("cot"), Some(0.5));
        assert_eq!(c("dup"), Some(round9(0.2 * 0.2 / 0.35)));
        // Below the cap nothing changes: b has no window evidence.
        assert_eq!(s[1].score, 0.0);
        // A cap naming no family, or out of range, is refused.
        for bad in [
            "[family_caps]\nwidnow = 0.2\n",
            "[family_caps]\nwindow = 1.5\n",
        ] {
            let t = text.replace("[family_caps]\nwindow = 0.2\n", bad);
            assert!(
                ScoringModel::parse(Path::new("s.toml"), &t).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn invalid_models_are_rejected() {
        for (from, to) in [
            ("high = 0.6", "high = 0.2"),
            ("weight = 0.5", "weight = 0"),
            ("low = 0.1", "low = 0.5"),
        ] {
            let text = MODEL.replacen(from, to, 1);
            assert!(
                ScoringModel::parse(Path::new("s.toml"), &text).is_err(),
                "{from} -> {to}"
            );
        }
        let m = ScoringModel::parse(Path::new("s.toml"), MODEL).unwrap();
        assert_eq!(
            m.missing_features(&["cot".into(), "cv".into()]),
            vec!["dup".to_string()]
        );
    }
}
