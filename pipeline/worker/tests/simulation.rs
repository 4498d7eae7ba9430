//! Deterministic simulation of the worker loop: the production
//! `WorkerLoop` over the in-memory broker (`distill_watch::simulate`), driven
//! by a seeded schedule of faults, compared record by record, byte for byte,
//! with a fault-free run of the same input.
//!
//! Faults: workers crashing at any step (their member lingering in the group
//! until its session expires, or leaving at once), workers joining
//! (rebalances), commits that fail before or after they took effect,
//! messages delivered again, polls interleaving partitions and topics
//! differently; the input itself carries the generator's streaming faults
//! (reordering, late events, duplicates, slow and orphan responses, account
//! updates, unknown accounts).
//!
//! 200 seeds run by default. `DISTILL_WATCH_TEST_SIM_SEEDS=5000` runs more;
//! `DISTILL_WATCH_TEST_SIM_SEED=N` runs seed N alone and prints its schedule.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use distill_watch::config::Config;
use distill_watch::process::Detector;
use distill_watch::simulate::{
    account_table, CommitFault, DlqOut, MemAccounts, MemBroker, MemSink, MemSource, Rng,
};
use distill_watch::window::Side;
use distill_watch::worker::{Progress, Step, WorkerLoop};
use distill_watch_traffic::partition::partition_of;
use distill_watch_traffic::Scenario;

const PARTITIONS: i32 = 2;
/// Different inputs the seeds cycle through (each has its reference run).
const INPUTS: u64 = 4;

struct Input {
    light: bool,
    events: Vec<(Side, i32, String, Vec<u8>, i64)>,
    accounts: Arc<distill_watch::enrich::AccountTable>,
    cfg: Config,
}

/// The shipped jobs and model, or (`light`) only the volume job (with a
/// lateness) and three small roll-ups of it (one per window kind) with a
/// one-rule model: the
/// loop does not care what the jobs compute, and a window of one raw job
/// scores several times faster, so most seeds use it.
fn detector(light: bool) -> &'static Detector {
    static FULL: OnceLock<Detector> = OnceLock::new();
    static LIGHT: OnceLock<Detector> = OnceLock::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let load = |jobs: &Path, model: &Path| {
        runtime()
            .block_on(Detector::load(jobs, model, 120_000))
            .unwrap()
    };
    if !light {
        return FULL.get_or_init(|| load(&root.join("jobs"), &root.join("jobs/scoring.toml")));
    }
    LIGHT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dw-sim-jobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // With a lateness, so that late events revise windows (the roll-ups
        // then read its windows once settled).
        let volume = std::fs::read_to_string(root.join("jobs/volume.sql")).unwrap();
        std::fs::write(
            dir.join("volume.sql"),
            volume.replace("-- lateness: 0s", "-- lateness: 40m"),
        )
        .unwrap();
        // Roll-ups of every window kind: their held rows must survive every
        // crash and takeover too.
        for (name, window, sql) in [
            ("rolling", "hop 30m slide 10m", "sum(requests) AS requests_30m"),
            ("sessions", "session 20m max 1h", "sum(requests) AS session_requests, count(*) AS session_windows"),
            ("hourly", "tumble 1h", "sum(requests) AS requests_1h"),
        ] {
            std::fs::write(
                dir.join(format!("{name}.sql")),
                format!("-- name: {name}\n-- input: job:volume\n-- key: account_id\n-- window: {window}\nSELECT account_id, {sql} FROM volume GROUP BY account_id\n"),
            )
            .unwrap();
        }
        let model = dir.join("scoring.toml");
        std::fs::write(
            &model,
            "model_version = \"sim\"\ntop_reasons = 2\n[levels]\nelevated = 0.3\nhigh = 0.6\ncritical = 0.8\n[[rule]]\nfeature = \"requests\"\nweight = 1.0\nlow = 1.0\nhigh = 30.0\nwhy = \"volume\"\n",
        )
        .unwrap();
        load(&dir, &model)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An hour of the ci scenario (every streaming fault, at ten times the
/// usual shares), small, plus a few undecodable messages.
fn input(n: u64, light: bool) -> Input {
    let mut scenario = Scenario::builtin("ci").unwrap();
    scenario.duration_ms = 60 * 60_000;
    let t = distill_watch_traffic::generate(&scenario, 100 + n, 0.05);
    let mut events = Vec::new();
    for (side, records) in [
        (Side::Requests, &t.requests),
        (Side::Responses, &t.responses),
    ] {
        // At most 60 on-time events per account and topic (every delayed
        // one is kept): every kind of traffic and fault, without the
        // heaviest accounts' thousands.
        let mut per_account: BTreeMap<&str, usize> = BTreeMap::new();
        for r in records.iter() {
            let n = per_account.entry(r.key.as_str()).or_default();
            *n += 1;
            if *n > 60 && r.deliver_ms == r.event_time_ms {
                continue;
            }
            let p = partition_of(r.key.as_bytes(), PARTITIONS);
            events.push((side, p, r.key.clone(), r.value.clone(), r.deliver_ms));
        }
    }
    // Garbage now and then: the DLQ's other path (decode rejects).
    for i in (7..events.len()).step_by(499) {
        let (side, p, _, _, ts) = events[i].clone();
        events.insert(i, (side, p, "garbage".into(), b"\x00not avro".to_vec(), ts));
    }
    let accounts: Vec<(&str, &[u8], i64)> = t
        .accounts
        .iter()
        .map(|r| (r.key.as_str(), r.value.as_slice(), r.deliver_ms))
        .collect();
    let mut cfg = Config::defaults();
    cfg.worker.exit_at_eof = true;
    // Small polls: many steps, many places to crash.
    cfg.worker.batch_max_messages = 25;
    // A small memory budget: partitions get paused and resumed.
    cfg.worker.max_buffered_rows = 120;
    cfg.worker.group_done_timeout = Duration::from_secs(365 * 86_400);
    cfg.window.out_of_orderness = scenario.realism.out_of_orderness;
    cfg.window.max_response_delay = scenario.realism.max_response_delay;
    Input {
        light,
        events,
        accounts: Arc::new(account_table(&accounts).unwrap()),
        cfg,
    }
}

fn inputs() -> &'static Vec<(Input, Outcome)> {
    static I: OnceLock<Vec<(Input, Outcome)>> = OnceLock::new();
    I.get_or_init(|| {
        (0..INPUTS)
            .map(|n| {
                // One input in four is scored with the shipped jobs.
                let i = input(n, n != 0);
                let (reference, pauses, revisions) = simulate_counting(&i, n, None);
                assert!(
                    pauses > 0,
                    "input {n}: the memory budget never paused a partition"
                );
                assert!(
                    revisions > 0,
                    "input {n}: no late event within a job's lateness revised a window"
                );
                assert!(
                    reference.scores.len() > 20 && !reference.dlq.is_empty(),
                    "input {n} is too small to test with: {} scores, {} DLQ records",
                    reference.scores.len(),
                    reference.dlq.len()
                );
                (i, reference)
            })
            .collect()
    })
}

/// Committed outputs, sorted: equal means the same records, each as often.
#[derive(Debug, PartialEq)]
struct Outcome {
    scores: Vec<(Vec<u8>, Vec<u8>)>,
    dlq: Vec<DlqOut>,
}

type Loop<'a> = WorkerLoop<'a, MemSource, MemSink, MemAccounts>;

struct Slot<'a> {
    worker: Option<Loop<'a>>,
    member: u64,
    /// A crashed worker's member stays in the group this many more ticks.
    lingering: Option<u32>,
}

/// Run `input` on the in-memory broker. Without a `seed` for faults: one
/// worker, no faults (the reference). `schedule` collects what happened.
fn simulate(input: &Input, poll_seed: u64, faults: Option<(u64, &mut Vec<String>)>) -> Outcome {
    simulate_counting(input, poll_seed, faults).0
}

/// [`simulate`], with how often the finishing worker paused partitions.
fn simulate_counting(
    input: &Input,
    poll_seed: u64,
    faults: Option<(u64, &mut Vec<String>)>,
) -> (Outcome, u64, usize) {
    let detector = detector(input.light);
    runtime().block_on(async {
        let broker = MemBroker::new(PARTITIONS, ["requests", "responses"], poll_seed);
        for (side, p, key, value, ts) in &input.events {
            broker.append(*side, *p, Some(key.as_bytes()), value, *ts);
        }
        let millis = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        let clock_ms = millis.clone();
        let clock: distill_watch::worker::Clock =
            Arc::new(move || base + Duration::from_millis(clock_ms.load(Ordering::Relaxed)));
        let progress = Progress::default();
        let start = |broker: &MemBroker| -> Slot<'_> {
            let source = broker.join();
            let member = source.member();
            let w = WorkerLoop::new(
                &input.cfg,
                detector,
                source,
                broker.sink(),
                MemAccounts(input.accounts.clone()),
            )
            .unwrap()
            .with_clock(clock.clone());
            Slot {
                worker: Some(w),
                member,
                lingering: None,
            }
        };
        let mut slots = vec![start(&broker)];
        let (mut rng, mut log) = match faults {
            Some((seed, log)) => (Some(Rng(seed)), Some(log)),
            None => (None, None),
        };
        let mut note = |s: String| {
            if let Some(l) = log.as_mut() {
                l.push(s);
            }
        };
        const FAULT_TICKS: u32 = 600;
        let mut pauses = 0;
        for tick in 0.. {
            assert!(tick < 200_000, "the simulation does not finish");
            millis.fetch_add(5, Ordering::Relaxed);
            // Crashed members leave when their session expires.
            for s in slots.iter_mut() {
                if let Some(n) = s.lingering.as_mut() {
                    if *n == 0 {
                        broker.leave(s.member);
                        s.lingering = None;
                        note(format!("{tick}: member {} expired", s.member));
                    } else {
                        *n -= 1;
                    }
                }
            }
            let live: Vec<usize> = (0..slots.len())
                .filter(|&i| slots[i].worker.is_some())
                .collect();
            let faulty = rng.is_some() && tick < FAULT_TICKS;
            if live.is_empty() {
                note(format!("{tick}: start a worker (none alive)"));
                slots.push(start(&broker));
                continue;
            }
            let roll = if faulty {
                rng.as_mut().unwrap().below(100)
            } else {
                99
            };
            let r = rng.as_mut();
            let pick =
                |r: Option<&mut Rng>| live[r.map_or(0, |r| r.below(live.len() as u64) as usize)];
            match roll {
                0..=2 => {
                    let i = pick(r);
                    let linger = rng.as_mut().unwrap().below(2) == 0;
                    slots[i].worker = None;
                    if linger {
                        let n = 1 + rng.as_mut().unwrap().below(40) as u32;
                        slots[i].lingering = Some(n);
                        note(format!(
                            "{tick}: crash member {} (session expires in {n})",
                            slots[i].member
                        ));
                    } else {
                        broker.leave(slots[i].member);
                        note(format!("{tick}: crash member {} (leaves)", slots[i].member));
                    }
                }
                3..=4 if live.len() < 3 => {
                    let s = start(&broker);
                    note(format!("{tick}: member {} joins", s.member));
                    slots.push(s);
                }
                5 => {
                    let fault = if rng.as_mut().unwrap().below(2) == 0 {
                        CommitFault::Before
                    } else {
                        CommitFault::After
                    };
                    note(format!("{tick}: next commit fails {fault:?}"));
                    broker.fail_next_commit(fault);
                }
                6 => {
                    let i = pick(r);
                    let rr = rng.as_mut().unwrap();
                    let side = if rr.below(2) == 0 {
                        Side::Requests
                    } else {
                        Side::Responses
                    };
                    let p = rr.below(PARTITIONS as u64) as i32;
                    let back = 1 + rr.below(30) as i64;
                    note(format!(
                        "{tick}: member {} gets {side:?}/{p} again from {back} back",
                        slots[i].member
                    ));
                    broker.redeliver(slots[i].member, (side, p), back);
                }
                _ => {
                    let i = pick(r);
                    let w = slots[i].worker.as_mut().unwrap();
                    match w.step(&progress).await {
                        Ok(Step::Continue) => {}
                        Ok(Step::Done) => {
                            pauses = w.metrics().pauses;
                            break;
                        }
                        Err(e) => {
                            // A worker stops on any error; its consumer closes.
                            note(format!("{tick}: member {} stops: {e}", slots[i].member));
                            slots[i].worker = None;
                            broker.leave(slots[i].member);
                        }
                    }
                }
            }
        }
        let out = broker.outputs();
        let revisions = out.score_records.iter().filter(|s| s.revision > 0).count();
        let mut scores = out.scores;
        scores.sort();
        let mut dlq = out.dlq;
        dlq.sort();
        (Outcome { scores, dlq }, pauses, revisions)
    })
}

fn run_seed(seed: u64) -> Result<(), String> {
    let (input, reference) = &inputs()[(seed % INPUTS) as usize];
    let mut schedule = Vec::new();
    let got = simulate(input, seed, Some((seed, &mut schedule)));
    if got == *reference {
        return Ok(());
    }
    let missing = reference
        .scores
        .iter()
        .filter(|r| !got.scores.contains(r))
        .count();
    let extra = got
        .scores
        .iter()
        .filter(|r| !reference.scores.contains(r))
        .count();
    if std::env::var("DW_DEBUG").is_ok() {
        let set = distill_watch::schemas::SchemaSet::builtin();
        let show = |(k, v): &(Vec<u8>, Vec<u8>)| {
            let (_, body) = distill_watch::schemas::unframe(v).unwrap();
            let d =
                apache_avro::from_avro_datum(&set.risk_score.avro, &mut &body[..], None).unwrap();
            format!("{} {:?}", String::from_utf8_lossy(k), d)
        };
        for r in got.scores.iter().filter(|r| !reference.scores.contains(r)) {
            eprintln!("EXTRA {}", show(r));
        }
    }
    Err(format!(
        "seed {seed}: {} scores vs {} in the fault-free run ({missing} missing, {extra} not in it; {} vs {} DLQ records)\nschedule:\n  {}\nrerun with DISTILL_WATCH_TEST_SIM_SEED={seed}",
        got.scores.len(),
        reference.scores.len(),
        got.dlq.len(),
        reference.dlq.len(),
        schedule.join("\n  ")
    ))
}

#[test]
fn seeded_fault_schedules_change_no_byte_of_the_output() {
    if let Ok(seed) = std::env::var("DISTILL_WATCH_TEST_SIM_SEED") {
        let seed: u64 = seed.parse().expect("a seed number");
        if let Err(e) = run_seed(seed) {
            panic!("{e}");
        }
        return;
    }
    let seeds: u64 = std::env::var("DISTILL_WATCH_TEST_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    inputs();
    // Seeds are independent: spread them over the cores.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..seeds)
                        .step_by(threads as usize)
                        .filter_map(|s| run_seed(s).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a simulation thread panicked"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds differ; the first:\n{}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn the_simulation_exercises_its_faults() {
    // How each kind of fault shows in a schedule.
    const KINDS: [&str; 7] = [
        "crash",
        "joins",
        "expired",
        "commit fails Before",
        "commit fails After",
        "again",
        "stops",
    ];
    // Over the default seeds, every kind of fault happens.
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in 0..40 {
        let (input, _) = &inputs()[(seed % INPUTS) as usize];
        let mut schedule = Vec::new();
        simulate(input, seed, Some((seed, &mut schedule)));
        for line in &schedule {
            for k in KINDS.iter().filter(|k| line.contains(*k)) {
                *kinds.entry(k).or_default() += 1;
            }
        }
    }
    for k in KINDS {
        assert!(
            kinds.get(k).copied().unwrap_or(0) > 0,
            "no {k} in 40 seeds: {kinds:?}"
        );
    }
}
