//! Memory of the cluster stage under a key shared by a whole population.
//!
//! `cargo bench -p distill-watch-worker --bench cluster_memory`
//!
//! One hour of member rows (one pane of the shipped hopping windows; each
//! row is held once, in its pane, whatever the number of windows over it)
//! in which N accounts (1,000 to 100,000) share
//! one key, as a popular user agent or a cloud's address range would, each
//! also with a key of its own (its card). Each account sends one member row
//! per 10-minute base window under each key: 12 rows an hour. The rows go
//! through the cluster stage's aggregation and scoring (`ClusterWindows`,
//! the shipped `jobs/clusters.toml`), once with the shipped member limit and
//! once without one, each in its own child process so its peak RSS is its
//! own. Printed per run: members held for the shared key, bytes held by
//! open windows (counted by the aggregation) split into the shared key and
//! the accounts' own keys, peak RSS. With the limit, the shared key turns
//! broad at `max_members` and its held bytes stay flat as N grows 100x;
//! the accounts' own keys grow with N, as the account stage's windows do.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use distill_watch::cluster::{ClusterModel, ClusterWindows, MemberRow};

const SIZES: [u64; 3] = [1_000, 10_000, 100_000];

fn row(account: u64, kind: &str, key: String, window: i64) -> MemberRow {
    MemberRow {
        kind: kind.into(),
        key,
        account_id: format!("acct-{account:06}"),
        window_start: window * 600_000,
        window_end: (window + 1) * 600_000,
        requests: 1 + (account % 7) as i64,
        output_tokens: 400,
        minute_counts: vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        templates: vec![(account % 5000) as i64],
        tool_requests: 0,
        tool_schemas: vec![],
        account_age_days: Some(100.0 + (account % 900) as f64),
        signup_day: Some(19_000 + (account % 1000) as i64),
        signup_channel: Some("web".into()),
        verified: account.is_multiple_of(3),
        own_score: 0.05,
    }
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn child(n: u64, capped: bool) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs/clusters.toml");
    let mut model = ClusterModel::load(&path).expect("shipped cluster model");
    if !capped {
        model.limits.max_members = usize::MAX;
    }
    let limits = model.limits;
    let started = Instant::now();
    let mut shared = ClusterWindows::default();
    let mut own = ClusterWindows::default();
    let mut offset = 0;
    let (mut peak_shared, mut peak_own) = (0, 0);
    for w in 0..6 {
        for a in 0..n {
            shared.add(
                &limits,
                &row(a, "user_agent", "popular-client/1.0".into(), w),
                offset,
                i64::MIN,
            );
            own.add(
                &limits,
                &row(a, "payment", format!("card-{a}"), w),
                offset + 1,
                i64::MIN,
            );
            offset += 2;
        }
        peak_shared = peak_shared.max(shared.held_bytes());
        peak_own = peak_own.max(own.held_bytes());
    }
    let held_members = shared.held_members();
    let clusters = shared.close(&limits, 0, model.min_members);
    let scored: Vec<_> = clusters.into_iter().map(|c| model.score(c)).collect();
    let broad = scored.iter().filter(|r| r.cluster.broad).count();
    let flagged = scored
        .iter()
        .filter(|r| r.level >= distill_watch::score::Level::High)
        .count();
    let estimate = scored.first().map_or(0, |r| r.cluster.member_count);
    println!(
        "FIGURES {held_members} {peak_shared} {peak_own} {} {broad} {flagged} {estimate} {}",
        peak_rss_bytes(),
        started.elapsed().as_millis()
    );
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / 1_048_576.0)
}

fn main() {
    if let Ok(spec) = std::env::var("DW_BENCH_CHILD") {
        let (n, capped) = spec.split_once(' ').unwrap();
        child(n.parse().unwrap(), capped == "true");
        return;
    }
    println!("cluster stage memory: one hour of member rows (one pane), N accounts sharing one key (plus one key each of their own)");
    println!("shipped jobs/clusters.toml; one child process per run\n");
    println!(
        "{:>8} {:>7} {:>9} {:>14} {:>14} {:>12} {:>6} {:>8} {:>9} {:>7}",
        "accounts",
        "limit",
        "held",
        "shared key",
        "own keys",
        "peak RSS",
        "broad",
        "flagged",
        "estimate",
        "ms"
    );
    for n in SIZES {
        for capped in [true, false] {
            let out = Command::new(std::env::current_exe().unwrap())
                .env("DW_BENCH_CHILD", format!("{n} {capped}"))
                .output()
                .expect("re-running the bench binary");
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("FIGURES "))
                .unwrap_or_else(|| {
                    panic!(
                        "child failed:\n{text}\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
            let v: Vec<u64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            println!(
                "{:>8} {:>7} {:>9} {:>14} {:>14} {:>12} {:>6} {:>8} {:>9} {:>7}",
                n,
                if capped { "yes" } else { "none" },
                v[0],
                mib(v[1]),
                mib(v[2]),
                mib(v[3]),
                v[4],
                v[5],
                v[6],
                v[7]
            );
        }
    }
    println!("\nheld: members kept for the shared key when the window closes; shared key / own keys: most bytes held at once by open windows (counted); flagged: clusters at high or above; estimate: the member count the record reports (bottom-k sketch once broad)");
}
