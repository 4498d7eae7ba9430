//! The worker's stages without Kafka: records are decoded, windowed, joined,
//! enriched, run through the jobs and scored in memory, as one partition.
//!
//! Used to score labelled traffic in seconds (calibration, evaluation tests)
//! and by tests that pin what the stages do with an imperfect stream. The
//! broker-backed path is exercised by the integration tests.

use std::collections::BTreeMap;

use crate::decode::{RawMessage, RecordDecoder};
use crate::enrich::AccountTable;
use crate::metrics::Metrics;
use crate::process::{Detector, ProcessError};
use crate::schemas::SchemaSet;
use crate::score::RiskScore;
use crate::window::{PartitionWindows, Side, WindowSpec};

/// One Kafka-like record for the simulation.
#[derive(Debug, Clone)]
pub struct SimRecord<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    /// Kafka timestamp.
    pub timestamp_ms: i64,
}

/// Everything a simulated run reads: account records first, then events of
/// both topics in delivery order.
#[derive(Debug, Default)]
pub struct SimInput<'a> {
    pub accounts: Vec<SimRecord<'a>>,
    pub events: Vec<(Side, SimRecord<'a>)>,
}

/// What a simulated run produced.
#[derive(Debug, Default)]
pub struct SimOutput {
    pub scores: Vec<RiskScore>,
    pub metrics: Metrics,
}

fn raw(r: &SimRecord<'_>, offset: i64) -> RawMessage {
    RawMessage {
        partition: 0,
        offset,
        timestamp_ms: Some(r.timestamp_ms),
        key: Some(r.key.as_bytes().to_vec()),
        payload: Some(r.value.to_vec()),
    }
}

/// Score `input` as one partition pair, flushing all windows at the end.
/// Counters follow the worker's (see [`Metrics`]); rejected messages are
/// counted, not routed anywhere.
pub async fn score_stream(
    detector: &Detector,
    input: &SimInput<'_>,
    out_of_orderness_ms: i64,
) -> Result<SimOutput, ProcessError> {
    let set = SchemaSet::builtin();
    let mut out = SimOutput::default();
    let mut accounts = AccountTable::default();
    let acc_msgs: Vec<RawMessage> = input
        .accounts
        .iter()
        .enumerate()
        .map(|(i, r)| raw(r, i as i64))
        .collect();
    let acc = RecordDecoder::new(&set.account, 4096, i64::MAX / 4)?.decode(&acc_msgs)?;
    accounts.apply(&acc.batch)?;
    out.metrics.accounts_in_table = accounts.len() as u64;
    out.metrics.account_versions = accounts.versions() as u64;

    let spec = WindowSpec {
        size_ms: detector.jobs.window_ms,
        out_of_orderness_ms,
        max_response_delay_ms: detector.max_response_delay_ms,
    };
    let mut windows = PartitionWindows::new(0, spec);
    let mut decoders = [
        RecordDecoder::new(&set.request, 8192, 300_000)?,
        RecordDecoder::new(&set.response, 8192, 300_000)?,
    ];
    let mut offsets = [0i64; 2];
    const CHUNK: usize = 4096;
    let mut i = 0;
    while i < input.events.len() {
        // A run of same-side records, as a consumer poll would return them.
        let side = input.events[i].0;
        let idx = usize::from(side == Side::Responses);
        let mut msgs = Vec::new();
        while i < input.events.len() && input.events[i].0 == side && msgs.len() < CHUNK {
            msgs.push(raw(&input.events[i].1, offsets[idx]));
            offsets[idx] += 1;
            i += 1;
        }
        match side {
            Side::Requests => out.metrics.requests_consumed += msgs.len() as u64,
            Side::Responses => out.metrics.responses_consumed += msgs.len() as u64,
        }
        let decoded = decoders[idx].decode(&msgs)?;
        for r in &decoded.rejects {
            out.metrics.reject(r.kind);
        }
        let placed = windows.ingest(side, &decoded.batch)?;
        for _ in &placed.late {
            out.metrics.reject(crate::decode::RejectKind::LateEvent);
        }
        match side {
            Side::Requests => out.metrics.out_of_order_requests += placed.out_of_order as u64,
            Side::Responses => out.metrics.out_of_order_responses += placed.out_of_order as u64,
        }
        close(detector, &mut windows, &accounts, false, &mut out).await?;
    }
    close(detector, &mut windows, &accounts, true, &mut out).await?;
    Ok(out)
}

async fn close(
    detector: &Detector,
    windows: &mut PartitionWindows,
    accounts: &AccountTable,
    flush: bool,
    out: &mut SimOutput,
) -> Result<(), ProcessError> {
    while let Some(w) = windows.close_next(flush) {
        let end = w.end;
        let mut r = detector.score_window(w, accounts).await?;
        windows.note_matched(end, std::mem::take(&mut r.matched_next));
        out.metrics.count_window(&r);
        out.scores.append(&mut r.scores);
    }
    Ok(())
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
