//! The cluster model (`jobs/clusters.toml`): cluster features → cluster
//! risk with reasons, and the member scores a flagged cluster gives its
//! accounts. Same additive arithmetic as the account model (`score`), so
//! reasons add up to the score.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::agg::{ClusterFeatures, Limits, FEATURES};
use crate::config::parse_duration;
use crate::score::{FeatureRule, Level, Levels, Reason, RiskScore, ScoringModel};

#[derive(Debug, thiserror::Error)]
pub enum ClusterModelError {
    #[error("cannot read cluster model {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster model {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    model_version: String,
    top_reasons: usize,
    window: String,
    /// Hopping windows: a new one starts every `slide` (default: tumbling).
    #[serde(default)]
    slide: Option<String>,
    min_members: usize,
    max_members: usize,
    #[serde(default = "default_sketch")]
    sketch_size: usize,
    #[serde(default = "default_member_level")]
    member_scores_from: String,
    #[serde(default = "default_member_kinds")]
    member_kinds: Vec<String>,
    #[serde(default)]
    typical_may_lack: usize,
    levels: Levels,
    #[serde(rename = "rule")]
    rules: Vec<FeatureRule>,
}

fn default_sketch() -> usize {
    256
}
fn default_member_level() -> String {
    "high".into()
}
fn default_member_kinds() -> Vec<String> {
    super::keys::KINDS
        .iter()
        .filter(|k| **k != "signup")
        .map(|k| k.to_string())
        .collect()
}

/// A loaded cluster model.
#[derive(Debug, Clone)]
pub struct ClusterModel {
    pub scoring: ScoringModel,
    pub limits: Limits,
    pub min_members: usize,
    /// Members of a cluster at this level or above get a member score.
    pub member_level: Level,
    /// Cluster kinds whose members get member scores.
    pub member_kinds: Vec<String>,
}

/// One cluster window, scored.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRisk {
    pub cluster: ClusterFeatures,
    pub score: f64,
    pub level: Level,
    pub reasons: Vec<Reason>,
    pub model_version: String,
}

impl ClusterRisk {
    pub fn cluster_id(&self) -> String {
        super::keys::cluster_id(&self.cluster.kind, &self.cluster.key)
    }
}

/// Prefix of cluster feature names in member scores, so that a consumer
/// of `risk.scores.v1` tells them from the account's own features.
pub const MEMBER_PREFIX: &str = "cluster.";

impl ClusterModel {
    pub fn load(path: &Path) -> Result<Self, ClusterModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterModelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ClusterModelError> {
        let invalid = |message: String| ClusterModelError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let f: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let window = parse_duration(&f.window).map_err(|e| invalid(format!("window: {e}")))?;
        let window_ms = window.as_millis() as i64;
        if window_ms < 60_000 || window_ms % 60_000 != 0 {
            return Err(invalid("window must be a whole number of minutes".into()));
        }
        let slide_ms = match &f.slide {
            None => window_ms,
            Some(s) => parse_duration(s)
                .map_err(|e| invalid(format!("slide: {e}")))?
                .as_millis() as i64,
        };
        if slide_ms < 60_000 || slide_ms % 60_000 != 0 || window_ms % slide_ms != 0 {
            return Err(invalid(
                "slide must be a whole number of minutes that divides window".into(),
            ));
        }
        let probe = Limits {
            window_ms,
            slide_ms,
            max_members: 0,
            sketch_size: 0,
            typical_may_lack: 0,
        };
        // A pane's activity series must be whole slots.
        if slide_ms % probe.slot_ms() != 0 {
            return Err(invalid(format!(
                "slide must be a multiple of window / {} ({} s here)",
                super::agg::SERIES_SLOTS,
                probe.slot_ms() / 1000
            )));
        }
        if f.min_members < 2 || f.max_members < f.min_members {
            return Err(invalid("need 2 <= min_members <= max_members".into()));
        }
        let member_level = Level::parse(&f.member_scores_from).ok_or_else(|| {
            invalid(format!(
                "member_scores_from: no level {:?}",
                f.member_scores_from
            ))
        })?;
        if let Some(k) = f
            .member_kinds
            .iter()
            .find(|k| !super::keys::KINDS.contains(&k.as_str()))
        {
            return Err(invalid(format!(
                "member_kinds: no cluster kind {k:?} (kinds: {:?})",
                super::keys::KINDS
            )));
        }
        let scoring = ScoringModel {
            model_version: f.model_version,
            top_reasons: f.top_reasons,
            levels: f.levels,
            family_caps: Default::default(),
            rules: f.rules,
        };
        scoring.validate().map_err(invalid)?;
        let unknown: Vec<&str> = scoring
            .rules
            .iter()
            .map(|r| r.feature.as_str())
            .filter(|f| !FEATURES.contains(f))
            .collect();
        if !unknown.is_empty() {
            return Err(invalid(format!(
                "rules name features the cluster stage does not compute: {unknown:?} (it computes {FEATURES:?})"
            )));
        }
        Ok(ClusterModel {
            scoring,
            limits: Limits {
                window_ms,
                slide_ms,
                max_members: f.max_members,
                sketch_size: f.sketch_size,
                typical_may_lack: f.typical_may_lack,
            },
            min_members: f.min_members,
            member_level,
            member_kinds: f.member_kinds,
        })
    }

    /// Score one cluster window. A broad key scores 0: a population, not
    /// a cluster.
    pub fn score(&self, cluster: ClusterFeatures) -> ClusterRisk {
        let (score, level, reasons) = if cluster.broad {
            (0.0, Level::Low, Vec::new())
        } else {
            self.scoring.score_values(&cluster.features)
        };
        ClusterRisk {
            cluster,
            score,
            level,
            reasons,
            model_version: self.scoring.model_version.clone(),
        }
    }

    /// The member scores of a cluster at `member_level` or above: one per
    /// typical member, carrying the cluster's score, level and reasons.
    pub fn member_scores(&self, risk: &ClusterRisk) -> Vec<RiskScore> {
        if risk.level < self.member_level
            || risk.cluster.broad
            || !self.member_kinds.contains(&risk.cluster.kind)
        {
            return Vec::new();
        }
        let id = risk.cluster_id();
        let reasons: Vec<Reason> = risk
            .reasons
            .iter()
            .map(|r| Reason {
                feature: format!("{MEMBER_PREFIX}{}", r.feature),
                ..r.clone()
            })
            .collect();
        let features: Vec<(String, Option<f64>)> = risk
            .cluster
            .features
            .iter()
            .map(|(n, v)| (format!("{MEMBER_PREFIX}{n}"), *v))
            .collect();
        let c = &risk.cluster;
        c.members
            .iter()
            .enumerate()
            .filter(|(i, _)| c.typical.get(*i).copied().unwrap_or(false))
            .map(|(i, account)| RiskScore {
                account_id: account.clone(),
                window_start: risk.cluster.window_start,
                window_end: risk.cluster.window_end,
                score: risk.score,
                level: risk.level,
                reasons: reasons.clone(),
                features: features.clone(),
                model_version: risk.model_version.clone(),
                event_count: c.member_requests.get(i).copied().unwrap_or(0),
                response_count: 0,
                revision: 0,
                cluster_id: Some(id.clone()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_model_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs/clusters.toml");
        let m = ClusterModel::load(&path).unwrap();
        assert!(m.limits.max_members >= m.min_members);
    }

    #[test]
    fn unknown_features_are_refused() {
        let text = "model_version = \"x\"\ntop_reasons = 2\nwindow = \"1h\"\nmin_members = 3\nmax_members = 10\n[levels]\nelevated = 0.3\nhigh = 0.6\ncritical = 0.8\n[[rule]]\nfeature = \"nope\"\nweight = 0.5\nlow = 0.0\nhigh = 1.0\n";
        let e = ClusterModel::parse(Path::new("c.toml"), text).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn slides_that_do_not_tile_the_window_are_refused() {
        let text = |window: &str, slide: &str| {
            format!("model_version = \"x\"\ntop_reasons = 2\nwindow = \"{window}\"\nslide = \"{slide}\"\nmin_members = 3\nmax_members = 10\n[levels]\nelevated = 0.3\nhigh = 0.6\ncritical = 0.8\n[[rule]]\nfeature = \"members\"\nweight = 0.5\nlow = 0.0\nhigh = 1.0\n")
        };
        let ok = ClusterModel::parse(Path::new("c.toml"), &text("6h", "1h")).unwrap();
        assert_eq!(
            (ok.limits.window_ms, ok.limits.slide_ms),
            (21_600_000, 3_600_000)
        );
        for (window, slide) in [("6h", "7m"), ("5h", "2h"), ("7h", "1h")] {
            let e = ClusterModel::parse(Path::new("c.toml"), &text(window, slide)).unwrap_err();
            assert!(e.to_string().contains("slide"), "{window}/{slide}: {e}");
        }
    }
}
