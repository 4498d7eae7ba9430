//! Helpers of the tests that compare two evaluations window by window on
//! generated traffic: the worker's decoder over real Avro, rows split by
//! window.

use std::collections::BTreeMap;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMillisecondType;

use distill_watch::decode::{RawMessage, RecordDecoder};
use distill_watch_traffic::Record;

pub fn decode(
    decoder: &mut RecordDecoder,
    records: &[Record],
    partitions: i32,
) -> Vec<RecordBatch> {
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
pub fn by_window(
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
