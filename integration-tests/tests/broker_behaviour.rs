//! Broker behaviours the pipeline relies on, pinned against the test broker
//! (nisshi 0.7.0-pre.2 with `memory://` storage unless
//! `DISTILL_WATCH_TEST_BROKER` names another one).
//!
//! Every test makes its own topics and groups ([`unique_name`]) because tests
//! share one broker and run in parallel. Waits are for observable conditions
//! (assignment, delivery reports, EOF events), each bounded by a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use distill_watch::topics::{TopicError, TopicSpec};
use integration_tests::{
    block_on, broker_is_nisshi, cached_high_watermark, client_config, create_topics,
    group_consumer_config, java_murmur2_partition, produce, producer_config, unique_name, Record,
};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

fn records(topic: &str, partition: i32, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            topic: topic.to_owned(),
            partition: Some(partition),
            key: Some(format!("k{i}").into_bytes()),
            value: format!("p{partition}-v{i}").into_bytes(),
        })
        .collect()
}

fn partition_count(topic: &str) -> usize {
    let consumer: BaseConsumer = client_config().create().expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("metadata");
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("topic in metadata");
    assert!(
        t.error().is_none(),
        "metadata error for {topic}: {:?}",
        t.error()
    );
    let ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    let expected: Vec<i32> = (0..ids.len() as i32).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "partition ids of {topic}");
    ids.len()
}

fn cleanup_policy(topic: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin");
    let results = block_on(admin.describe_configs(
        &[ResourceSpecifier::Topic(topic)],
        &AdminOptions::new().request_timeout(Some(TIMEOUT)),
    ))
    .expect("DescribeConfigs request");
    assert_eq!(results.len(), 1);
    let resource = results
        .into_iter()
        .next()
        .unwrap()
        .unwrap_or_else(|e| panic!("DescribeConfigs for {topic} failed: {e:?}"));
    resource
        .get("cleanup.policy")
        .and_then(|entry| entry.value.clone())
}

/// Polls until the group assignment is non-empty; returns how long it took.
fn wait_for_assignment(consumer: &BaseConsumer, deadline: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            panic!("consumer error while joining: {e}");
        }
        let assigned = consumer.assignment().expect("assignment").count();
        if assigned > 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "no partitions assigned after {deadline:?}"
        );
    }
}

/// (a) CreateTopics makes the requested partition counts and a compacted topic;
/// creating again is a no-op, with another partition count an error.
#[test]
fn create_topics_makes_partitions_and_compacted_topic() {
    let plain = unique_name("create-plain");
    let compacted = unique_name("create-compacted");
    let specs = [
        TopicSpec::new(&plain, 4),
        TopicSpec::new(&compacted, 2).compacted(),
    ];
    create_topics(&specs);

    assert_eq!(partition_count(&plain), 4);
    assert_eq!(partition_count(&compacted), 2);

    // nisshi supports DescribeConfigs for topics and returns the configs given
    // at creation (only those: no broker defaults, so an unset policy is None).
    assert_eq!(cleanup_policy(&compacted).as_deref(), Some("compact"));
    let plain_policy = cleanup_policy(&plain);
    assert!(
        matches!(plain_policy.as_deref(), None | Some("delete")),
        "plain topic has cleanup.policy {plain_policy:?}"
    );

    // Already exists with the same partitions: success.
    create_topics(&specs);

    // Already exists with other partitions: a clear error.
    let err = block_on(distill_watch::topics::create_topics(
        &client_config(),
        &[TopicSpec::new(&plain, 3)],
    ))
    .expect_err("partition mismatch must fail");
    assert!(
        matches!(
            err,
            TopicError::PartitionMismatch {
                expected: 3,
                actual: 4,
                ..
            }
        ),
        "unexpected error: {err}"
    );
}

/// (b) A group member commits offsets with metadata (the pipeline wants to keep
/// its event-time watermark there); `committed()` and, after a restart, a new
/// member's `committed_offsets()` must return the same offsets and metadata.
#[test]
fn offset_commit_round_trips_offset_and_metadata() {
    let topic = unique_name("commit-metadata");
    let group = unique_name("commit-metadata-group");
    create_topics(&[TopicSpec::new(&topic, 2)]);
    let mut all = records(&topic, 0, 10);
    all.extend(records(&topic, 1, 10));
    produce(&producer_config(), &all);

    let sent: BTreeMap<i32, (i64, &str)> = [
        (0, (3, r#"{"v":1,"watermark_ms":1718000000123}"#)),
        (1, (7, r#"{"v":1,"watermark_ms":1718000004567}"#)),
    ]
    .into();
    let mut commit = TopicPartitionList::new();
    for (&p, &(offset, metadata)) in &sent {
        commit
            .add_partition_offset(&topic, p, Offset::Offset(offset))
            .unwrap();
        commit
            .find_partition(&topic, p)
            .unwrap()
            .set_metadata(metadata);
    }

    let read_back = |tpl: &TopicPartitionList| -> BTreeMap<i32, (i64, String)> {
        tpl.elements_for_topic(&topic)
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => o,
                    other => panic!("partition {} committed offset {other:?}", e.partition()),
                };
                (e.partition(), (offset, e.metadata().to_owned()))
            })
            .collect()
    };
    let expected_metadata = |got: &BTreeMap<i32, (i64, String)>| {
        let offsets: BTreeMap<i32, i64> = got.iter().map(|(&p, (o, _))| (p, *o)).collect();
        let sent_offsets: BTreeMap<i32, i64> = sent.iter().map(|(&p, (o, _))| (p, *o)).collect();
        assert_eq!(offsets, sent_offsets, "committed offsets");
        for (p, (_, metadata)) in got {
            if broker_is_nisshi() {
                // BROKER FAULT (nisshi 0.7.0-pre.2): commit metadata is dropped.
                // OffsetFetch answers metadata "" whatever was committed
                // (its Storage::offset_fetch returns offsets only). The
                // pipeline must not keep its watermark in commit metadata on
                // nisshi. If this fails because metadata now round-trips,
                // nisshi was fixed: drop this branch.
                assert_eq!(
                    metadata, "",
                    "nisshi now returns commit metadata for partition {p}; update this test"
                );
            } else {
                assert_eq!(metadata, sent[p].1, "metadata of partition {p}");
            }
        }
    };

    {
        let consumer: BaseConsumer = group_consumer_config(&group).create().expect("consumer");
        consumer.subscribe(&[&topic]).expect("subscribe");
        wait_for_assignment(&consumer, Duration::from_secs(40));
        consumer
            .commit(&commit, CommitMode::Sync)
            .expect("commit with metadata");
        let got = read_back(&consumer.committed(TIMEOUT).expect("committed"));
        expected_metadata(&got);
    }

    // A restarted worker (new consumer, same group, not yet joined) reads them.
    let consumer: BaseConsumer = group_consumer_config(&group).create().expect("consumer");
    let mut query = TopicPartitionList::new();
    query.add_partition(&topic, 0);
    query.add_partition(&topic, 1);
    let got = read_back(
        &consumer
            .committed_offsets(query, TIMEOUT)
            .expect("committed_offsets"),
    );
    expected_metadata(&got);
}

/// (c) With `enable.partition.eof=true`, a group member gets one PartitionEOF
/// per assigned partition, after that partition's last message (and for an
/// empty partition too); with `max.poll.interval.ms=10000` the join is fast.
#[test]
fn partition_eof_after_last_message_per_partition() {
    let topic = unique_name("eof");
    let group = unique_name("eof-group");
    create_topics(&[TopicSpec::new(&topic, 4)]);
    // Partition 3 stays empty.
    let counts: BTreeMap<i32, usize> = [(0, 5), (1, 1), (2, 8), (3, 0)].into();
    let all: Vec<Record> = counts
        .iter()
        .flat_map(|(&p, &n)| records(&topic, p, n))
        .collect();
    produce(&producer_config(), &all);

    let mut config = group_consumer_config(&group);
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create().expect("consumer");
    let started = Instant::now();
    consumer.subscribe(&[&topic]).expect("subscribe");

    let mut joined: Option<Duration> = None;
    let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    // Messages seen in a partition when its EOF arrived.
    let mut eof_at: BTreeMap<i32, usize> = BTreeMap::new();
    let deadline = Duration::from_secs(60);
    while eof_at.len() < counts.len() {
        assert!(
            started.elapsed() < deadline,
            "after {deadline:?}: joined {joined:?}, messages {seen:?}, EOFs {eof_at:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                assert!(
                    !eof_at.contains_key(&m.partition()),
                    "message at offset {} of partition {} after its EOF",
                    m.offset(),
                    m.partition()
                );
                seen.entry(m.partition()).or_default().push(m.offset());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                let n = seen.get(&p).map_or(0, Vec::len);
                assert!(
                    eof_at.insert(p, n).is_none(),
                    "second EOF for partition {p} without new messages"
                );
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
        }
        if joined.is_none() && consumer.assignment().expect("assignment").count() > 0 {
            joined = Some(started.elapsed());
        }
    }
    let joined = joined.expect("assignment seen");
    eprintln!(
        "group join (subscribe -> assignment) took {joined:?}; all EOFs after {:?}",
        started.elapsed()
    );

    let expected_eof: BTreeMap<i32, usize> = counts.clone();
    assert_eq!(
        eof_at, expected_eof,
        "messages seen per partition at its EOF"
    );
    for (p, offsets) in &seen {
        let expected: Vec<i64> = (0..counts[p] as i64).collect();
        assert_eq!(offsets, &expected, "offsets read from partition {p}");
    }
    // Measured ~3 s on nisshi with max.poll.interval.ms=10000 (vs ~23 s with
    // the default); the bound leaves room for a loaded machine.
    assert!(
        joined < Duration::from_secs(20),
        "group join took {joined:?}"
    );
}

/// (d) High watermarks after a non-idempotent producer wrote N messages.
///
/// `fetch_watermarks` (ListOffsets) must say N. The consumer's cached
/// watermark (from Fetch responses) must say N once it has read the partition.
#[test]
fn watermarks_count_messages_from_non_idempotent_producer() {
    let topic = unique_name("watermarks");
    create_topics(&[TopicSpec::new(&topic, 3)]);

    // Partition 0: one record per batch.
    let mut one_per_batch = producer_config();
    one_per_batch.set("batch.num.messages", "1");
    let delivered = produce(&one_per_batch, &records(&topic, 0, 7));
    let offsets: Vec<i64> = delivered.iter().map(|d| d.offset).collect();
    assert_eq!(
        offsets,
        (0..7).collect::<Vec<i64>>(),
        "offsets in partition 0"
    );

    // Partition 2: all 12 records in one batch (queued within linger.ms, then
    // flushed together).
    let mut batched = producer_config();
    batched.set("linger.ms", "1000");
    let delivered = produce(&batched, &records(&topic, 2, 12));
    let offsets: Vec<i64> = delivered.iter().map(|d| d.offset).collect();
    assert_eq!(
        offsets,
        (0..12).collect::<Vec<i64>>(),
        "offsets in partition 2"
    );

    let consumer: BaseConsumer = client_config().create().expect("consumer");
    let marks = |p: i32| {
        consumer
            .fetch_watermarks(&topic, p, TIMEOUT)
            .expect("watermarks")
    };
    assert_eq!(marks(0), (0, 7), "one record per batch");
    assert_eq!(marks(1), (0, 0), "empty partition");
    if broker_is_nisshi() {
        // BROKER FAULT (nisshi 0.7.0-pre.2, memory:// = dynostore): ListOffsets
        // LATEST answers (base offset of the most recently written batch) + 1,
        // not the end of the log, so after a 12-record batch it says 1. Only
        // one-record batches give the right answer. Lag or progress computed
        // from fetch_watermarks/ListOffsets is wrong on nisshi; the Fetch
        // high watermark (checked below) is right.
        assert_eq!(
            marks(2),
            (0, 1),
            "nisshi's ListOffsets LATEST changed; if it is now (0, 12) it was fixed: update this test"
        );
    } else {
        assert_eq!(marks(2), (0, 12), "one 12-record batch");
    }

    // More writes move it on (one-record batches again).
    produce(&one_per_batch, &records(&topic, 0, 3));
    assert_eq!(marks(0), (0, 10));

    // The high watermark in Fetch responses, cached by a consumer that has
    // read to the end, is right whatever the batching.
    let mut config = client_config();
    config.set("group.id", unique_name("watermarks-reader"));
    config.set("enable.auto.commit", "false");
    let reader: BaseConsumer = config.create().expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in [0, 2] {
        assignment
            .add_partition_offset(&topic, p, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&assignment).expect("assign");
    let mut read: BTreeMap<i32, usize> = BTreeMap::new();
    let started = Instant::now();
    while read.get(&0) != Some(&10) || read.get(&2) != Some(&12) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "read only {read:?}"
        );
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => *read.entry(m.partition()).or_default() += 1,
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    let cached = |p: i32| cached_high_watermark(&reader, &topic, p);
    assert_eq!(cached(0), Some(10), "Fetch high watermark of partition 0");
    assert_eq!(cached(2), Some(12), "Fetch high watermark of partition 2");
}

/// (e) With `partitioner=murmur2_random`, a key lands in the same partition
/// number in two topics with equal partition counts (requests and responses are
/// co-partitioned), and that partition is the Java client's default.
#[test]
fn murmur2_random_co_partitions_keys_across_topics() {
    const PARTITIONS: i32 = 6;
    let requests = unique_name("copart-requests");
    let responses = unique_name("copart-responses");
    create_topics(&[
        TopicSpec::new(&requests, PARTITIONS),
        TopicSpec::new(&responses, PARTITIONS),
    ]);

    let keys: Vec<String> = (0..60).map(|i| format!("acct-{i:04}")).collect();
    let all: Vec<Record> = [&requests, &responses]
        .iter()
        .flat_map(|topic| {
            keys.iter().map(|k| Record {
                topic: (*topic).clone(),
                partition: None,
                key: Some(k.clone().into_bytes()),
                value: b"{}".to_vec(),
            })
        })
        .collect();
    let mut config = producer_config();
    config.set("partitioner", "murmur2_random");
    let delivered = produce(&config, &all);

    let mut per_topic: BTreeMap<&str, BTreeMap<&str, i32>> = BTreeMap::new();
    for d in &delivered {
        let key = keys[d.index % keys.len()].as_str();
        per_topic
            .entry(all[d.index].topic.as_str())
            .or_default()
            .insert(key, d.partition);
    }
    let in_requests = &per_topic[requests.as_str()];
    let in_responses = &per_topic[responses.as_str()];
    for key in &keys {
        let p = in_requests[key.as_str()];
        assert_eq!(in_responses[key.as_str()], p, "partition of key {key}");
        assert_eq!(
            p,
            java_murmur2_partition(key.as_bytes(), PARTITIONS),
            "partition of key {key} vs the Java default partitioner"
        );
    }
    let used: BTreeSet<i32> = in_requests.values().copied().collect();
    assert!(used.len() >= 4, "60 keys used only partitions {used:?}");

    // The broker stored each record in the partition the client chose: read
    // both topics back (not via ListOffsets, see the watermark test).
    let mut config = client_config();
    config.set("group.id", unique_name("copart-reader"));
    config.set("enable.auto.commit", "false");
    let reader: BaseConsumer = config.create().expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in [&requests, &responses] {
        for p in 0..PARTITIONS {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    reader.assign(&assignment).expect("assign");
    let mut stored: BTreeMap<(String, String), i32> = BTreeMap::new();
    let started = Instant::now();
    while stored.len() < all.len() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "read back only {} of {} records",
            stored.len(),
            all.len()
        );
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let key = String::from_utf8(m.key().expect("key").to_vec()).expect("utf-8 key");
                let previous = stored.insert((m.topic().to_owned(), key.clone()), m.partition());
                assert!(previous.is_none(), "{key} read twice from {}", m.topic());
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    for ((topic, key), partition) in &stored {
        assert_eq!(
            *partition,
            per_topic[topic.as_str()][key.as_str()],
            "stored partition of {key} in {topic}"
        );
    }
}

/// Producing to a topic nobody created. Apache Kafka creates it when the
/// broker's `auto.create.topics.enable` is on (its default) and fails the
/// delivery otherwise; nisshi creates it (with its default partition count),
/// although it is said not to auto-create. The pipeline therefore never
/// relies on a missing output topic to fail, and its failing-delivery test
/// uses a topic name every broker must refuse.
#[test]
fn producing_to_an_unknown_topic() {
    let topic = unique_name("never-created");
    let illegal = format!("{topic}!illegal name");
    let deliver = |t: &str| {
        let producer: rdkafka::producer::FutureProducer =
            producer_config().create().expect("producer");
        block_on(
            producer.send(
                rdkafka::producer::FutureRecord::<str, [u8]>::to(t)
                    .key("k")
                    .payload(&b"v"[..]),
                rdkafka::util::Timeout::After(TIMEOUT),
            ),
        )
        .map(|_| ())
        .map_err(|(e, _)| e)
    };
    let refused = deliver(&illegal).expect_err("an illegal topic name is refused by every broker");
    assert!(refused.to_string().contains("Invalid topic"), "{refused}");
    if broker_is_nisshi() {
        deliver(&topic).expect("nisshi creates the topic on produce");
        assert!(partition_count(&topic) > 0, "the topic exists now");
    }
}

/// Every record of `topic` a `read_committed` consumer sees, to the end of
/// each partition (EOF events, so the last stable offset must move for this
/// to return).
fn read_committed_values(topic: &str) -> Vec<String> {
    let mut cc = client_config();
    cc.set("group.id", unique_name("read-committed"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false");
    distill_watch::source::read_to_end(&cc, topic, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("reading {topic} read_committed: {e}"))
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap())
        .collect()
}

fn transactional(
    id: &str,
) -> rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> {
    let mut cc = client_config();
    cc.set("transactional.id", id)
        .set("message.timeout.ms", "30000");
    let p: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        cc.create().expect("transactional producer");
    p.init_transactions(TIMEOUT).expect("init_transactions");
    p
}

fn send_value(
    p: &rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    value: &str,
) {
    p.send(
        rdkafka::producer::BaseRecord::<str, str>::to(topic)
            .partition(0)
            .key("k")
            .payload(value),
    )
    .map_err(|(e, _)| e)
    .expect("enqueue");
}

/// (h) Exactly-once as the worker uses it: input offsets sent in a
/// transaction become the group's committed offsets when it commits and not
/// when it aborts; a producer initialised with the transactional.id of one
/// that left a transaction open (a crashed or fenced owner) ends that
/// transaction, so readers are not held back, and fences the old producer;
/// a `read_committed` reader sees committed records only (not on nisshi).
#[test]
fn offsets_in_a_transaction_commit_with_it_and_a_new_owner_fences_the_old() {
    let input = unique_name("txn-in");
    let output = unique_name("txn-out");
    let group = unique_name("txn-group");
    create_topics(&[TopicSpec::new(&input, 2), TopicSpec::new(&output, 1)]);
    let mut all = records(&input, 0, 10);
    all.extend(records(&input, 1, 10));
    produce(&producer_config(), &all);

    let consumer: BaseConsumer = group_consumer_config(&group).create().expect("consumer");
    consumer.subscribe(&[&input]).expect("subscribe");
    wait_for_assignment(&consumer, Duration::from_secs(40));
    let group_metadata = consumer.group_metadata().expect("group metadata");
    let offsets = |a: i64, b: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&input, 0, Offset::Offset(a))
            .unwrap();
        tpl.add_partition_offset(&input, 1, Offset::Offset(b))
            .unwrap();
        tpl
    };
    let committed = || -> Vec<Offset> {
        let probe: BaseConsumer = group_consumer_config(&group).create().expect("probe");
        let mut q = TopicPartitionList::new();
        q.add_partition(&input, 0);
        q.add_partition(&input, 1);
        probe
            .committed_offsets(q, TIMEOUT)
            .expect("committed_offsets")
            .elements()
            .iter()
            .map(|e| e.offset())
            .collect()
    };

    let txn_id = unique_name("txn-id");
    let p = transactional(&txn_id);
    p.begin_transaction().unwrap();
    for v in ["a", "b", "c"] {
        send_value(&p, &output, v);
    }
    p.send_offsets_to_transaction(&offsets(4, 6), &group_metadata, TIMEOUT)
        .expect("offsets in the transaction");
    p.commit_transaction(TIMEOUT).expect("commit");
    assert_eq!(committed(), vec![Offset::Offset(4), Offset::Offset(6)]);

    p.begin_transaction().unwrap();
    send_value(&p, &output, "aborted");
    p.send_offsets_to_transaction(&offsets(8, 9), &group_metadata, TIMEOUT)
        .unwrap();
    // On the broker, not just queued (abort would purge a queued record).
    p.flush(TIMEOUT).expect("flush");
    p.abort_transaction(TIMEOUT).expect("abort");
    assert_eq!(
        committed(),
        vec![Offset::Offset(4), Offset::Offset(6)],
        "an aborted transaction's offsets are not committed"
    );

    // The owner leaves a transaction open (records on the broker, never
    // committed), then a new owner starts with the same transactional.id.
    p.begin_transaction().unwrap();
    send_value(&p, &output, "left-open");
    p.flush(TIMEOUT).expect("flush");
    let next = transactional(&txn_id);
    next.begin_transaction().unwrap();
    send_value(&next, &output, "d");
    next.commit_transaction(TIMEOUT).expect("new owner commits");
    let seen = read_committed_values(&output);
    if broker_is_nisshi() {
        // BROKER FAULT (nisshi 0.7.0-pre.2): aborted records are not hidden
        // from read_committed consumers. Its fetch answers no aborted
        // transactions (dynostore's `aborted_transactions` returns an empty
        // list), so clients cannot filter them; an earlier check passed only
        // because librdkafka purges records still queued at abort. Records
        // of a transaction that was open when its producer died stay visible
        // after the next owner aborts it. The worker sends a cycle's
        // checkpoint only after its scores were acknowledged, so a visible
        // aborted checkpoint always comes with all its scores (the next
        // owner resumes after them); only a death between the first score
        // reaching the broker and the checkpoint doing so leaves duplicates
        // (byte-identical) on this broker. If this fails because the records
        // are hidden now, nisshi was fixed: drop this branch.
        assert_eq!(
            seen,
            vec!["a", "b", "c", "aborted", "left-open", "d"],
            "nisshi now hides aborted records; update this test"
        );
    } else {
        assert_eq!(
            seen,
            vec!["a", "b", "c", "d"],
            "aborted and abandoned records hidden, and the reader not held back"
        );
    }
    let zombie = p.commit_transaction(TIMEOUT);
    assert!(zombie.is_err(), "the old owner is fenced: {zombie:?}");
}

/// nisshi 0.7.0-pre.2 fault: its command line declares `--cert` and
/// `--key` as conflicting, so a broker given both (what a TLS listener
/// needs) refuses to start, and no TLS listener can be configured. Worked
/// around by the TLS proxy of `integration_tests::secure` (a real TLS
/// endpoint, as Apache Kafka's). When this fails, nisshi may serve TLS
/// itself and the proxy can go.
#[test]
fn nisshi_refuses_cert_and_key_together() {
    let dir = std::env::temp_dir().join(unique_name("tls-flags"));
    std::fs::create_dir_all(&dir).unwrap();
    integration_tests::secure::make_certs(&dir).unwrap();
    let binary = local_broker::ensure_installed().unwrap();
    let cert = dir.join("server.pem").display().to_string();
    let key = dir.join("server-key.pem").display().to_string();
    let started = local_broker::LocalBroker::start_with(
        &binary,
        None,
        &local_broker::StartOptions {
            args: vec!["--cert".into(), cert, "--key".into(), key],
            ..Default::default()
        },
    );
    match started {
        Err(local_broker::BrokerError::ExitedEarly { log_tail, .. }) => assert!(
            log_tail.contains("'--cert <CERT>' cannot be used with '--key <KEY>'"),
            "{log_tail}"
        ),
        Err(e) => panic!("{e}"),
        Ok(b) => panic!(
            "nisshi started with --cert and --key on {}: see whether it serves TLS now",
            b.bootstrap
        ),
    }
}

/// nisshi 0.7.0-pre.2 fault: `memory://` storage keeps no SCRAM users, and
/// `nisshi user create` cannot authenticate, so a broker started with
/// `--authentication` on memory storage admits nobody. Worked around by
/// `integration_tests::secure`: users created on an `sqlite://` file by a
/// broker without authentication, then the authenticating broker on it.
#[test]
fn nisshi_on_memory_storage_keeps_no_users() {
    let binary = local_broker::ensure_installed().unwrap();
    let broker = local_broker::LocalBroker::start(&binary, None).unwrap();
    let created = std::process::Command::new(&binary)
        .args(["user", "create", "--broker"])
        .arg(format!("tcp://{}", broker.bootstrap))
        .args(["--mechanism", "scram512", "someone", "Some-Passw0rd"])
        .output()
        .unwrap();
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanisms", "SCRAM-SHA-512")
        .set("sasl.username", "someone")
        .set("sasl.password", "Some-Passw0rd")
        .set("log_level", "0")
        .create()
        .unwrap();
    let answer = client.fetch_metadata(None, Duration::from_secs(5));
    assert!(
        !created.status.success() || answer.is_err(),
        "a SCRAM user created on memory storage authenticated: nisshi now keeps users there ({})",
        String::from_utf8_lossy(&created.stderr)
    );
}
