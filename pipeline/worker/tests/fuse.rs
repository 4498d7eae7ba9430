//! Raw jobs evaluated together in one aggregation (`distill_watch::fuse`)
//! give exactly the batches each job gives alone (schema, rows, order),
//! window after window, on generated traffic with its accounts: the shipped
//! jobs, real Avro, the worker's decoder, join and enrichment.

mod common;

use std::path::Path;

use common::{by_window, decode};
use distill_watch::decode::RecordDecoder;
use distill_watch::process::Detector;
use distill_watch::schemas::SchemaSet;
use distill_watch::simulate::account_table;
use distill_watch_traffic::Scenario;

const WINDOW: i64 = 600_000;
const DELAY: i64 = 120_000;

#[tokio::test]
async fn fused_jobs_give_the_batches_each_job_gives_alone() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let detector = Detector::load(&root.join("jobs"), &root.join("jobs/scoring.toml"), DELAY)
        .await
        .unwrap();
    // The shipped jobs have such a group: the seven of that shape with no
    // lateness (harvest, of the same shape but with a lateness, runs
    // alone). If none were fused, this test would compare nothing.
    let fused: Vec<Vec<&str>> = detector
        .jobs
        .fused
        .iter()
        .map(|g| g.jobs().collect())
        .collect();
    let fused_jobs: usize = fused.iter().map(|g| g.len()).sum();
    assert!(fused_jobs >= 6, "fused groups: {fused:?}");
    assert!(
        fused.iter().flatten().any(|n| *n == "volume"),
        "fused groups: {fused:?}"
    );

    let scenario = Scenario::builtin("ci").unwrap();
    let traffic = distill_watch_traffic::generate(&scenario, 11, 0.5);
    let accounts: Vec<(&str, &[u8], i64)> = traffic
        .accounts
        .iter()
        .map(|r| (r.key.as_str(), r.value.as_slice(), r.deliver_ms))
        .collect();
    let accounts = account_table(&accounts).unwrap();
    let set = SchemaSet::builtin();
    let mut rd = RecordDecoder::new(&set.request, 4096, i64::MAX / 4).unwrap();
    let mut sd = RecordDecoder::new(&set.response, 4096, i64::MAX / 4).unwrap();
    let window_of = |t: i64| t.div_euclid(WINDOW);
    let requests = by_window(&decode(&mut rd, &traffic.requests, 1), window_of);
    let responses = by_window(&decode(&mut sd, &traffic.responses, 1), window_of);

    let (mut windows, mut rows) = (0, 0);
    for (w, reqs) in &requests {
        let mut resps = responses.get(w).cloned().unwrap_or_default();
        resps.extend(responses.get(&(w + 1)).cloned().unwrap_or_default());
        let start = w * WINDOW;
        let (events, _, _) = detector
            .events(reqs.clone(), resps, &accounts, start, start + WINDOW)
            .await
            .unwrap();
        let together = detector.run_raw(events.clone(), |_| true).await.unwrap();
        let alone = detector.run_raw_alone(events).await.unwrap();
        let names = |o: &[(String, arrow::array::RecordBatch)]| -> Vec<String> {
            o.iter().map(|(n, _)| n.clone()).collect()
        };
        assert_eq!(names(&together), names(&alone), "window {w}");
        for ((name, t), (_, a)) in together.iter().zip(&alone) {
            assert_eq!(t.schema(), a.schema(), "window {w}, job {name}");
            assert_eq!(t, a, "window {w}, job {name}");
            rows += a.num_rows();
        }
        windows += 1;
    }
    assert!(windows >= 10, "{windows} windows");
    assert!(rows >= 1_000, "{rows} job output rows");
}
