//! An in-memory broker for the worker loop: the same [`WorkerLoop`] as in
//! production, over a consumer group, logs, transactions and commits that a
//! test controls step by step (the way FoundationDB and TigerBeetle test).
//!
//! What it models of Kafka: append-only partition logs; a consumer group
//! with eager rebalancing and the range assignor, whose members start at the
//! committed offsets; a member that stops polling keeps its partitions until
//! it is removed (its session expiring); offsets and outputs of a cycle
//! commit atomically, refused from a member of an older generation or from
//! a partition writer that a newer one fenced; aborted cycles are never
//! visible. What a test can inject: crashes (drop a worker), members joining
//! and leaving, commits that fail before or after they took effect, and
//! redelivery of messages already fetched.
//!
//! [`score_stream`] scores labelled traffic in memory through it (one
//! partition), for calibration and tests that need no broker.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::config::Config;
use crate::decode::{RawMessage, RecordDecoder};
use crate::enrich::AccountTable;
use crate::io::{Accounts, Membership, Opened, Sink, Source};
use crate::metrics::{Metrics, StageTimes};
use crate::process::{Detector, ProcessError};
use crate::rollup::{decode_rows, encode_rows, RollupRecord};
use crate::schemas::SchemaSet;
use crate::score::RiskScore;
use crate::sink::{encode_score, Cycle};
use crate::source::{Change, Polled, SourceError, TopicPartition};
use crate::window::{Resume, Side};
use crate::worker::{Progress, Step, WorkerError, WorkerLoop};

/// The seeded generator of the simulation and of the tests that drive it: a
/// 64-bit linear congruential generator, small and the same sequence for a
/// seed everywhere, so a failing seed reproduces.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// A committed DLQ record: original key and value, why, and where from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DlqOut {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub kind: &'static str,
    pub detail: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
}

/// Everything committed to the output topics, in commit order.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// (key, Avro value) as produced to the scores topic.
    pub scores: Vec<(Vec<u8>, Vec<u8>)>,
    /// The same scores, decoded.
    pub score_records: Vec<RiskScore>,
    pub dlq: Vec<DlqOut>,
    pub commits: u64,
}

/// How the next commit fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFault {
    /// Refused: nothing of the cycle is committed.
    Before,
    /// Committed, but the worker hears an error (a lost acknowledgement).
    After,
}

#[derive(Debug, Default)]
struct Member {
    assignment: Vec<TopicPartition>,
    paused: std::collections::BTreeSet<TopicPartition>,
    positions: BTreeMap<TopicPartition, i64>,
    changes: Vec<Change>,
    generation: u64,
}

struct Inner {
    topics: [String; 2],
    partitions: i32,
    logs: [Vec<Vec<RawMessage>>; 2],
    members: BTreeMap<u64, Member>,
    next_member: u64,
    generation: u64,
    committed: BTreeMap<TopicPartition, i64>,
    checkpoints: BTreeMap<i32, BTreeMap<Side, Resume>>,
    /// Held roll-up rows per input partition, as Arrow IPC bytes (what the
    /// checkpoint topic holds): (job, window end) → rows.
    rollups: BTreeMap<i32, BTreeMap<(String, i64), Vec<u8>>>,
    writers: BTreeMap<i32, u64>,
    next_writer: u64,
    faults: VecDeque<CommitFault>,
    outputs: Outputs,
    /// Whether commits keep the scores in `outputs` (the tests read them);
    /// a benchmark counts and encodes them only, as a Kafka sink does.
    keep_scores: bool,
    /// Decides how polls interleave partitions and topics.
    rng: Rng,
}

impl Inner {
    /// Eager rebalance with the range assignor over the members by id.
    fn rebalance(&mut self) {
        self.generation += 1;
        let ids: Vec<u64> = self.members.keys().copied().collect();
        let n = self.partitions as usize;
        let m = ids.len().max(1);
        let mut start = 0;
        for (i, id) in ids.iter().enumerate() {
            let count = n / m + usize::from(i < n % m);
            let parts: Vec<TopicPartition> = (start..start + count)
                .flat_map(|p| Side::BOTH.map(|s| (s, p as i32)))
                .collect();
            start += count;
            let positions = parts
                .iter()
                .map(|tp| (*tp, self.committed.get(tp).copied().unwrap_or(0)))
                .collect();
            let member = self.members.get_mut(id).expect("member exists");
            let old = std::mem::take(&mut member.assignment);
            member.changes.push(Change::Revoked(old));
            member.changes.push(Change::Assigned(parts.clone()));
            member.assignment = parts;
            member.positions = positions;
            member.paused.clear();
            member.generation = self.generation;
        }
    }

    fn end(&self, tp: TopicPartition) -> i64 {
        self.logs[tp.0.idx()][tp.1 as usize].len() as i64
    }
}

/// The in-memory broker; clones share it.
#[derive(Clone)]
pub struct MemBroker(Arc<Mutex<Inner>>);

impl MemBroker {
    /// Empty request and response topics of `partitions` partitions; `seed`
    /// decides how polls interleave them.
    pub fn new(partitions: i32, topics: [&str; 2], seed: u64) -> Self {
        let logs = [0, 1].map(|_| (0..partitions).map(|_| Vec::new()).collect());
        MemBroker(Arc::new(Mutex::new(Inner {
            topics: topics.map(str::to_string),
            partitions,
            logs,
            members: BTreeMap::new(),
            next_member: 1,
            generation: 0,
            committed: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            rollups: BTreeMap::new(),
            writers: BTreeMap::new(),
            next_writer: 1,
            faults: VecDeque::new(),
            outputs: Outputs::default(),
            keep_scores: true,
            rng: Rng(seed ^ 0x9e37_79b9_7f4a_7c15),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append a record to `side`'s log of `partition`; returns its offset.
    pub fn append(
        &self,
        side: Side,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: i64,
    ) -> i64 {
        let mut b = self.lock();
        let log = &mut b.logs[side.idx()][partition as usize];
        let offset = log.len() as i64;
        log.push(RawMessage {
            partition,
            offset,
            timestamp_ms: Some(timestamp_ms),
            key: key.map(Bytes::copy_from_slice),
            payload: Some(Bytes::copy_from_slice(value)),
        });
        offset
    }

    /// A new group member (a worker's consumer); triggers a rebalance.
    pub fn join(&self) -> MemSource {
        let mut b = self.lock();
        let id = b.next_member;
        b.next_member += 1;
        b.members.insert(id, Member::default());
        b.rebalance();
        MemSource {
            broker: self.clone(),
            member: id,
            topics: b.topics.clone(),
        }
    }

    /// Remove a member (it left, or its session expired); rebalances.
    pub fn leave(&self, member: u64) {
        let mut b = self.lock();
        if b.members.remove(&member).is_some() {
            b.rebalance();
        }
    }

    pub fn members(&self) -> Vec<u64> {
        self.lock().members.keys().copied().collect()
    }

    /// Make the next commit fail.
    pub fn fail_next_commit(&self, fault: CommitFault) {
        self.lock().faults.push_back(fault);
    }

    /// Move `member`'s fetch position of `tp` back to `offset` (not before
    /// the committed offset): messages are delivered again.
    pub fn redeliver(&self, member: u64, tp: TopicPartition, back: i64) {
        let mut b = self.lock();
        let floor = b.committed.get(&tp).copied().unwrap_or(0);
        if let Some(m) = b.members.get_mut(&member) {
            if let Some(p) = m.positions.get_mut(&tp) {
                *p = (*p - back).max(floor);
            }
        }
    }

    /// What was committed to the output topics.
    pub fn outputs(&self) -> Outputs {
        self.lock().outputs.clone()
    }

    pub fn sink(&self) -> MemSink {
        MemSink {
            broker: self.clone(),
        }
    }
}

/// One member's consumer.
pub struct MemSource {
    broker: MemBroker,
    member: u64,
    topics: [String; 2],
}

impl MemSource {
    pub fn member(&self) -> u64 {
        self.member
    }
}

fn refused(why: String) -> SourceError {
    SourceError::Rejected(why)
}

impl Source for MemSource {
    async fn poll(&mut self, max: usize, _wait: Duration) -> Result<Polled, SourceError> {
        let mut b = self.broker.lock();
        let b = &mut *b;
        let Some(m) = b.members.get_mut(&self.member) else {
            return Err(refused(format!(
                "member {} is not in the group",
                self.member
            )));
        };
        let mut out = Polled::default();
        if !m.changes.is_empty() {
            out.changes = std::mem::take(&mut m.changes);
            return Ok(out);
        }
        let parts: Vec<TopicPartition> = m.assignment.clone();
        let mut open: Vec<TopicPartition> = parts
            .iter()
            .copied()
            .filter(|tp| {
                !m.paused.contains(tp)
                    && m.positions[tp] < b.logs[tp.0.idx()][tp.1 as usize].len() as i64
            })
            .collect();
        while out.messages.len() < max && !open.is_empty() {
            let i = b.rng.below(open.len() as u64) as usize;
            let tp = open[i];
            let chunk = 1 + b.rng.below(16) as usize;
            let m = b.members.get_mut(&self.member).expect("member");
            let pos = m.positions.get_mut(&tp).expect("assigned");
            let log = &b.logs[tp.0.idx()][tp.1 as usize];
            let end = (*pos as usize + chunk)
                .min(log.len())
                .min(*pos as usize + max - out.messages.len());
            for msg in &log[*pos as usize..end] {
                out.messages.push((tp.0, msg.clone()));
            }
            *pos = end as i64;
            if end == log.len() {
                open.swap_remove(i);
            }
        }
        let m = &b.members[&self.member];
        for tp in &parts {
            if !m.paused.contains(tp) && m.positions[tp] >= b.end(*tp) && !out.eofs.contains(&tp.1)
            {
                out.eofs.push(tp.1);
            }
        }
        Ok(out)
    }

    fn topic(&self, side: Side) -> &str {
        &self.topics[side.idx()]
    }

    fn watermarks(&self, side: Side, partition: i32) -> Option<(i64, i64)> {
        Some((0, self.broker.lock().end((side, partition))))
    }

    fn committed(
        &self,
        parts: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, SourceError> {
        let b = self.broker.lock();
        Ok(parts
            .iter()
            .map(|tp| (*tp, b.committed.get(tp).copied()))
            .collect())
    }

    fn unfinished(
        &self,
        done: &BTreeSet<TopicPartition>,
    ) -> Result<Vec<TopicPartition>, SourceError> {
        let b = self.broker.lock();
        Ok((0..b.partitions)
            .flat_map(|p| Side::BOTH.map(|s| (s, p)))
            .filter(|tp| !done.contains(tp))
            .filter(|tp| {
                b.committed.get(tp).copied().unwrap_or(0) < b.end(*tp)
                    // Roll-up windows still to evaluate after the input.
                    || (tp.0 == Side::Requests
                        && b.checkpoints
                            .get(&tp.1)
                            .is_some_and(|c| c.values().any(|r| r.rollups > 0)))
            })
            .collect())
    }

    fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<(), SourceError> {
        let mut b = self.broker.lock();
        check_member(&b, self.member, b.generation, offsets)?;
        for &(tp, o) in offsets {
            b.committed.insert(tp, o);
        }
        Ok(())
    }

    fn pause(&mut self, parts: &[TopicPartition]) -> Result<(), SourceError> {
        let mut b = self.broker.lock();
        if let Some(m) = b.members.get_mut(&self.member) {
            m.paused.extend(parts.iter().copied());
        }
        Ok(())
    }

    fn resume(&mut self, parts: &[TopicPartition]) -> Result<(), SourceError> {
        let mut b = self.broker.lock();
        if let Some(m) = b.members.get_mut(&self.member) {
            for tp in parts {
                m.paused.remove(tp);
            }
        }
        Ok(())
    }

    fn membership(&self) -> Option<Membership> {
        let b = self.broker.lock();
        b.members.get(&self.member).map(|m| Membership::Memory {
            member: self.member,
            generation: m.generation,
        })
    }
}

/// A commit from `member` at `generation` for `offsets` is allowed only if
/// the member is in the current generation and owns the partitions.
fn check_member(
    b: &Inner,
    member: u64,
    generation: u64,
    offsets: &[(TopicPartition, i64)],
) -> Result<(), SourceError> {
    let m = b
        .members
        .get(&member)
        .ok_or_else(|| refused(format!("member {member} is not in the group")))?;
    if generation != b.generation || m.generation != b.generation {
        return Err(refused(format!(
            "member {member} is of generation {generation}, the group of {}",
            b.generation
        )));
    }
    if let Some((tp, _)) = offsets.iter().find(|(tp, _)| !m.assignment.contains(tp)) {
        return Err(refused(format!("member {member} does not own {tp:?}")));
    }
    Ok(())
}

/// The output side: partition writers, fenced by epoch.
pub struct MemSink {
    broker: MemBroker,
}

/// A partition's writer.
pub struct MemPair {
    partition: i32,
    epoch: u64,
}

impl Sink for MemSink {
    type Pair = MemPair;

    async fn open(&mut self, partitions: &[i32]) -> Result<Vec<Opened<MemPair>>, WorkerError> {
        let mut b = self.broker.lock();
        partitions
            .iter()
            .map(|&partition| {
                let epoch = b.next_writer;
                b.next_writer += 1;
                b.writers.insert(partition, epoch);
                let mut rollups = Vec::new();
                for ((job, end), bytes) in b.rollups.get(&partition).into_iter().flatten() {
                    rollups.push(RollupRecord {
                        job: job.clone(),
                        end: *end,
                        rows: Some(decode_rows(bytes).map_err(ProcessError::from)?),
                    });
                }
                Ok(Opened {
                    partition,
                    pair: MemPair { partition, epoch },
                    resumes: b.checkpoints.get(&partition).cloned().unwrap_or_default(),
                    rollups,
                })
            })
            .collect()
    }

    async fn commit<S: Source>(
        &self,
        pair: &mut MemPair,
        cycle: &Cycle,
        offsets: &[(TopicPartition, i64)],
        source: &S,
    ) -> Result<(), WorkerError> {
        let Some(Membership::Memory { member, generation }) = source.membership() else {
            return Err(refused("not a member of the in-memory group".into()).into());
        };
        let mut encoded = Vec::with_capacity(cycle.scores.len());
        for s in &cycle.scores {
            encoded.push((
                crate::sink::score_key(s).into_bytes(),
                encode_score(s).map_err(crate::sink::SinkError::from)?,
            ));
        }
        let mut held = Vec::with_capacity(cycle.rollups.len());
        for r in &cycle.rollups {
            let bytes = match &r.rows {
                Some(rows) => Some(encode_rows(rows).map_err(ProcessError::from)?),
                None => None,
            };
            held.push(((r.job.clone(), r.end), bytes));
        }
        let mut b = self.broker.lock();
        if b.writers.get(&pair.partition) != Some(&pair.epoch) {
            return Err(
                refused(format!("writer of partition {} was fenced", pair.partition)).into(),
            );
        }
        check_member(&b, member, generation, offsets)?;
        let fault = b.faults.pop_front();
        if fault == Some(CommitFault::Before) {
            return Err(refused("injected: commit failed".into()).into());
        }
        let topics = b.topics.clone();
        let keep = b.keep_scores;
        let out = &mut b.outputs;
        if keep {
            out.scores.extend(encoded);
            out.score_records.extend(cycle.scores.iter().cloned());
        }
        out.dlq.extend(cycle.dlq.iter().map(|d| DlqOut {
            key: d.msg.key.as_deref().map(<[u8]>::to_vec),
            payload: d.msg.payload.as_deref().map(<[u8]>::to_vec),
            kind: d.kind.as_str(),
            detail: d.detail.clone(),
            source_topic: d.source_topic.clone(),
            source_partition: d.msg.partition,
            source_offset: d.msg.offset,
        }));
        out.commits += 1;
        for (topic, r) in &cycle.checkpoints {
            let side = if *topic == topics[0] {
                Side::Requests
            } else {
                Side::Responses
            };
            b.checkpoints
                .entry(pair.partition)
                .or_default()
                .insert(side, *r);
        }
        let kept = b.rollups.entry(pair.partition).or_default();
        for (key, bytes) in held {
            match bytes {
                Some(v) => {
                    kept.insert(key, v);
                }
                None => {
                    kept.remove(&key);
                }
            }
        }
        for &(tp, o) in offsets {
            b.committed.insert(tp, o);
        }
        if fault == Some(CommitFault::After) {
            return Err(refused("injected: commit acknowledgement lost".into()).into());
        }
        Ok(())
    }
}

/// A fixed account table.
pub struct MemAccounts(pub Arc<AccountTable>);

impl Accounts for MemAccounts {
    fn snapshot(&self) -> Arc<AccountTable> {
        self.0.clone()
    }
}

/// The account table from Account records (Confluent-framed Avro values).
pub fn account_table(values: &[(&str, &[u8], i64)]) -> Result<AccountTable, ProcessError> {
    let set = SchemaSet::builtin();
    let msgs: Vec<RawMessage> = values
        .iter()
        .enumerate()
        .map(|(i, (key, value, ts))| RawMessage {
            partition: 0,
            offset: i as i64,
            timestamp_ms: Some(*ts),
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            payload: Some(Bytes::copy_from_slice(value)),
        })
        .collect();
    let decoded = RecordDecoder::new(&set.account, 4096, i64::MAX / 4)?.decode(&msgs)?;
    let mut table = AccountTable::default();
    table.apply(&decoded.batch)?;
    Ok(table)
}

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
    /// The most bytes open base windows held at once.
    pub peak_window_bytes: usize,
    /// Rows (requests and responses) those windows held at that moment.
    pub peak_window_rows: usize,
    /// The most bytes roll-ups held at once.
    pub peak_rollup_bytes: usize,
    /// Time spent per stage.
    pub times: StageTimes,
}

/// Score `input` as one partition pair with the worker loop on the
/// in-memory broker, to the end of input. Counters follow the worker's (see
/// [`Metrics`]).
pub async fn score_stream(
    detector: &Detector,
    input: &SimInput<'_>,
    out_of_orderness_ms: i64,
) -> Result<SimOutput, WorkerError> {
    SimRun::load(input, out_of_orderness_ms)?
        .run(detector)
        .await
}

/// A [`score_stream`] run split in two: loading the input into the
/// in-memory broker, then running the worker loop over it, so a benchmark
/// can time the second alone.
pub struct SimRun {
    cfg: Config,
    broker: MemBroker,
    table: Arc<AccountTable>,
}

impl SimRun {
    pub fn load(input: &SimInput<'_>, out_of_orderness_ms: i64) -> Result<SimRun, WorkerError> {
        let accounts: Vec<(&str, &[u8], i64)> = input
            .accounts
            .iter()
            .map(|r| (r.key, r.value, r.timestamp_ms))
            .collect();
        let table = account_table(&accounts)?;
        let mut cfg = Config::defaults();
        cfg.worker.exit_at_eof = true;
        cfg.window.out_of_orderness = Duration::from_millis(out_of_orderness_ms.max(0) as u64);
        let broker = MemBroker::new(1, ["requests", "responses"], 0);
        for (side, r) in &input.events {
            broker.append(*side, 0, Some(r.key.as_bytes()), r.value, r.timestamp_ms);
        }
        Ok(SimRun {
            cfg,
            broker,
            table: Arc::new(table),
        })
    }

    /// Commits encode the scores but keep none of them: a benchmark's
    /// in-memory sink then does what a Kafka sink does, not more
    /// ([`SimOutput::scores`] stays empty; the counters are kept).
    pub fn without_kept_scores(self) -> Self {
        self.broker.lock().keep_scores = false;
        self
    }

    /// Run the worker loop to the end of input.
    pub async fn run(self, detector: &Detector) -> Result<SimOutput, WorkerError> {
        let SimRun { cfg, broker, table } = self;
        let source = broker.join();
        let mut worker =
            WorkerLoop::new(&cfg, detector, source, broker.sink(), MemAccounts(table))?;
        let progress = Progress::default();
        let (mut peak_window_bytes, mut peak_window_rows, mut peak_rollup_bytes) = (0, 0, 0);
        loop {
            let step = worker.step(&progress).await?;
            let (w, r) = worker.held_bytes();
            if w > peak_window_bytes {
                peak_window_bytes = w;
                peak_window_rows = worker.held_rows();
            }
            peak_rollup_bytes = peak_rollup_bytes.max(r);
            if step == Step::Done {
                break;
            }
        }
        let times = worker.stage_times();
        let metrics = worker.stop().await?;
        Ok(SimOutput {
            scores: broker.outputs().score_records,
            metrics,
            peak_window_bytes,
            peak_window_rows,
            peak_rollup_bytes,
            times,
        })
    }
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
