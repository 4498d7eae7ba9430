//! The worker's stages without Kafka: generated records are decoded,
//! windowed, joined, enriched, run through the jobs and scored in memory.
//!
//! Used to calibrate jobs and the model against the generator in seconds,
//! and by the unit test that pins the separation of campaigns from traps.
//! The broker-backed path is exercised by the integration tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::decode::{RawMessage, RecordDecoder};
use crate::enrich::AccountTable;
use crate::gen::{Record, Traffic};
use crate::process::{Detector, ProcessError};
use crate::schemas::SchemaSet;
use crate::score::RiskScore;
use crate::window::{PartitionWindows, Side, WindowSpec};

/// Score `traffic` as one partition, flushing all windows at the end.
pub async fn score_traffic(
    detector: &Detector,
    traffic: &Traffic,
    out_of_orderness_ms: i64,
) -> Result<Vec<RiskScore>, ProcessError> {
    let set = SchemaSet::builtin();
    let raw = |records: &[Record]| -> Vec<RawMessage> {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| RawMessage {
                partition: 0,
                offset: i as i64,
                timestamp_ms: Some(r.event_time_ms),
                key: Some(r.key.as_bytes().to_vec()),
                payload: Some(r.value.clone()),
            })
            .collect()
    };
    let mut accounts = AccountTable::default();
    let acc =
        RecordDecoder::new(&set.account, 4096, i64::MAX / 4)?.decode(&raw(&traffic.accounts))?;
    accounts.apply(&acc.batch)?;

    let spec = WindowSpec {
        size_ms: detector.jobs.window_ms,
        out_of_orderness_ms,
        max_response_delay_ms: detector.max_response_delay_ms,
        idle_timeout: Duration::from_secs(3600),
    };
    let now = Instant::now();
    let mut windows = PartitionWindows::new(0, spec, now);
    let mut req_dec = RecordDecoder::new(&set.request, 8192, 300_000)?;
    let mut resp_dec = RecordDecoder::new(&set.response, 8192, 300_000)?;
    let requests = raw(&traffic.requests);
    let responses = raw(&traffic.responses);
    let mut scores = Vec::new();
    // Interleave the two topics by event time in chunks, as a consumer
    // reading both would see them.
    let (mut i, mut j) = (0, 0);
    const CHUNK: usize = 8192;
    while i < requests.len() || j < responses.len() {
        let take_req = j >= responses.len()
            || (i < requests.len()
                && traffic.requests[i].event_time_ms <= traffic.responses[j].event_time_ms);
        let (side, slice) = if take_req {
            let end = (i + CHUNK).min(requests.len());
            let s = &requests[i..end];
            i = end;
            (Side::Requests, s)
        } else {
            let end = (j + CHUNK).min(responses.len());
            let s = &responses[j..end];
            j = end;
            (Side::Responses, s)
        };
        let decoded = match side {
            Side::Requests => req_dec.decode(slice)?,
            Side::Responses => resp_dec.decode(slice)?,
        };
        windows.ingest(side, &decoded.batch)?;
        for w in windows.close_ready(now, false) {
            scores.extend(detector.score_window(w, &accounts).await?.scores);
        }
    }
    for w in windows.close_ready(now, true) {
        scores.extend(detector.score_window(w, &accounts).await?.scores);
    }
    Ok(scores)
}

/// Highest score per account.
pub fn max_by_account(scores: &[RiskScore]) -> BTreeMap<String, &RiskScore> {
    let mut out: BTreeMap<String, &RiskScore> = BTreeMap::new();
    for s in scores {
        let e = out.entry(s.account_id.clone()).or_insert(s);
        if s.score > e.score {
            *e = s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::{generate, GenConfig};
    use crate::score::Level;
    use std::path::Path;

    /// The default jobs and model separate every campaign from every benign
    /// trap of the generator (the acceptance bar of the integration test,
    /// checked here without a broker).
    #[tokio::test(flavor = "multi_thread")]
    async fn default_model_separates_campaigns_from_traps() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let detector = Detector::load(&root.join("jobs"), &root.join("jobs/scoring.toml"), 120_000)
            .await
            .unwrap();
        let traffic = generate(&GenConfig {
            scale: 0.25,
            ..GenConfig::default()
        });
        let scores = score_traffic(&detector, &traffic, 30_000).await.unwrap();
        let max = max_by_account(&scores);
        let mut missed = Vec::new();
        let mut false_pos = Vec::new();
        for t in &traffic.truth {
            let s = max.get(&t.account_id);
            let level = s.map_or(Level::Low, |s| s.level);
            match (&t.campaign, level >= Level::High) {
                (Some(_), false) => missed.push(format!(
                    "{} ({}) max {:?}",
                    t.account_id,
                    t.population,
                    s.map(|s| (s.score, &s.reasons))
                )),
                (None, true) => false_pos.push(format!(
                    "{} ({}) max {:?}",
                    t.account_id,
                    t.population,
                    s.map(|s| (s.score, &s.reasons))
                )),
                _ => {}
            }
        }
        assert!(
            missed.is_empty() && false_pos.is_empty(),
            "missed: {missed:#?}\nfalse positives: {false_pos:#?}"
        );
        assert!(traffic.campaign_accounts().count() > 10);
    }
}

#[cfg(test)]
mod calibration {
    use super::*;
    use crate::gen::{generate, GenConfig};
    use std::path::Path;

    /// Prints per-population score and feature summaries; run with
    /// `cargo test -p distill-watch --lib calibration -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread")]
    #[ignore]
    async fn print_population_summary() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let detector = Detector::load(&root.join("jobs"), &root.join("jobs/scoring.toml"), 120_000)
            .await
            .unwrap();
        let scale: f64 = std::env::var("SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.25);
        let traffic = generate(&GenConfig {
            scale,
            ..GenConfig::default()
        });
        let t0 = Instant::now();
        let scores = score_traffic(&detector, &traffic, 30_000).await.unwrap();
        println!("{} scores in {:?}", scores.len(), t0.elapsed());
        let pop: BTreeMap<&str, &str> = traffic
            .truth
            .iter()
            .map(|t| (t.account_id.as_str(), t.population.as_str()))
            .collect();
        // population -> (n accounts, max of max score, min of max score, feature sums at max window)
        let max = max_by_account(&scores);
        let mut by_pop: BTreeMap<&str, Vec<&RiskScore>> = BTreeMap::new();
        for (a, s) in &max {
            by_pop
                .entry(pop.get(a.as_str()).copied().unwrap_or("?"))
                .or_default()
                .push(s);
        }
        for (p, list) in &by_pop {
            let scores: Vec<f64> = list.iter().map(|s| s.score).collect();
            let min = scores.iter().cloned().fold(f64::MAX, f64::min);
            let maxv = scores.iter().cloned().fold(f64::MIN, f64::max);
            println!(
                "\n== {p}: {} accounts, max-window score min {min:.3} max {maxv:.3}",
                list.len()
            );
            let worst = if p.contains("hydra") || p.contains("cot") || p.contains("logit") {
                list.iter()
                    .min_by(|a, b| a.score.total_cmp(&b.score))
                    .unwrap()
            } else {
                list.iter()
                    .max_by(|a, b| a.score.total_cmp(&b.score))
                    .unwrap()
            };
            println!(
                "   edge account {} score {:.3} events {}",
                worst.account_id, worst.score, worst.event_count
            );
            for r in &worst.reasons {
                println!(
                    "     {:<28} value {:>10.4} +{:.3}",
                    r.feature, r.value, r.contribution
                );
            }
            let feats: Vec<String> = worst
                .features
                .iter()
                .map(|(n, v)| format!("{n}={}", v.map_or("-".into(), |v| format!("{v:.3}"))))
                .collect();
            println!("   features: {}", feats.join(" "));
        }
    }
}
