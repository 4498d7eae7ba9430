//! Request ⋈ response: an interval join on `request_id` within the longest
//! response delay, run by DataFusion over one closed window.
//!
//! Duplicates (producer retries) are dropped first, keeping the earliest copy
//! by event time and offset, so a retried event never counts twice. Requests
//! with no response in time stay as request-only rows (`has_response` false).

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::decode::{MSG_COL, OFFSET_COL, PARTITION_COL};
use crate::plan::Prepared;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

/// Response columns carried onto each joined row, renamed where they clash.
const RESPONSE_COLUMNS: &str = "event_time AS response_time, \
    CAST(status AS VARCHAR) AS status, completion_tokens, reasoning_tokens, \
    cached_tokens, finish_reason, latency_ms";

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
    format!(
        "WITH req AS (
            SELECT * FROM (
                SELECT *, row_number() OVER (PARTITION BY request_id ORDER BY event_time, {PARTITION_COL}, {OFFSET_COL}) AS _rn
                FROM requests) WHERE _rn = 1
        ), resp AS (
            SELECT request_id AS _resp_request_id, account_id AS _resp_account_id, {RESPONSE_COLUMNS}
            FROM (
                SELECT *, row_number() OVER (PARTITION BY request_id ORDER BY event_time, {PARTITION_COL}, {OFFSET_COL}) AS _rn
                FROM responses) WHERE _rn = 1
        )
        SELECT {cols},
            resp.response_time, resp.status, resp.completion_tokens, resp.reasoning_tokens,
            resp.cached_tokens, resp.finish_reason, resp.latency_ms,
            resp._resp_request_id IS NOT NULL AS has_response
        FROM req LEFT JOIN resp
          ON req.request_id = resp._resp_request_id
         AND req.account_id = resp._resp_account_id
         AND resp.response_time >= req.event_time
         AND resp.response_time <= req.event_time + INTERVAL '{max_response_delay_ms} milliseconds'
        ORDER BY req.account_id, req.event_time, req.request_id",
        cols = request_cols.join(", "),
    )
}
