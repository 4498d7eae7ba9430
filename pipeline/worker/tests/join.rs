//! The native request ⋈ response join gives exactly the rows, order and
//! schema of the SQL that specifies it, window after window, on generated
//! traffic carrying every streaming fault (duplicates, reordering, slow
//! responses, lost requests, late events): real Avro, the worker's decoder.

mod common;

use arrow::array::AsArray;

use common::{by_window, decode};
use distill_watch::decode::RecordDecoder;
use distill_watch::join::{join_native, join_window_sql, prepare_join};
use distill_watch::schemas::SchemaSet;
use distill_watch_traffic::Scenario;

const WINDOW: i64 = 600_000;
const DELAY: i64 = 120_000;

#[tokio::test]
async fn the_native_join_equals_the_sql_join_on_faulty_traffic() {
    let scenario = Scenario::builtin("ci").unwrap();
    let traffic = distill_watch_traffic::generate(&scenario, 7, 0.5);
    let set = SchemaSet::builtin();
    let mut rd = RecordDecoder::new(&set.request, 4096, i64::MAX / 4).unwrap();
    let mut sd = RecordDecoder::new(&set.response, 4096, i64::MAX / 4).unwrap();
    let requests = by_window(&decode(&mut rd, &traffic.requests, 3), |t| {
        t.div_euclid(WINDOW)
    });
    // A window's responses: its own and those of the next window (the
    // slowest answer to its last request lands there).
    let responses = by_window(&decode(&mut sd, &traffic.responses, 3), |t| {
        t.div_euclid(WINDOW)
    });
    let join = prepare_join(&rd.output_schema(), &sd.output_schema(), DELAY)
        .await
        .unwrap();
    let (mut windows, mut rows, mut answered, mut input_rows) = (0, 0, 0, 0);
    for (w, reqs) in &requests {
        let mut resps = responses.get(w).cloned().unwrap_or_default();
        resps.extend(responses.get(&(w + 1)).cloned().unwrap_or_default());
        if resps.is_empty() {
            continue;
        }
        let native = join_native(&join.schema(), reqs, &resps, DELAY)
            .unwrap()
            .expect("decoded columns have the types the native join reads");
        let sql = join_window_sql(&join, reqs.clone(), resps).await.unwrap();
        assert_eq!(native.schema(), sql.schema(), "window {w}");
        assert_eq!(native, sql, "window {w}");
        windows += 1;
        rows += native.num_rows();
        input_rows += reqs.iter().map(|b| b.num_rows()).sum::<usize>();
        answered += native
            .column_by_name("has_response")
            .unwrap()
            .as_boolean()
            .true_count();
    }
    // The comparison covered real work: many windows, requests answered
    // and not, duplicates dropped.
    assert!(windows >= 10, "{windows} windows");
    assert!(
        answered > 0 && answered < rows,
        "{answered} of {rows} answered"
    );
    assert!(
        rows < input_rows,
        "duplicates should have been dropped: {rows} rows of {input_rows} requests"
    );
}
