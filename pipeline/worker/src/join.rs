//! Request ⋈ response: an interval join on `request_id` within the longest
//! response delay, over one closed window.
//!
//! Duplicates (producer retries) are dropped first, keeping the earliest copy
//! by event time and offset, so a retried event never counts twice. Requests
//! with no response in time stay as request-only rows (`has_response` false).
//!
//! The SQL in [`join_sql`] is the specification, and gives the `events`
//! table its schema. [`join_native`] computes the same rows with a hash map
//! and Arrow's `take` (a test holds the two equal on generated traffic with
//! every streaming fault): at a window's size the SQL plan's window
//! functions and sorts cost ten times more than the join itself.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{cast, concat_batches, take};
use arrow::datatypes::{
    DataType, Int32Type, Int64Type, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use arrow::error::ArrowError;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::decode::{MSG_COL, OFFSET_COL, PARTITION_COL};
use crate::plan::Prepared;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
}

/// Response columns carried onto each joined row under their own names
/// (besides `event_time`, carried as `response_time`).
const CARRIED: [&str; 6] = [
    "status",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "finish_reason",
    "latency_ms",
];

/// A DataFusion context for one window: one partition, so aggregation order
/// and therefore floating-point results are the same on every run.
pub fn window_context() -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    let ctx = SessionContext::new_with_config(config);
    crate::functions::register(&ctx);
    ctx
}

/// The join, planned once: requests and responses are bound per window.
pub async fn prepare_join(
    request_schema: &SchemaRef,
    response_schema: &SchemaRef,
    max_response_delay_ms: i64,
) -> Result<Prepared, JoinError> {
    let sql = join_sql(request_schema, max_response_delay_ms);
    Ok(Prepared::plan(
        window_context(),
        &sql,
        &[
            ("requests", request_schema.clone()),
            ("responses", response_schema.clone()),
        ],
    )
    .await?)
}

/// Join a window's requests with the responses that may answer them.
/// Output rows are sorted by (account_id, event_time, request_id).
pub async fn join_window(
    join: &Prepared,
    requests: Vec<RecordBatch>,
    responses: Vec<RecordBatch>,
    max_response_delay_ms: i64,
) -> Result<RecordBatch, JoinError> {
    if let Some(joined) = join_native(&join.schema(), &requests, &responses, max_response_delay_ms)?
    {
        return Ok(joined);
    }
    join_window_sql(join, requests, responses).await
}

/// [`join_window`] through the SQL plan.
pub async fn join_window_sql(
    join: &Prepared,
    requests: Vec<RecordBatch>,
    responses: Vec<RecordBatch>,
) -> Result<RecordBatch, JoinError> {
    let batches = join
        .run(vec![
            ("requests".to_string(), requests),
            ("responses".to_string(), responses),
        ])
        .await?;
    Ok(arrow::compute::concat_batches(&join.schema(), &batches)
        .map_err(datafusion::error::DataFusionError::from)?)
}

fn join_sql(request_schema: &SchemaRef, max_response_delay_ms: i64) -> String {
    let request_cols: Vec<String> = request_schema
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|n| n.as_str() != MSG_COL)
        .map(|n| format!("req.\"{n}\""))
        .collect();
    // `status` is an enum on the wire, text in `events`.
    let carried: Vec<String> = CARRIED
        .iter()
        .map(|c| match *c {
            "status" => "CAST(status AS VARCHAR) AS status".to_string(),
            c => c.to_string(),
        })
        .collect();
    let selected: Vec<String> = CARRIED.iter().map(|c| format!("resp.{c}")).collect();
    format!(
        "WITH req AS (
            SELECT * FROM (
                SELECT *, row_number() OVER (PARTITION BY request_id ORDER BY event_time, {PARTITION_COL}, {OFFSET_COL}) AS _rn
                FROM requests) WHERE _rn = 1
        ), resp AS (
            SELECT request_id AS _resp_request_id, account_id AS _resp_account_id,
                event_time AS response_time, {carried}
            FROM (
                SELECT *, row_number() OVER (PARTITION BY request_id ORDER BY event_time, {PARTITION_COL}, {OFFSET_COL}) AS _rn
                FROM responses) WHERE _rn = 1
        )
        SELECT {cols}, resp.response_time, {selected},
            resp._resp_request_id IS NOT NULL AS has_response
        FROM req LEFT JOIN resp
          ON req.request_id = resp._resp_request_id
         AND req.account_id = resp._resp_account_id
         AND resp.response_time >= req.event_time
         AND resp.response_time <= req.event_time + INTERVAL '{max_response_delay_ms} milliseconds'
        ORDER BY req.account_id, req.event_time, req.request_id",
        cols = request_cols.join(", "),
        carried = carried.join(", "),
        selected = selected.join(", "),
    )
}

/// Columns both sides need for de-duplication and matching.
struct Keys<'a> {
    request_id: &'a StringArray,
    account_id: &'a StringArray,
    event_time: &'a TimestampMillisecondArray,
    partition: &'a Int32Array,
    offset: &'a Int64Array,
}

impl<'a> Keys<'a> {
    /// `None` when a column is missing or not of the type the decoder
    /// gives it (the SQL path then takes over).
    fn of(batch: &'a RecordBatch) -> Option<Keys<'a>> {
        let col = |name: &str| batch.column_by_name(name);
        let string = |name: &str| col(name)?.as_string_opt::<i32>();
        let time = col("event_time")?;
        if !matches!(
            time.data_type(),
            DataType::Timestamp(TimeUnit::Millisecond, _)
        ) {
            return None;
        }
        Some(Keys {
            request_id: string("request_id")?,
            account_id: string("account_id")?,
            event_time: time.as_primitive_opt::<TimestampMillisecondType>()?,
            partition: col(PARTITION_COL)?.as_primitive_opt::<Int32Type>()?,
            offset: col(OFFSET_COL)?.as_primitive_opt::<Int64Type>()?,
        })
    }

    fn id(&self, i: usize) -> Option<&'a str> {
        self.request_id
            .is_valid(i)
            .then(|| self.request_id.value(i))
    }

    fn account(&self, i: usize) -> Option<&'a str> {
        self.account_id
            .is_valid(i)
            .then(|| self.account_id.value(i))
    }

    fn time(&self, i: usize) -> Option<i64> {
        self.event_time
            .is_valid(i)
            .then(|| self.event_time.value(i))
    }

    /// `ORDER BY event_time, _partition, _offset` (ascending, NULLs last).
    fn copy_order(&self, a: usize, b: usize) -> Ordering {
        let p = |x: &Int32Array, i: usize| x.is_valid(i).then(|| x.value(i));
        let o = |x: &Int64Array, i: usize| x.is_valid(i).then(|| x.value(i));
        nulls_last(self.time(a), self.time(b))
            .then_with(|| nulls_last(p(self.partition, a), p(self.partition, b)))
            .then_with(|| nulls_last(o(self.offset, a), o(self.offset, b)))
    }

    /// The first copy of each request id (NULL ids are one group, as in
    /// SQL's `PARTITION BY`).
    fn first_copies(&self, rows: usize) -> HashMap<Option<&'a str>, usize> {
        let mut first: HashMap<Option<&'a str>, usize> = HashMap::with_capacity(rows);
        for i in 0..rows {
            first
                .entry(self.id(i))
                .and_modify(|j| {
                    if self.copy_order(i, *j) == Ordering::Less {
                        *j = i;
                    }
                })
                .or_insert(i);
        }
        first
    }
}

fn nulls_last<T: Ord>(a: Option<T>, b: Option<T>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The rows [`join_sql`] gives, in its order and with its schema
/// (`out_schema`), computed directly. `Ok(None)` when a column is not of the
/// type expected, for the SQL path to handle.
pub fn join_native(
    out_schema: &SchemaRef,
    requests: &[RecordBatch],
    responses: &[RecordBatch],
    max_response_delay_ms: i64,
) -> Result<Option<RecordBatch>, ArrowError> {
    let (Some(first_req), Some(first_resp)) = (requests.first(), responses.first()) else {
        // One side empty: rare (idle windows); not worth a second code path.
        return Ok(None);
    };
    let req = concat_batches(&first_req.schema(), requests)?;
    let resp = concat_batches(&first_resp.schema(), responses)?;
    let (Some(rk), Some(sk)) = (Keys::of(&req), Keys::of(&resp)) else {
        return Ok(None);
    };
    let answers = sk.first_copies(resp.num_rows());
    let mut kept: Vec<(usize, Option<usize>)> = rk
        .first_copies(req.num_rows())
        .into_values()
        .map(|i| {
            let answer = rk.id(i).and_then(|id| answers.get(&Some(id)).copied());
            let matched = answer.filter(|&j| {
                let same_account =
                    matches!((rk.account(i), sk.account(j)), (Some(a), Some(b)) if a == b);
                let in_time = matches!((rk.time(i), sk.time(j)),
                    (Some(t), Some(r)) if r >= t && r <= t + max_response_delay_ms);
                same_account && in_time
            });
            (i, matched)
        })
        .collect();
    // ORDER BY account_id, event_time, request_id (ascending, NULLs last);
    // request ids are unique after de-duplication, so the order is total.
    kept.sort_unstable_by(|&(a, _), &(b, _)| {
        nulls_last(rk.account(a), rk.account(b))
            .then_with(|| nulls_last(rk.time(a), rk.time(b)))
            .then_with(|| nulls_last(rk.id(a), rk.id(b)))
    });
    let req_idx = UInt32Array::from_iter_values(kept.iter().map(|&(i, _)| i as u32));
    let resp_idx: UInt32Array = kept.iter().map(|&(_, j)| j.map(|j| j as u32)).collect();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
    for field in out_schema.fields() {
        let from_response = |name: &str| -> Result<Option<ArrayRef>, ArrowError> {
            resp.column_by_name(name)
                .map(|c| take(c.as_ref(), &resp_idx, None))
                .transpose()
        };
        let column = match field.name().as_str() {
            "response_time" => from_response("event_time")?,
            "has_response" => Some(Arc::new(
                kept.iter()
                    .map(|&(_, j)| Some(j.is_some()))
                    .collect::<BooleanArray>(),
            ) as ArrayRef),
            name if CARRIED.contains(&name) => from_response(name)?,
            name => req
                .column_by_name(name)
                .map(|c| take(c.as_ref(), &req_idx, None))
                .transpose()?,
        };
        let Some(column) = column else {
            return Ok(None);
        };
        columns.push(if column.data_type() == field.data_type() {
            column
        } else {
            cast(&column, field.data_type())?
        });
    }
    Ok(Some(RecordBatch::try_new(out_schema.clone(), columns)?))
}
