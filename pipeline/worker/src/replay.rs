//! Replay: score a range of history by event time, with the live worker's
//! loop, into a topic or a file, the records byte-identical to what the live
//! workers emitted for the same windows.
//!
//! How. The same [`WorkerLoop`] runs over a [`ReplaySource`] (both event
//! topics assigned, not subscribed: no group, nothing committed) and a
//! [`ReplaySink`] (scores of the range to an [`Output`], nothing to the live
//! topics). A window's rows are a function of the partitions' contents (see
//! `window`), so the loop reproduces the live windows once it starts early
//! enough and reads far enough:
//!
//! - **Start** ([`Plan::seek_ms`]): `from` minus the jobs' history (the
//!   longest chain of roll-up windows, see [`JobSet::history_ms`]) and the
//!   streaming margins (out-of-orderness, response delay, a base window).
//!   Record timestamps are taken as no earlier than event times (a
//!   gateway stamps a record when it sends it), so no row of the range
//!   sits before that offset. Windows before `from` are computed, for the
//!   roll-ups, and not written. Kafka's offsets-for-times lookup finds the
//!   offset per partition by record timestamp; [`seek`] checks the answer by
//!   reading the records on either side of it, and searches by reading when
//!   the broker answers wrongly (the local test broker answers 0 on memory
//!   storage). On Apache Kafka the check holds and costs two reads.
//! - **End** ([`Plan::stop_ms`]): a side of a partition stops once its
//!   event-time watermark has passed `to` by the longest lateness, the
//!   response delay and two base windows: every later row is late for
//!   every window of the range, as it was live. Then the loop's end of
//!   input flushes what is open.
//!
//! The output is ordered by (window end, window start, key, revision),
//! released as soon as no partition pair can still emit a record ordering
//! before it, so a file is the same bytes on every replay of the range.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::io::{Membership, Opened, Sink, Source};
use crate::jobs::JobSet;
use crate::metrics::Metrics;
use crate::process::Detector;
use crate::score::RiskScore;
use crate::sink::{encode_score, score_key, Cycle};
use crate::source::{
    cached_watermarks, owned, Change, EofQuietContext, Polled, SourceError, TopicPartition,
};
use crate::window::Side;
use crate::worker::{Progress, Step, WorkerError, WorkerLoop};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Invalid(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("writing {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding a score: {0}")]
    Avro(#[from] apache_avro::Error),
    #[error("{0}")]
    Output(String),
    #[error("reading {topic}[{partition}] at offset {offset}: no record within {timeout:?}")]
    ReadTimeout {
        topic: String,
        partition: i32,
        offset: i64,
        timeout: Duration,
    },
}

/// What to replay, in event-time milliseconds, and how far around it to
/// read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Windows starting at or after this are written.
    pub from: i64,
    /// Windows ending at or before this are written (`None`: to the end of
    /// the topics as they are when the replay reaches it).
    pub to: Option<i64>,
    /// Event time read before `from`, for the roll-ups' history.
    pub warmup_ms: i64,
    /// Records timestamped at or after this are read (`from - warmup`).
    pub seek_ms: i64,
    /// A side of a partition stops once its watermark reaches this.
    pub stop_ms: Option<i64>,
    /// Without `to`: keep reading as records arrive (live traffic) until
    /// stopped, instead of stopping at the end of the topics.
    pub follow: bool,
    /// At most this many event messages a second (both topics), to spare
    /// a busy cluster; `None`: as fast as it goes.
    pub max_rate: Option<u64>,
}

impl Plan {
    /// The plan for `[from, to]` with `detector`'s jobs and `cfg`'s
    /// margins; `warmup` overrides the history read before `from` (shorter
    /// than the jobs' history, roll-up features of the first windows may
    /// differ from the live ones).
    pub fn new(
        cfg: &Config,
        jobs: &JobSet,
        from: i64,
        to: Option<i64>,
        warmup: Option<Duration>,
    ) -> Result<Plan, ReplayError> {
        if let Some(to) = to {
            if to <= from {
                return Err(ReplayError::Invalid(format!(
                    "--to ({}) must be after --from ({})",
                    format_ms(to),
                    format_ms(from)
                )));
            }
        }
        let ooo = cfg.window.out_of_orderness.as_millis() as i64;
        let delay = cfg.window.max_response_delay.as_millis() as i64;
        let margins = ooo + delay + jobs.window_ms;
        let warmup_ms = match warmup {
            Some(w) => w.as_millis() as i64,
            None => jobs.history_ms() + margins,
        };
        Ok(Plan {
            from,
            to,
            warmup_ms,
            seek_ms: from.saturating_sub(warmup_ms),
            stop_ms: to.map(|t| t + jobs.max_lateness_ms() + 2 * (delay + jobs.window_ms) + ooo),
            follow: false,
            max_rate: None,
        })
    }

    /// Follow the topics past their end (live traffic); only without `to`.
    pub fn following(self) -> Result<Plan, ReplayError> {
        if self.to.is_some() {
            return Err(ReplayError::Invalid(
                "following live traffic has no end: drop --to".into(),
            ));
        }
        Ok(Plan {
            follow: true,
            ..self
        })
    }

    /// The same range, read as far as either plan reads: for running two
    /// detectors (a shadow) over the same input.
    pub fn covering(&self, other: &Plan) -> Plan {
        Plan {
            warmup_ms: self.warmup_ms.max(other.warmup_ms),
            seek_ms: self.seek_ms.min(other.seek_ms),
            stop_ms: self.stop_ms.max(other.stop_ms),
            ..*self
        }
    }

    /// Whether a score belongs in the output: an account score (member
    /// scores come from the cluster stage, which replay does not run) of a
    /// window inside the range.
    pub fn contains(&self, s: &RiskScore) -> bool {
        s.cluster_id.is_none()
            && s.window_start >= self.from
            && self.to.is_none_or(|t| s.window_end <= t)
    }
}

/// `ms` as RFC 3339 UTC, for messages.
pub fn format_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (h, min, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    let date = crate::cluster::keys::civil_date(days);
    if milli == 0 {
        format!("{date}T{h:02}:{min:02}:{s:02}Z")
    } else {
        format!("{date}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
    }
}

/// A span as `2d 1h 30s`: days, hours, minutes, seconds, the zero ones left
/// out.
pub fn format_span(ms: i64) -> String {
    let s = ms / 1000;
    let parts: Vec<String> = [
        (s / 86_400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ]
    .into_iter()
    .filter(|(n, _)| *n != 0)
    .map(|(n, u)| format!("{n}{u}"))
    .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

/// An instant in event time, as epoch milliseconds: `now` or `now-2h`
/// (wall clock), RFC 3339
/// (`2026-12-01T10:00:00Z`, `2026-12-01T11:00:00+01:00`, fractions of a
/// second allowed), a date and time without a zone (UTC; `T` or a space
/// between), a date (midnight UTC), or epoch milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("now") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(now);
        }
        let ago = rest
            .strip_prefix('-')
            .map(|d| crate::config::parse_duration(d.trim()))
            .ok_or_else(|| format!("{text:?} is not a time: `now` or `now-2h`"))?
            .map_err(|e| format!("{text:?}: {e}"))?;
        return Ok(now - ago.as_millis() as i64);
    }
    let bad = || {
        format!(
            "{text:?} is not a time: use RFC 3339 (2026-12-01T10:00:00Z), a date (2026-12-01) or epoch milliseconds"
        )
    };
    if !t.is_empty()
        && t.trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return t.parse().map_err(|_| bad());
    }
    let num = |s: &str, len: usize| -> Result<i64, String> {
        if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (date, rest) = t.split_at(t.len().min(10));
    let mut parts = date.split('-');
    let (y, m, d) = match (parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d)) => (num(y, 4)?, num(m, 2)?, num(d, 2)?),
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    if rest.is_empty() {
        return Ok(ms);
    }
    let rest = rest
        .strip_prefix('T')
        .or_else(|| rest.strip_prefix('t'))
        .or_else(|| rest.strip_prefix(' '))
        .ok_or_else(bad)?;
    // The zone: Z, or ±HH:MM at the end; none means UTC.
    let (clock, offset_ms) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if rest.len() > 6 && matches!(rest.as_bytes()[rest.len() - 6], b'+' | b'-') {
        let (c, z) = rest.split_at(rest.len() - 6);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = z[1..].split_once(':').ok_or_else(bad)?;
        (c, sign * (num(zh, 2)? * 3_600_000 + num(zm, 2)? * 60_000))
    } else {
        (rest, 0)
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut f = hms.split(':');
    let h = num(f.next().ok_or_else(bad)?, 2)?;
    let min = num(f.next().ok_or_else(bad)?, 2)?;
    let s = f.next().map(|s| num(s, 2)).transpose()?.unwrap_or(0);
    if f.next().is_some() || h > 23 || min > 59 || s > 60 {
        return Err(bad());
    }
    let milli = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        format!("{:0<3}", &frac[..frac.len().min(3)])
            .parse::<i64>()
            .map_err(|_| bad())?
    };
    ms += h * 3_600_000 + min * 60_000 + s * 1000 + milli;
    Ok(ms - offset_ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// days_from_civil; the inverse of `cluster::keys::civil_date`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------
// Seeking by timestamp

/// Where a partition's replay starts, and how that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seek {
    pub topic: String,
    pub partition: i32,
    /// The first offset whose record is timestamped at or after the target
    /// (the end of the partition when none is).
    pub offset: i64,
    /// The broker's offsets-for-times answer (`None`: "no such record").
    pub broker_answer: Option<i64>,
    /// The answer failed the check and `offset` was found by reading.
    pub searched: bool,
    /// Records read to check or search.
    pub reads: u32,
    /// The partition's first offset and end, as of the reads.
    pub low: i64,
    pub high: i64,
}

/// One record at a time from a partition, by offset: the reads that check
/// and search.
struct Reader {
    consumer: BaseConsumer<EofQuietContext>,
    timeout: Duration,
    reads: u32,
}

/// A record read at or after an offset: its offset and timestamp.
#[derive(Debug, Clone, Copy)]
struct At {
    offset: i64,
    timestamp: Option<i64>,
}

impl Reader {
    fn new(cfg: &Config) -> Result<Reader, ReplayError> {
        let mut cc = cfg.consumer_config();
        cc.set("group.id", format!("{}-replay-seek", cfg.kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "10")
            .set("auto.offset.reset", "earliest");
        Ok(Reader {
            consumer: cc.create_with_context(EofQuietContext)?,
            timeout: Duration::from_secs(30),
            reads: 0,
        })
    }

    /// The first record at or after `offset` (`Offset::Beginning`: the
    /// partition's first), with the partition's end as of that fetch;
    /// `None` at the end.
    fn read(
        &mut self,
        topic: &str,
        partition: i32,
        offset: Offset,
    ) -> Result<(Option<At>, Option<i64>), ReplayError> {
        self.reads += 1;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, offset)?;
        self.consumer.assign(&tpl)?;
        let deadline = Instant::now() + self.timeout;
        let high = |c: &BaseConsumer<EofQuietContext>| {
            cached_watermarks(c.client(), topic, partition).map(|(_, h)| h)
        };
        let at_least = match offset {
            Offset::Offset(o) => o,
            _ => i64::MIN,
        };
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                // librdkafka drops what was fetched for an earlier
                // assignment; the offset check is a second guard.
                Some(Ok(m))
                    if m.partition() == partition
                        && m.topic() == topic
                        && m.offset() >= at_least =>
                {
                    let at = At {
                        offset: m.offset(),
                        timestamp: m.timestamp().to_millis(),
                    };
                    return Ok((Some(at), high(&self.consumer)));
                }
                Some(Ok(_)) => {}
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => {
                    return Ok((None, high(&self.consumer)));
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => crate::connect::ride_out(e)?,
            }
        }
        Err(ReplayError::ReadTimeout {
            topic: topic.to_string(),
            partition,
            offset: match offset {
                Offset::Offset(o) => o,
                _ => -1,
            },
            timeout: self.timeout,
        })
    }

    /// Whether the record at `offset` (or the first after it) is at or
    /// after `t`; `true` at the end (the end is after everything).
    fn at_or_after(
        &mut self,
        topic: &str,
        p: i32,
        offset: i64,
        t: i64,
    ) -> Result<bool, ReplayError> {
        Ok(match self.read(topic, p, Offset::Offset(offset))?.0 {
            Some(at) => at.timestamp.is_none_or(|ts| ts >= t),
            None => true,
        })
    }
}

/// For each partition of `topic`, the first offset timestamped at or after
/// `t`: the broker's offsets-for-times answer, checked by reading the record
/// before it (must be earlier than `t`) and the one at it (must not be);
/// where the check fails, found by a binary search of reads, which assumes
/// timestamps grow with offsets (a producer's CreateTime, or
/// LogAppendTime). Blocking.
pub fn seek(
    cfg: &Config,
    topic: &str,
    partitions: &[i32],
    t: i64,
) -> Result<Vec<Seek>, ReplayError> {
    let mut reader = Reader::new(cfg)?;
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(t))?;
    }
    let answers = reader
        .consumer
        .offsets_for_times(tpl, Duration::from_secs(30))?;
    let mut out = Vec::new();
    for &p in partitions {
        reader.reads = 0;
        let answer = answers
            .find_partition(topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        let (first, high) = reader.read(topic, p, Offset::Beginning)?;
        let Some(first) = first else {
            // Empty: start (and end) at its end.
            let high = high.unwrap_or(0);
            out.push(Seek {
                topic: topic.to_string(),
                partition: p,
                offset: high,
                broker_answer: answer,
                searched: false,
                reads: reader.reads,
                low: high,
                high,
            });
            continue;
        };
        let low = first.offset;
        let high = match high {
            Some(h) => h,
            None => low + 1,
        };
        let candidate = answer.unwrap_or(high).clamp(low, high);
        let holds = answer.is_none_or(|o| o >= low && o <= high)
            && (candidate == low || !reader.at_or_after(topic, p, candidate - 1, t)?)
            && reader.at_or_after(topic, p, candidate, t)?;
        let (offset, searched) = if holds {
            (candidate, false)
        } else {
            let (mut lo, mut hi) = (low, high);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if reader.at_or_after(topic, p, mid, t)? {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            tracing::info!(
                topic,
                partition = p,
                broker_answer = ?answer,
                found = lo,
                reads = reader.reads,
                "the broker's offsets-for-times answer failed the check by reading the records around it; found the offset by a binary search of reads"
            );
            (lo, true)
        };
        out.push(Seek {
            topic: topic.to_string(),
            partition: p,
            offset,
            broker_answer: answer,
            searched,
            reads: reader.reads,
            low,
            high,
        });
    }
    let wrong = out.iter().filter(|s| s.searched).count();
    if wrong > 0 {
        tracing::warn!(
            topic,
            partitions = wrong,
            "the broker's offsets-for-times answers were wrong for {wrong} of {} partitions (checked by reading the records around them); their offsets were found by reading",
            out.len()
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Source

/// Both event topics from the replay's start offsets, assigned (not
/// subscribed), until each side of each partition is finished: stopped by
/// [`ReplaySource::finish`] or at its end.
pub struct ReplaySource {
    consumer: BaseConsumer<EofQuietContext>,
    topics: [String; 2],
    start: BTreeMap<TopicPartition, i64>,
    /// Next offset to hand out.
    pos: BTreeMap<TopicPartition, i64>,
    finished: BTreeSet<TopicPartition>,
    assigned: bool,
    /// Never finished by reaching the end: live traffic.
    follow: bool,
    /// Messages a second at most, and since when.
    rate: Option<(u64, Instant)>,
}

impl ReplaySource {
    /// Reading starts at `start` (per side and partition); with `follow`,
    /// the end of a partition is only where it is for now.
    pub fn new(
        cfg: &Config,
        start: BTreeMap<TopicPartition, i64>,
        follow: bool,
        max_rate: Option<u64>,
    ) -> Result<Self, ReplayError> {
        let mut cc = cfg.consumer_config();
        cc.set("group.id", format!("{}-replay", cfg.kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest");
        // Events are written by producers outside transactions too; a
        // transactional producer's aborted records were never scored live.
        if !cfg.consumer.contains_key("isolation.level")
            && !cfg.librdkafka.contains_key("isolation.level")
        {
            cc.set("isolation.level", "read_committed");
        }
        let consumer: BaseConsumer<EofQuietContext> = cc.create_with_context(EofQuietContext)?;
        let topics = [cfg.topics.requests.clone(), cfg.topics.responses.clone()];
        let mut tpl = TopicPartitionList::new();
        for (&(side, p), &o) in &start {
            tpl.add_partition_offset(&topics[side.idx()], p, Offset::Offset(o))?;
        }
        consumer.assign(&tpl)?;
        Ok(ReplaySource {
            consumer,
            topics,
            pos: start.clone(),
            start,
            finished: BTreeSet::new(),
            assigned: false,
            follow,
            rate: max_rate.filter(|r| *r > 0).map(|r| (r, Instant::now())),
        })
    }

    fn side_of(&self, topic: &str) -> Option<Side> {
        Side::BOTH
            .into_iter()
            .find(|s| self.topics[s.idx()] == topic)
    }

    fn list(&self, parts: &[TopicPartition]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &(side, p) in parts {
            tpl.add_partition(&self.topics[side.idx()], p);
        }
        tpl
    }

    /// Stop reading `tp`: what was handed out is all of it.
    pub fn finish(&mut self, tp: TopicPartition) -> Result<(), ReplayError> {
        if self.finished.insert(tp) {
            self.consumer.pause(&self.list(&[tp]))?;
        }
        Ok(())
    }

    pub fn is_finished(&self, tp: TopicPartition) -> bool {
        self.finished.contains(&tp)
    }

    /// Every side of every partition.
    pub fn parts(&self) -> Vec<TopicPartition> {
        self.start.keys().copied().collect()
    }

    /// Partition pairs that have handed out nothing on either side.
    pub fn idle_pairs(&self) -> BTreeSet<i32> {
        let mut busy = BTreeSet::new();
        for (tp, p) in &self.pos {
            if *p > self.start[tp] {
                busy.insert(tp.1);
            }
        }
        self.start
            .keys()
            .map(|tp| tp.1)
            .filter(|p| !busy.contains(p))
            .collect()
    }

    /// Messages handed out so far, both topics.
    pub fn read(&self) -> u64 {
        self.pos
            .iter()
            .map(|(tp, p)| (p - self.start[tp]).max(0) as u64)
            .sum()
    }

    fn poll_blocking(&mut self, max: usize, wait: Duration) -> Result<Polled, SourceError> {
        let mut polled = Polled::default();
        if !self.assigned {
            // The assignment alone first: the loop opens the pairs before
            // any message of theirs arrives.
            self.assigned = true;
            polled.changes.push(Change::Assigned(self.parts()));
            return Ok(polled);
        }
        let deadline = Instant::now() + wait;
        while polled.messages.len() < max {
            let left = if polled.messages.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(left) {
                None => break,
                Some(Ok(m)) => {
                    let Some(side) = self.side_of(m.topic()) else {
                        continue;
                    };
                    let tp = (side, m.partition());
                    if self.finished.contains(&tp)
                        || self.pos.get(&tp).is_some_and(|p| m.offset() < *p)
                    {
                        // Fetched before the stop, or seen already.
                        continue;
                    }
                    self.pos.insert(tp, m.offset() + 1);
                    polled.messages.push((side, owned(&m)));
                }
                Some(Err(KafkaError::PartitionEOF(_))) if self.follow => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // The event names no topic: a side whose position has
                    // reached its fetched end is at it.
                    for side in Side::BOTH {
                        let tp = (side, p);
                        if self.finished.contains(&tp) {
                            continue;
                        }
                        let high =
                            cached_watermarks(self.consumer.client(), &self.topics[side.idx()], p)
                                .map(|(_, h)| h);
                        let pos = self.pos.get(&tp).copied().unwrap_or(0);
                        if high.is_some_and(|h| pos >= h) {
                            tracing::info!(side = ?side, partition = p, offset = pos, "replay reached the end of the partition");
                            self.finished.insert(tp);
                            let _ = self.consumer.pause(&self.list(&[tp]));
                        }
                    }
                }
                Some(Err(e)) => crate::connect::ride_out(e)?,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        if let Some((rate, since)) = self.rate {
            // Hold back until the messages handed out fit the rate: the
            // fetches wait, so the cluster is read no faster either.
            let due = Duration::from_secs_f64(self.read() as f64 / rate as f64);
            let ahead = due.saturating_sub(since.elapsed());
            std::thread::sleep(ahead.min(Duration::from_secs(1)));
        }
        polled.eofs = self
            .finished
            .iter()
            .map(|(_, p)| *p)
            .collect::<BTreeSet<i32>>()
            .into_iter()
            .collect();
        Ok(polled)
    }
}

impl Source for ReplaySource {
    fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl std::future::Future<Output = Result<Polled, SourceError>> + Send {
        let out = tokio::task::block_in_place(|| self.poll_blocking(max, wait));
        std::future::ready(out)
    }

    fn topic(&self, side: Side) -> &str {
        &self.topics[side.idx()]
    }

    /// A finished side ends where it stopped; an unfinished one after its
    /// position at least.
    fn watermarks(&self, side: Side, partition: i32) -> Option<(i64, i64)> {
        let tp = (side, partition);
        let start = *self.start.get(&tp)?;
        let pos = self.pos.get(&tp).copied().unwrap_or(start);
        if self.finished.contains(&tp) {
            return Some((start, pos));
        }
        let high = cached_watermarks(self.consumer.client(), &self.topics[side.idx()], partition)
            .map_or(pos + 1, |(_, h)| h.max(pos + 1));
        Some((start, high))
    }

    /// The start offsets: where the loop's positions begin.
    fn committed(
        &self,
        parts: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, SourceError> {
        Ok(parts
            .iter()
            .map(|tp| (*tp, self.start.get(tp).copied()))
            .collect())
    }

    /// No group: this replay is the only reader.
    fn unfinished(
        &self,
        done: &BTreeSet<TopicPartition>,
    ) -> Result<Vec<TopicPartition>, SourceError> {
        Ok(self
            .start
            .keys()
            .filter(|tp| !done.contains(tp))
            .copied()
            .collect())
    }

    /// Nothing is committed: a replay leaves no trace on the input.
    fn commit(&self, _: &[(TopicPartition, i64)]) -> Result<(), SourceError> {
        Ok(())
    }

    fn membership(&self) -> Option<Membership> {
        None
    }

    fn pause(&mut self, parts: &[TopicPartition]) -> Result<(), SourceError> {
        Ok(self.consumer.pause(&self.list(parts))?)
    }

    fn resume(&mut self, parts: &[TopicPartition]) -> Result<(), SourceError> {
        let live: Vec<TopicPartition> = parts
            .iter()
            .copied()
            .filter(|tp| !self.finished.contains(tp))
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        Ok(self.consumer.resume(&self.list(&live))?)
    }
}

// ---------------------------------------------------------------------------
// Sink and outputs

/// Where replayed scores go, in output order.
#[async_trait::async_trait]
pub trait Output: Send {
    /// Write `scores` (acknowledged or buffered for [`finish`](Self::finish)).
    async fn write(&mut self, scores: &[RiskScore]) -> Result<(), ReplayError>;
    /// Everything written is durable when this returns.
    async fn finish(&mut self) -> Result<(), ReplayError>;
    /// Where, for messages.
    fn describe(&self) -> String;
}

/// A score as one JSON object: the fields of its `RiskScore` Avro record,
/// read back from the bytes the topic holds, so a line is a function of
/// those bytes alone (unions as their value or null, the level as its
/// symbol).
pub fn score_json(avro: &[u8]) -> Result<String, ReplayError> {
    let set = crate::schemas::SchemaSet::builtin();
    let (_, mut body) = crate::schemas::unframe(avro)
        .ok_or_else(|| ReplayError::Output("a score without Confluent framing".into()))?;
    let value = apache_avro::from_avro_datum(&set.risk_score.avro, &mut body, None)?;
    let json: serde_json::Value = value.try_into()?;
    Ok(json.to_string())
}

/// JSON lines, one score a line, to a file or standard output.
pub struct JsonLines {
    out: std::io::BufWriter<Box<dyn Write + Send>>,
    name: String,
}

impl JsonLines {
    pub fn new(out: Box<dyn Write + Send>, name: impl Into<String>) -> Self {
        JsonLines {
            out: std::io::BufWriter::new(out),
            name: name.into(),
        }
    }
}

#[async_trait::async_trait]
impl Output for JsonLines {
    async fn write(&mut self, scores: &[RiskScore]) -> Result<(), ReplayError> {
        for s in scores {
            let line = score_json(&encode_score(s)?)?;
            writeln!(self.out, "{line}").map_err(|source| ReplayError::Io {
                what: self.name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), ReplayError> {
        self.out.flush().map_err(|source| ReplayError::Io {
            what: self.name.clone(),
            source,
        })
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// A Kafka topic, keyed and partitioned as the live scores topic is (key
/// `account/window_start`, partition by the account), so a consumer of the
/// live topic reads it unchanged.
pub struct TopicOutput {
    producer: FutureProducer,
    topic: String,
    partitions: i32,
    timeout: Duration,
    range: String,
}

impl TopicOutput {
    /// Produces to `topic`, which must not be one of the live topics; it is
    /// created with `partitions` when missing.
    pub async fn new(
        cfg: &Config,
        topic: &str,
        partitions: i32,
        plan: &Plan,
    ) -> Result<Self, ReplayError> {
        let t = &cfg.topics;
        let live = [
            (&t.scores, "scores"),
            (&t.clusters, "clusters"),
            (&t.requests, "requests"),
            (&t.responses, "responses"),
            (&t.accounts, "accounts"),
            (&t.features, "features"),
            (&t.dlq, "dlq"),
            (&t.checkpoints, "checkpoints"),
        ];
        if let Some((_, what)) = live.iter().find(|(name, _)| name.as_str() == topic) {
            return Err(ReplayError::Invalid(format!(
                "refusing to replay into {topic}: it is the live {what} topic ([topics] {what}); name a topic of its own"
            )));
        }
        crate::topics::create_topics(
            &cfg.client_config(),
            &[crate::topics::TopicSpec::new(topic, partitions)],
        )
        .await
        .map_err(|e| ReplayError::Output(format!("creating {topic}: {e}")))?;
        let mut cc = cfg.producer_config();
        cc.set("enable.idempotence", "true").set(
            "message.timeout.ms",
            cfg.worker.produce_timeout.as_millis().to_string(),
        );
        if !cfg.producer.contains_key("linger.ms") && !cfg.librdkafka.contains_key("linger.ms") {
            cc.set("linger.ms", "5");
        }
        let producer: FutureProducer = cc.create()?;
        let md = tokio::task::block_in_place(|| {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(30))
        })?;
        let partitions = crate::topics::partitions(&md, topic).unwrap_or(partitions);
        Ok(TopicOutput {
            producer,
            topic: topic.to_string(),
            partitions,
            timeout: cfg.worker.produce_timeout,
            range: format!(
                "{}..{}",
                format_ms(plan.from),
                plan.to.map(format_ms).unwrap_or_default()
            ),
        })
    }
}

/// Header naming the range a replayed record came from.
pub const HEADER_REPLAY: &str = "distill-watch.replay";

#[async_trait::async_trait]
impl Output for TopicOutput {
    async fn write(&mut self, scores: &[RiskScore]) -> Result<(), ReplayError> {
        use rdkafka::message::{Header, OwnedHeaders};
        let mut deliveries = Vec::with_capacity(scores.len());
        for s in scores {
            let payload = encode_score(s)?;
            let key = score_key(s);
            let partition =
                crate::partition::partition_of(s.account_id.as_bytes(), self.partitions);
            let headers = OwnedHeaders::new().insert(Header {
                key: HEADER_REPLAY,
                value: Some(self.range.as_str()),
            });
            let mut record = FutureRecord::to(&self.topic)
                .key(key.as_str())
                .payload(payload.as_slice())
                .partition(partition)
                .headers(headers);
            loop {
                match self.producer.send_result(record) {
                    Ok(f) => {
                        deliveries.push(f);
                        break;
                    }
                    Err((
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        r,
                    )) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => {
                    return Err(ReplayError::Output(format!(
                        "a record to {} was dropped before delivery",
                        self.topic
                    )))
                }
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), ReplayError> {
        let timeout = self.timeout;
        tokio::task::block_in_place(|| self.producer.flush(timeout))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("topic {}", self.topic)
    }
}

/// Sort key of the output.
fn order(s: &RiskScore) -> (i64, i64, String, i32) {
    (s.window_end, s.window_start, score_key(s), s.revision)
}

/// What the sink gathered; shared with the driver that finishes it.
struct Collector {
    plan: Plan,
    output: Box<dyn Output>,
    /// Per pair, every window ending at or before this was emitted.
    marks: BTreeMap<i32, i64>,
    /// Pairs that have read nothing yet: they hold nothing back (a record
    /// they emit later can only come out of order, never wrong).
    idle: BTreeSet<i32>,
    held: Vec<RiskScore>,
    /// How far before a pair's mark its later records can still end: the
    /// longest lateness (revisions) and two base windows.
    reach_ms: i64,
    written: u64,
    outside: u64,
    rejected: u64,
}

impl Collector {
    /// Write the held records no pair can still precede, in order.
    async fn release(&mut self, all: bool) -> Result<(), ReplayError> {
        let limit = if all {
            i64::MAX
        } else {
            let busy = self
                .marks
                .iter()
                .filter(|(p, _)| !self.idle.contains(p))
                .map(|(_, m)| *m)
                .min();
            match busy {
                Some(m) if m != i64::MIN => m.saturating_sub(self.reach_ms),
                _ => return Ok(()),
            }
        };
        if self.held.is_empty() {
            return Ok(());
        }
        self.held.sort_by_cached_key(order);
        let n = self.held.partition_point(|s| s.window_end <= limit);
        if n == 0 {
            return Ok(());
        }
        let out: Vec<RiskScore> = self.held.drain(..n).collect();
        self.output.write(&out).await?;
        self.written += out.len() as u64;
        Ok(())
    }
}

/// The worker loop's sink during a replay: scores of the range to an
/// [`Output`], in order; DLQ records, checkpoints and member rows counted
/// and dropped (the live worker already wrote them).
pub struct ReplaySink {
    shared: Arc<tokio::sync::Mutex<Collector>>,
}

impl Sink for ReplaySink {
    type Pair = i32;

    fn open(
        &mut self,
        partitions: &[i32],
    ) -> impl std::future::Future<Output = Result<Vec<Opened<i32>>, WorkerError>> + Send {
        let shared = self.shared.clone();
        let partitions = partitions.to_vec();
        async move {
            let mut c = shared.lock().await;
            Ok(partitions
                .into_iter()
                .map(|p| {
                    c.marks.insert(p, i64::MIN);
                    Opened {
                        partition: p,
                        pair: p,
                        resumes: BTreeMap::new(),
                        rollups: Vec::new(),
                    }
                })
                .collect())
        }
    }

    fn commit<S: Source>(
        &self,
        pair: &mut i32,
        cycle: &Cycle,
        _offsets: &[(TopicPartition, i64)],
        _source: &S,
    ) -> impl std::future::Future<Output = Result<(), WorkerError>> + Send {
        let p = *pair;
        let shared = self.shared.clone();
        // Owned copies: the future must not borrow the cycle.
        let scores: Vec<RiskScore> = cycle.scores.clone();
        let rejected = cycle.dlq.len() as u64;
        let mark = cycle.mark.map(|(m, _)| m);
        async move {
            let mut c = shared.lock().await;
            let plan = c.plan;
            let (inside, outside): (Vec<RiskScore>, Vec<RiskScore>) =
                scores.into_iter().partition(|s| plan.contains(s));
            c.held.extend(inside);
            c.outside += outside.len() as u64;
            c.rejected += rejected;
            if let Some(m) = mark {
                c.marks.insert(p, m);
            }
            c.release(false)
                .await
                .map_err(|e| WorkerError::Config(format!("replay output: {e}")))
        }
    }
}

/// Live figures of a running replay, for a progress bar.
#[derive(Debug, Default)]
pub struct ReplayProgress {
    /// Messages the replay expects to read (an estimate from offsets).
    pub total: AtomicU64,
    pub read: AtomicU64,
    /// The lowest request watermark over the partitions (event time).
    pub event_time: AtomicI64,
    pub written: AtomicU64,
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct ReplaySummary {
    pub plan: Plan,
    pub seeks: Vec<Seek>,
    pub metrics: Metrics,
    /// Scores written (inside the range).
    pub written: u64,
    /// Scores computed outside the range (warm-up and the flushed end).
    pub outside: u64,
    /// Input records the loop rejected (the live worker sent them to the
    /// DLQ; a replay only counts them).
    pub rejected: u64,
    pub output: String,
    pub elapsed: Duration,
}

/// Replay `plan` with `detector` into `output`. Stops early, writing what
/// is complete, when `shutdown` resolves.
pub async fn replay(
    cfg: &Config,
    detector: &Detector,
    plan: Plan,
    output: Box<dyn Output>,
    progress: &ReplayProgress,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    crate::connect::check_async(cfg, crate::connect::TIMEOUT)
        .await
        .map_err(|e| ReplayError::Invalid(e.to_string()))?;
    let mut cfg = cfg.clone();
    cfg.worker.exit_at_eof = true;
    let partitions = tokio::task::block_in_place(|| -> Result<Vec<i32>, ReplayError> {
        let reader = Reader::new(&cfg)?;
        let md = reader
            .consumer
            .fetch_metadata(None, Duration::from_secs(30))?;
        let count = |topic: &str| crate::topics::partition_count(&md, topic);
        let (req, resp) = (count(&cfg.topics.requests), count(&cfg.topics.responses));
        if req == 0 {
            return Err(SourceError::MissingTopic(cfg.topics.requests.clone()).into());
        }
        if req != resp {
            return Err(SourceError::NotCoPartitioned {
                requests: cfg.topics.requests.clone(),
                responses: cfg.topics.responses.clone(),
                req,
                resp,
            }
            .into());
        }
        Ok((0..req as i32).collect())
    })?;
    let mut seeks = Vec::new();
    let mut start = BTreeMap::new();
    let mut total = 0u64;
    for side in Side::BOTH {
        let topic = match side {
            Side::Requests => cfg.topics.requests.clone(),
            Side::Responses => cfg.topics.responses.clone(),
        };
        let begin = tokio::task::block_in_place(|| seek(&cfg, &topic, &partitions, plan.seek_ms))?;
        let end = match plan.stop_ms {
            Some(stop) => Some(tokio::task::block_in_place(|| {
                seek(&cfg, &topic, &partitions, stop)
            })?),
            None => None,
        };
        for (i, s) in begin.iter().enumerate() {
            tracing::info!(
                topic = %s.topic,
                partition = s.partition,
                offset = s.offset,
                broker_answer = ?s.broker_answer,
                searched = s.searched,
                reads = s.reads,
                "replay starts here"
            );
            start.insert((side, s.partition), s.offset);
            let until = end.as_ref().map_or(s.high, |e| e[i].offset.max(s.offset));
            total += (until - s.offset).max(0) as u64;
        }
        seeks.extend(begin);
    }
    progress.total.store(total, Ordering::Relaxed);
    progress.event_time.store(plan.seek_ms, Ordering::Relaxed);
    let source = ReplaySource::new(&cfg, start, plan.follow, plan.max_rate)?;
    let reach_ms = detector.jobs.max_lateness_ms()
        + 2 * (detector.jobs.window_ms + detector.max_response_delay_ms);
    let shared = Arc::new(tokio::sync::Mutex::new(Collector {
        plan,
        output,
        marks: BTreeMap::new(),
        idle: BTreeSet::new(),
        held: Vec::new(),
        reach_ms,
        written: 0,
        outside: 0,
        rejected: 0,
    }));
    let sink = ReplaySink {
        shared: shared.clone(),
    };
    let accounts = crate::source::AccountsSource::start(&cfg, Duration::from_secs(120))
        .await
        .map_err(WorkerError::from)?;
    let mut worker = WorkerLoop::new(&cfg, detector, source, sink, accounts)?;
    let loop_progress = Progress::default();
    tokio::pin!(shutdown);
    let mut stopped_early = false;
    loop {
        if futures::poll!(&mut shutdown).is_ready() {
            tracing::info!("shutdown requested: the replay stops short of its range");
            stopped_early = true;
            break;
        }
        if worker.step(&loop_progress).await? == Step::Done {
            break;
        }
        let parts = worker.source_mut().parts();
        let mut lowest = i64::MAX;
        for (side, p) in parts {
            let Some(wm) = worker.watermark(side, p) else {
                continue;
            };
            if side == Side::Requests && !worker.source_mut().is_finished((side, p)) {
                lowest = lowest.min(wm);
            }
            if plan.stop_ms.is_some_and(|stop| wm >= stop)
                && !worker.source_mut().is_finished((side, p))
            {
                tracing::info!(side = ?side, partition = p, watermark = %format_ms(wm), "replay read past the range");
                worker.source_mut().finish((side, p))?;
            }
        }
        if lowest != i64::MAX && lowest != i64::MIN {
            progress.event_time.store(lowest, Ordering::Relaxed);
        }
        progress
            .read
            .store(worker.source_mut().read(), Ordering::Relaxed);
        let idle = worker.source_mut().idle_pairs();
        {
            let mut c = shared.lock().await;
            c.idle = idle;
            progress.written.store(c.written, Ordering::Relaxed);
        }
        // A step may finish without waiting on anything: let the caller's
        // progress display (and a shutdown) in between.
        tokio::task::yield_now().await;
    }
    let metrics = worker.stop().await?;
    let mut c = shared.lock().await;
    if !stopped_early {
        c.release(true).await?;
    } else {
        // Only what no pair can still precede: the file stays a prefix of
        // the full replay's.
        c.release(false).await?;
    }
    c.output.finish().await?;
    progress.written.store(c.written, Ordering::Relaxed);
    Ok(ReplaySummary {
        plan,
        seeks,
        metrics,
        written: c.written,
        outside: c.outside,
        rejected: c.rejected,
        output: c.output.describe(),
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobSet;

    #[test]
    fn the_plan_reads_the_jobs_history_before_the_range_and_keeps_only_its_windows() {
        let cfg = Config::defaults();
        let jobs =
            JobSet::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs"))
                .unwrap();
        let (from, to) = (10 * 86_400_000, 10 * 86_400_000 + 3_600_000);
        let plan = Plan::new(&cfg, &jobs, from, Some(to), None).unwrap();
        // 2 days of hourly windows of 10-minute windows, and the margins.
        assert_eq!(jobs.history_ms(), 2 * 86_400_000 + 600_000);
        assert_eq!(
            plan.warmup_ms,
            jobs.history_ms() + 30_000 + 120_000 + jobs.window_ms
        );
        assert_eq!(plan.seek_ms, from - plan.warmup_ms);
        assert!(plan.stop_ms.unwrap() > to + jobs.max_lateness_ms());
        let short = Plan::new(&cfg, &jobs, from, None, Some(Duration::from_secs(60))).unwrap();
        assert_eq!((short.seek_ms, short.stop_ms), (from - 60_000, None));
        let e = Plan::new(&cfg, &jobs, to, Some(from), None).unwrap_err();
        assert!(e.to_string().contains("must be after --from"), "{e}");

        let score = |start: i64, cluster: Option<&str>| RiskScore {
            cluster_id: cluster.map(str::to_string),
            ..score("a", start + 600_000, 0)
        };
        assert!(plan.contains(&score(from, None)));
        assert!(plan.contains(&score(to - 600_000, None)));
        assert!(!plan.contains(&score(from - 600_000, None)));
        assert!(
            !plan.contains(&score(to - 300_000, None)),
            "ends after --to"
        );
        assert!(
            !plan.contains(&score(from, Some("c"))),
            "member scores are the cluster stage's"
        );
    }

    #[test]
    fn times_parse_in_every_documented_form_and_round_trip_through_format_ms() {
        let at = 1_764_583_200_000; // 2025-12-01T10:00:00Z
        for text in [
            "2025-12-01T10:00:00Z",
            "2025-12-01T10:00Z",
            "2025-12-01 10:00:00",
            "2025-12-01T11:00:00+01:00",
            "2025-12-01T05:30:00-04:30",
            "1764583200000",
        ] {
            assert_eq!(parse_time(text).unwrap(), at, "{text}");
        }
        assert_eq!(parse_time("2025-12-01T10:00:00.25Z").unwrap(), at + 250);
        assert_eq!(parse_time("2025-12-01").unwrap(), at - 10 * 3_600_000);
        assert_eq!(parse_time("1970-01-01").unwrap(), 0);
        assert_eq!(parse_time("2024-02-29").unwrap(), 1_709_164_800_000);
        let now = parse_time("now").unwrap();
        let before = parse_time("now-2h").unwrap();
        assert!((now - before - 7_200_000).abs() < 60_000, "{now} {before}");
        assert!(parse_time("now+2h").is_err());
        for ms in [0, at, at + 250, 951_782_400_000, -86_400_000] {
            assert_eq!(parse_time(&format_ms(ms)).unwrap(), ms);
        }
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-02-30",
            "2023-02-29",
            "2025-12-01T25:00Z",
            "2025-12-01T10",
            "2025-12-01X10:00",
            "2025-12-1",
            "12/01/2025",
        ] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains("is not a time"), "{bad}: {e}");
        }
    }

    /// Scores kept in memory.
    struct Kept(Arc<std::sync::Mutex<Vec<RiskScore>>>);

    #[async_trait::async_trait]
    impl Output for Kept {
        async fn write(&mut self, scores: &[RiskScore]) -> Result<(), ReplayError> {
            self.0.lock().unwrap().extend_from_slice(scores);
            Ok(())
        }
        async fn finish(&mut self) -> Result<(), ReplayError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    fn score(account: &str, end: i64, revision: i32) -> RiskScore {
        RiskScore {
            account_id: account.into(),
            window_start: end - 600_000,
            window_end: end,
            score: 0.0,
            level: crate::score::Level::Low,
            reasons: vec![],
            features: vec![],
            model_version: "m".into(),
            event_count: 1,
            response_count: 1,
            revision,
            cluster_id: None,
        }
    }

    #[tokio::test]
    async fn records_are_released_in_order_once_no_busy_pair_can_precede_them() {
        let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
        let cfg = Config::defaults();
        let jobs =
            JobSet::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs"))
                .unwrap();
        let mut c = Collector {
            plan: Plan::new(&cfg, &jobs, 0, None, None).unwrap(),
            output: Box::new(Kept(kept.clone())),
            marks: BTreeMap::from([(0, 10_000_000), (1, 4_000_000), (2, i64::MIN)]),
            idle: BTreeSet::new(),
            held: vec![
                score("b", 3_600_000, 0),
                score("a", 1_200_000, 1),
                score("a", 1_200_000, 0),
            ],
            reach_ms: 1_000_000,
            written: 0,
            outside: 0,
            rejected: 0,
        };
        // Pair 2 has emitted nothing yet: it could still precede anything.
        c.release(false).await.unwrap();
        assert!(kept.lock().unwrap().is_empty());
        // Idle (it read nothing), it holds nothing back: what ends at or
        // before the slowest busy pair's mark less the reach goes, in order.
        c.idle.insert(2);
        c.release(false).await.unwrap();
        let out: Vec<(String, i64, i32)> = kept
            .lock()
            .unwrap()
            .iter()
            .map(|s| (s.account_id.clone(), s.window_end, s.revision))
            .collect();
        assert_eq!(
            out,
            [("a".into(), 1_200_000, 0), ("a".into(), 1_200_000, 1)]
        );
        c.release(true).await.unwrap();
        assert_eq!(kept.lock().unwrap().len(), 3);
        assert_eq!(c.written, 3);
    }

    #[test]
    fn spans_and_instants_read_as_people_write_them() {
        assert_eq!(
            format_span(2 * 86_400_000 + 22 * 60_000 + 30_000),
            "2d 22m 30s"
        );
        assert_eq!(format_span(3_600_000), "1h");
        assert_eq!(format_span(0), "0s");
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ms(1_764_583_200_250), "2025-12-01T10:00:00.250Z");
    }
}
