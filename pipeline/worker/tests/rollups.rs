//! Roll-ups give what the same aggregation over raw events gives: the
//! shipped `hourly` and `daily` jobs (over 10-minute `volume` windows, then
//! over hours) against jobs computing the same features straight from the
//! events of an hour and of a day, on generated traffic that crosses
//! midnight. Real Avro, the real worker loop, the in-memory broker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use distill_watch::process::Detector;
use distill_watch::score::RiskScore;
use distill_watch::simulate::score_stream;
use distill_watch_traffic::Scenario;

const HOUR: i64 = 3_600_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A jobs directory with one job over raw events with a `window`-long base
/// window, computing the same features as a shipped roll-up.
fn raw_jobs(name: &str, window: &str, sql: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dw-rollup-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.sql")),
        format!("-- name: {name}\n-- input: events\n-- key: account_id\n-- window: tumble {window}\n{sql}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("scoring.toml"),
        format!("model_version = \"t\"\ntop_reasons = 1\n[levels]\nelevated = 0.3\nhigh = 0.6\ncritical = 0.8\n[[rule]]\nfeature = \"requests_{window}\"\nweight = 1.0\nlow = 1.0\nhigh = 2.0\n"),
    )
    .unwrap();
    dir
}

/// (account, window end) → the named features, from every score that
/// carries them.
fn features(scores: &[RiskScore], names: &[&str]) -> BTreeMap<(String, i64), Vec<f64>> {
    let mut out = BTreeMap::new();
    for s in scores {
        let vals: Vec<f64> = names
            .iter()
            .filter_map(|n| {
                s.features
                    .iter()
                    .find(|(f, _)| f == n)
                    .and_then(|(_, v)| *v)
            })
            .collect();
        if vals.len() == names.len() {
            assert!(
                out.insert((s.account_id.clone(), s.window_end), vals)
                    .is_none(),
                "two scores for {} at {}",
                s.account_id,
                s.window_end
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn hourly_and_daily_roll_ups_equal_the_same_sql_over_raw_events() {
    // Five hours across midnight, without streaming faults: a late event
    // is rightly late for a 10-minute window and not for a day, which
    // would make the two sides differ for a reason that is not the roll-up.
    let mut scenario = Scenario::builtin("ci").unwrap();
    scenario.start_ms -= 2 * HOUR;
    scenario.duration_ms = 5 * HOUR;
    scenario.realism.enabled = false;
    let t = distill_watch_traffic::generate(&scenario, 3, 0.1);
    let input = t.sim_input();
    let delay = scenario.realism.max_response_delay.as_millis() as i64;
    let ooo = scenario.realism.out_of_orderness.as_millis() as i64;
    let run = |jobs: PathBuf, model: PathBuf| {
        let input = &input;
        async move {
            let d = Detector::load(&jobs, &model, delay).await.unwrap();
            score_stream(&d, input, ooo).await.unwrap().scores
        }
    };
    let shipped = run(root().join("jobs"), root().join("jobs/scoring.toml")).await;
    let hourly_raw = raw_jobs(
        "hourly",
        "1h",
        "SELECT account_id, count(*) AS requests_1h,
            sum(coalesce(completion_tokens, 0) + coalesce(reasoning_tokens, 0)) AS output_tokens_1h,
            count(DISTINCT CAST(event_time AS BIGINT) / 600000) AS active_windows_1h
         FROM events GROUP BY account_id",
    );
    let daily_raw = raw_jobs(
        "daily",
        "1d",
        "SELECT account_id, count(*) AS requests_1d,
            sum(coalesce(completion_tokens, 0) + coalesce(reasoning_tokens, 0)) AS output_tokens_1d,
            count(DISTINCT date_trunc('hour', event_time)) AS active_hours_1d
         FROM events GROUP BY account_id",
    );
    let by_hour = run(hourly_raw.clone(), hourly_raw.join("scoring.toml")).await;
    let by_day = run(daily_raw.clone(), daily_raw.join("scoring.toml")).await;

    let hourly = ["requests_1h", "output_tokens_1h", "active_windows_1h"];
    let rolled = features(&shipped, &hourly);
    let raw = features(&by_hour, &hourly);
    assert!(
        rolled.len() > 100,
        "too few hourly rows to compare: {}",
        rolled.len()
    );
    assert_eq!(
        rolled
            .keys()
            .map(|k| k.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        5
    );
    assert_eq!(rolled, raw, "hourly roll-up vs the hour's raw events");

    let daily = ["requests_1d", "output_tokens_1d", "active_hours_1d"];
    let rolled = features(&shipped, &daily);
    let raw = features(&by_day, &daily);
    let days: std::collections::BTreeSet<i64> = rolled.keys().map(|k| k.1).collect();
    assert_eq!(days.len(), 2, "the traffic crosses midnight: two days");
    assert_eq!(rolled, raw, "daily roll-up vs the day's raw events");
    // Nothing lost or counted twice on the way up: the day's requests are
    // the requests scored in 10-minute windows.
    let per_window: i64 = shipped.iter().map(|s| s.event_count).sum();
    let per_day: f64 = rolled.values().map(|v| v[0]).sum();
    assert_eq!(per_window as f64, per_day);
    for d in [hourly_raw, daily_raw] {
        std::fs::remove_dir_all(d).ok();
    }
}
