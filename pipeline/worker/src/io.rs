//! What the worker loop reads from and writes to, as traits: Kafka in
//! production (`source::EventSource`, `sink::KafkaSink`,
//! `source::AccountsSource`), an in-memory broker in the simulation
//! (`simulate`). One loop ([`crate::worker::WorkerLoop`]) runs over both.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use crate::enrich::AccountTable;
use crate::rollup::RollupRecord;
use crate::sink::Cycle;
use crate::source::{Polled, SourceError, TopicPartition};
use crate::window::{Resume, Side};
use crate::worker::WorkerError;

/// Proof of group membership a transactional commit carries, so the broker
/// can refuse the offsets of a member that was rebalanced away.
pub enum Membership {
    Kafka(rdkafka::consumer::ConsumerGroupMetadata),
    /// The in-memory broker's member id and group generation.
    Memory {
        member: u64,
        generation: u64,
    },
}

/// The two event topics, consumed by a consumer group.
pub trait Source: Send + Sync {
    /// Up to `max` messages, waiting at most `wait` for them. Returns early
    /// on a rebalance, whose changes come after the messages received before
    /// it.
    fn poll(
        &mut self,
        max: usize,
        wait: std::time::Duration,
    ) -> impl Future<Output = Result<Polled, SourceError>> + Send;

    fn topic(&self, side: Side) -> &str;

    /// The partition's (log start, end) offsets as of the last fetch
    /// (`None` before the first one): a reader whose next offset reaches the
    /// end is at the end of the input for now.
    fn watermarks(&self, side: Side, partition: i32) -> Option<(i64, i64)>;

    /// The group's committed offsets of `parts` (`None`: nothing committed).
    fn committed(
        &self,
        parts: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, SourceError>;

    /// Partitions of the input the group has not committed to their end.
    /// `done`: partitions this worker holds and has itself read to their
    /// end, emitted and committed; they are not asked about (the broker's
    /// view of them can only lag what the worker knows).
    fn unfinished(
        &self,
        done: &BTreeSet<TopicPartition>,
    ) -> Result<Vec<TopicPartition>, SourceError>;

    /// Commit `offsets` outside a transaction (at-least-once delivery).
    fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<(), SourceError>;

    /// Current membership, for offsets committed in a transaction.
    fn membership(&self) -> Option<Membership>;

    /// Stop fetching `parts` (they stay assigned) until resumed.
    fn pause(&mut self, parts: &[TopicPartition]) -> Result<(), SourceError>;

    fn resume(&mut self, parts: &[TopicPartition]) -> Result<(), SourceError>;
}

/// A partition pair's writer and the checkpoints it resumes from.
pub struct Opened<P> {
    pub partition: i32,
    pub pair: P,
    pub resumes: BTreeMap<Side, Resume>,
    /// The roll-ups' held rows as of those checkpoints.
    pub rollups: Vec<RollupRecord>,
}

/// Where partition pairs' cycles go, and their checkpoints come from.
pub trait Sink: Send {
    /// The open output side of one partition pair.
    type Pair: Send;

    /// Become the writer of `partitions` (all those of one assignment, in
    /// one go: assignment work must stay short): fence previous writers and
    /// end what they left open, then read each partition's newest
    /// checkpoints.
    fn open(
        &mut self,
        partitions: &[i32],
    ) -> impl Future<Output = Result<Vec<Opened<Self::Pair>>, WorkerError>> + Send;

    /// Emit `cycle` and commit it with the input `offsets`, atomically with
    /// exactly-once delivery. An error means nothing of it may be assumed
    /// committed; the caller stops.
    fn commit<S: Source>(
        &self,
        pair: &mut Self::Pair,
        cycle: &Cycle,
        offsets: &[(TopicPartition, i64)],
        source: &S,
    ) -> impl Future<Output = Result<(), WorkerError>> + Send;
}

/// The account table, as of now.
pub trait Accounts: Send + Sync {
    fn snapshot(&self) -> Arc<AccountTable>;
}
