//! The native request ⋈ response join gives exactly the rows, order and
//! schema of the SQL that specifies it, window after window, on generated
//! traffic carrying every streaming fault (duplicates, reordering, slow
//! responses, lost requests, late events): real Avro, the worker's decoder.

use std::collections::BTreeMap;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMillisecondType;

use distill_watch::decode::{RawMessage, RecordDecoder};
use distill_watch::join::{join_native, join_window_sql, prepare_join};
use distill_watch::schemas::SchemaSet;
use distill_watch_traffic::{Record, Scenario};

const WINDOW: i64 = 600_000;
const DELAY: i64 = 120_000;

fn decode(decoder: &mut RecordDecoder, records: &[Record], partitions: i32) -> Vec<RecordBatch> {
    records
        .chunks(4096)
        .enumerate()
        .map(|(n, chunk)| {
            let msgs: Vec<RawMessage> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let offset = (n * 4096 + i) as i64;
                    RawMessage {
                        // Several partitions and their own offsets, as a
                        // window of one partition pair never has, so ties on
                        // event time are broken by partition too.
                        partition: (offset % partitions as i64) as i32,
                        offset: offset / partitions as i64,
                        timestamp_ms: Some(r.deliver_ms),
                        key: Some(r.key.as_bytes().to_vec().into()),
                        payload: Some(r.value.clone().into()),
                    }
                })
                .collect();
            decoder.decode(&msgs).unwrap().batch
        })
        .collect()
}

/// Rows of `batches` by the window their event time falls in.
fn by_window(
    batches: &[RecordBatch],
    window_of: impl Fn(i64) -> i64,
) -> BTreeMap<i64, Vec<RecordBatch>> {
    let mut out: BTreeMap<i64, Vec<RecordBatch>> = BTreeMap::new();
    for b in batches {
        let t = b
            .column_by_name("event_time")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let mut windows: Vec<i64> = (0..b.num_rows()).map(|i| window_of(t.value(i))).collect();
        windows.sort_unstable();
        windows.dedup();
        for w in windows {
            let mask: arrow::array::BooleanArray = (0..b.num_rows())
                .map(|i| Some(window_of(t.value(i)) == w))
                .collect();
            out.entry(w)
                .or_default()
                .push(arrow::compute::filter_record_batch(b, &mask).unwrap());
        }
    }
    out
}

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
