//! Cluster stage side: member rows → per (cluster key, window) aggregates
//! → cluster features.
//!
//! Bounded memory: a key keeps at most `max_members` members per window.
//! The member that would exceed it turns the key **broad** for that window:
//! its members are dropped and never flagged, and only order-independent
//! totals and a bottom-k sketch of the member ids (to estimate how many)
//! are kept. Which members a window holds therefore never depends on the
//! order rows arrive in, and a key shared by 100,000 accounts costs no more
//! than one shared by `max_members`.

use std::collections::{BTreeMap, BTreeSet};

use super::keys::MemberRow;

/// Features a cluster window reports, in output order (sorted by name).
pub const FEATURES: [&str; 12] = [
    "activity_sync",
    "discounted_signup_share",
    "member_score_mean",
    "members",
    "requests_per_member",
    "same_signup_day_share",
    "template_overlap_share",
    "tool_schema_novelty",
    "total_requests",
    "unverified_share",
    "volume_gini",
    "young_account_share",
];

/// Accounts younger than this count as young (days).
pub const YOUNG_DAYS: f64 = 30.0;

#[derive(Debug, Clone)]
struct Member {
    requests: i64,
    minutes: Vec<u16>,
    templates: BTreeSet<i64>,
    /// Base windows (member rows) in which the member sent tools.
    tool_windows: i64,
    tool_schemas: BTreeSet<i64>,
    age_days: Option<f64>,
    signup_day: Option<i64>,
    channel: Option<String>,
    verified: bool,
    own_score: f64,
}

/// Bottom-k sketch of 64-bit hashes: estimates a distinct count from the k
/// smallest hashes, whatever order they were added in.
#[derive(Debug, Clone, Default)]
pub struct BottomK {
    k: usize,
    smallest: BTreeSet<u64>,
}

impl BottomK {
    pub fn new(k: usize) -> Self {
        BottomK {
            k: k.max(2),
            smallest: BTreeSet::new(),
        }
    }
    pub fn add(&mut self, id: &str) {
        let h = hash64(id.as_bytes());
        if self.smallest.len() < self.k {
            self.smallest.insert(h);
        } else if let Some(&max) = self.smallest.last() {
            if h < max && self.smallest.insert(h) {
                self.smallest.pop_last();
            }
        }
    }
    /// The sketch of the union of both sets of ids.
    pub fn merge(&mut self, other: &BottomK) {
        self.smallest.extend(other.smallest.iter().copied());
        while self.smallest.len() > self.k {
            self.smallest.pop_last();
        }
    }

    pub fn estimate(&self) -> u64 {
        if self.smallest.len() < self.k {
            return self.smallest.len() as u64;
        }
        let kth = *self.smallest.last().expect("k > 0") as f64 / u64::MAX as f64;
        ((self.k - 1) as f64 / kth).round() as u64
    }
}

/// FNV-1a then the splitmix64 finaliser: stable across builds and
/// platforms (the sketch's estimate is part of replayable output).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// One cluster key in one window.
#[derive(Debug, Clone)]
pub struct KeyWindow {
    members: BTreeMap<String, Member>,
    pub broad: bool,
    sketch: BottomK,
    pub requests: i64,
    pub rows: u64,
}

/// What a closed cluster window reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterFeatures {
    pub kind: String,
    pub key: String,
    pub window_start: i64,
    pub window_end: i64,
    /// Sorted; empty when broad.
    pub members: Vec<String>,
    /// Requests of each member in the window, in `members` order.
    pub member_requests: Vec<i64>,
    /// Whether each member is typical of the cluster (see [`CONSENSUS`]):
    /// only typical members of a flagged cluster get a member score.
    pub typical: Vec<bool>,
    pub member_count: u64,
    pub broad: bool,
    pub requests: i64,
    /// Named as in [`FEATURES`].
    pub features: Vec<(String, Option<f64>)>,
}

/// Limits of the aggregation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Window length.
    pub window_ms: i64,
    /// A window starts every `slide_ms` (hopping windows); equal to
    /// `window_ms` for tumbling ones.
    pub slide_ms: i64,
    pub max_members: usize,
    pub sketch_size: usize,
    /// How many of the identity attributes most members share (young,
    /// unverified, discounted sign-up, the common sign-up day) a typical
    /// member may lack. Identity can be bought (an aged or verified
    /// account resold to the campaign); behaviour (shared templates, its
    /// own score, its volume) must still match.
    pub typical_may_lack: usize,
}

/// Open cluster windows of one partition of the features topic, kept as
/// **panes** (Arroyo's habit): each member row is added once, to the pane
/// of `slide` it falls in, and a window is the merge of its panes when it
/// closes. A row therefore costs the same memory whether windows hop or
/// tumble, and a pane is dropped once no open window needs it.
#[derive(Debug, Clone, Default)]
pub struct ClusterWindows {
    /// By pane start, then (kind, key).
    panes: BTreeMap<i64, BTreeMap<(String, String), KeyWindow>>,
    /// Oldest input offset of each pane's rows.
    first_offset: BTreeMap<i64, i64>,
}

impl Limits {
    /// Width of one slot of a member's activity series: a minute, or
    /// 1/[`SERIES_SLOTS`] of a longer window, so a series stays small.
    pub fn slot_ms(&self) -> i64 {
        (self.window_ms / SERIES_SLOTS).max(60_000)
    }

    /// Start of the pane (a `slide` of time) holding time `t`.
    pub fn pane_of(&self, t: i64) -> i64 {
        t.div_euclid(self.slide_ms) * self.slide_ms
    }

    /// Starts of the cluster windows time `t` is in, latest first.
    pub fn windows_of(&self, t: i64) -> impl Iterator<Item = i64> + '_ {
        let last = self.pane_of(t);
        (0..)
            .map(move |k| last - k * self.slide_ms)
            .take_while(move |s| s + self.window_ms > t)
    }
}

/// Slots of a member's activity series in a window longer than an hour.
pub const SERIES_SLOTS: i64 = 60;

impl KeyWindow {
    fn new(sketch_size: usize) -> Self {
        KeyWindow {
            members: BTreeMap::new(),
            broad: false,
            sketch: BottomK::new(sketch_size),
            requests: 0,
            rows: 0,
        }
    }
}

impl ClusterWindows {
    /// Adds a member row to its pane, unless every window the pane is in
    /// ends at or before `closed` (those were emitted already).
    pub fn add(&mut self, limits: &Limits, row: &MemberRow, offset: i64, closed: i64) {
        let pane = limits.pane_of(row.window_start);
        if pane + limits.window_ms <= closed {
            return;
        }
        let first = self.first_offset.entry(pane).or_insert(offset);
        *first = (*first).min(offset);
        let slot_ms = limits.slot_ms();
        let slots = (limits.slide_ms / slot_ms).max(1) as usize;
        let kw = self
            .panes
            .entry(pane)
            .or_default()
            .entry((row.kind.clone(), row.key.clone()))
            .or_insert_with(|| KeyWindow::new(limits.sketch_size));
        kw.requests += row.requests;
        kw.rows += 1;
        kw.sketch.add(&row.account_id);
        if kw.broad {
            return;
        }
        if !kw.members.contains_key(&row.account_id) && kw.members.len() >= limits.max_members {
            kw.broad = true;
            kw.members = BTreeMap::new();
            return;
        }
        let m = kw
            .members
            .entry(row.account_id.clone())
            .or_insert_with(|| Member {
                requests: 0,
                minutes: vec![0; slots],
                templates: BTreeSet::new(),
                tool_windows: 0,
                tool_schemas: BTreeSet::new(),
                age_days: row.account_age_days,
                signup_day: row.signup_day,
                channel: row.signup_channel.clone(),
                verified: row.verified,
                own_score: 0.0,
            });
        m.requests += row.requests;
        for (i, c) in row.minute_counts.iter().enumerate() {
            let at = row.window_start + i as i64 * 60_000 - pane;
            if at < 0 {
                continue;
            }
            if let Some(slot) = m.minutes.get_mut((at / slot_ms) as usize) {
                *slot = slot.saturating_add((*c).clamp(0, u16::MAX as i32) as u16);
            }
        }
        m.templates.extend(row.templates.iter().copied());
        m.tool_windows += i64::from(row.tool_requests > 0);
        m.tool_schemas.extend(row.tool_schemas.iter().copied());
        m.own_score = m.own_score.max(row.own_score);
    }

    /// Starts of the windows not emitted yet (ending after `closed`) that
    /// hold rows, ascending.
    pub fn starts(&self, limits: &Limits, closed: i64) -> Vec<i64> {
        let mut out = BTreeSet::new();
        for &pane in self.panes.keys() {
            out.extend(
                limits
                    .windows_of(pane)
                    .filter(|s| s + limits.window_ms > closed),
            );
        }
        out.into_iter().collect()
    }

    /// Of those, the windows ending at or before `through`.
    pub fn closable(&self, limits: &Limits, through: i64, closed: i64) -> Vec<i64> {
        self.starts(limits, closed)
            .into_iter()
            .filter(|s| s + limits.window_ms <= through)
            .collect()
    }

    /// Merge the panes of the window starting at `start` into its
    /// clusters, sorted by (kind, key), and drop the panes no later window
    /// needs. Windows must be closed in order of start. Keys with fewer
    /// than `min_members` members are dropped (a single account is not a
    /// cluster).
    pub fn close(
        &mut self,
        limits: &Limits,
        start: i64,
        min_members: usize,
    ) -> Vec<ClusterFeatures> {
        let end = start + limits.window_ms;
        let slot_ms = limits.slot_ms();
        let slots = (limits.window_ms / slot_ms).max(1) as usize;
        let mut merged: BTreeMap<(String, String), KeyWindow> = BTreeMap::new();
        for (&pane, keys) in self.panes.range(start..end) {
            let base = ((pane - start) / slot_ms) as usize;
            for (k, kw) in keys {
                let w = merged
                    .entry(k.clone())
                    .or_insert_with(|| KeyWindow::new(limits.sketch_size));
                w.requests += kw.requests;
                w.rows += kw.rows;
                w.sketch.merge(&kw.sketch);
                w.broad |= kw.broad;
                if w.broad {
                    w.members = BTreeMap::new();
                    continue;
                }
                for (id, m) in &kw.members {
                    let into = w.members.entry(id.clone()).or_insert_with(|| Member {
                        minutes: vec![0; slots],
                        templates: BTreeSet::new(),
                        tool_schemas: BTreeSet::new(),
                        requests: 0,
                        tool_windows: 0,
                        // The earliest pane's account attributes.
                        own_score: 0.0,
                        ..m.clone()
                    });
                    into.requests += m.requests;
                    for (i, c) in m.minutes.iter().enumerate() {
                        if let Some(slot) = into.minutes.get_mut(base + i) {
                            *slot = slot.saturating_add(*c);
                        }
                    }
                    into.templates.extend(m.templates.iter().copied());
                    into.tool_windows += m.tool_windows;
                    into.tool_schemas.extend(m.tool_schemas.iter().copied());
                    into.own_score = into.own_score.max(m.own_score);
                }
                if w.members.len() > limits.max_members {
                    w.broad = true;
                    w.members = BTreeMap::new();
                }
            }
        }
        let keep = self.panes.split_off(&(start + limits.slide_ms));
        self.panes = keep;
        let keep = self.first_offset.split_off(&(start + limits.slide_ms));
        self.first_offset = keep;
        merged
            .into_iter()
            .filter(|(_, kw)| kw.broad || kw.members.len() >= min_members.max(2))
            .map(|((kind, key), kw)| features(kind, key, start, end, kw, limits.typical_may_lack))
            .collect()
    }

    /// Oldest input offset an open pane holds.
    pub fn oldest_offset(&self) -> Option<i64> {
        self.first_offset.values().copied().min()
    }

    pub fn is_empty(&self) -> bool {
        self.panes.is_empty()
    }

    /// Members held over all open panes and keys.
    pub fn held_members(&self) -> usize {
        self.panes
            .values()
            .flat_map(|k| k.values())
            .map(|kw| kw.members.len())
            .sum()
    }

    /// Approximate heap bytes held: what the memory benchmark reports.
    pub fn held_bytes(&self) -> usize {
        let mut total = 0;
        for keys in self.panes.values() {
            for ((kind, key), kw) in keys {
                total += kind.len() + key.len() + std::mem::size_of::<KeyWindow>() + 64;
                total += kw.sketch.smallest.len() * 40;
                for (id, m) in &kw.members {
                    total += id.len()
                        + std::mem::size_of::<Member>()
                        + m.minutes.len() * 2
                        + (m.templates.len() + m.tool_schemas.len()) * 40
                        + m.channel.as_ref().map_or(0, |c| c.len())
                        + 64;
                }
            }
        }
        total
    }
}

/// Gini coefficient of non-negative values: 0 when all are equal, towards
/// 1 when one holds everything.
pub fn gini(values: &[f64]) -> Option<f64> {
    let n = values.len();
    let sum: f64 = values.iter().sum();
    if n < 2 || sum <= 0.0 {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let weighted: f64 = v
        .iter()
        .enumerate()
        .map(|(i, x)| (i as f64 + 1.0) * x)
        .sum();
    Some((2.0 * weighted / (n as f64 * sum) - (n as f64 + 1.0) / n as f64).max(0.0))
}

/// Mean over members of the Pearson correlation between the member's
/// per-minute requests and the rest of the cluster's: near 0 for accounts
/// acting independently, high when they start, stop and burst together.
pub fn activity_sync(series: &[&[u16]]) -> Option<f64> {
    if series.len() < 3 {
        return None;
    }
    let len = series[0].len();
    let total: Vec<f64> = (0..len)
        .map(|i| series.iter().map(|s| f64::from(s[i])).sum())
        .collect();
    let mut sum = 0.0;
    let mut n = 0usize;
    for s in series {
        let x: Vec<f64> = s.iter().map(|v| f64::from(*v)).collect();
        let y: Vec<f64> = total.iter().zip(&x).map(|(t, v)| t - v).collect();
        if let Some(r) = pearson(&x, &y) {
            sum += r;
            n += 1;
        }
    }
    (n > 0).then(|| sum / n as f64)
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

fn share(n: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// Share of members an attribute must hold to be the cluster's consensus.
pub const CONSENSUS: f64 = 0.7;
/// A typical member sends at most this many times the median member's
/// requests.
pub const VOLUME_SPREAD: f64 = 10.0;

fn features(
    kind: String,
    key: String,
    start: i64,
    end: i64,
    kw: KeyWindow,
    may_lack: usize,
) -> ClusterFeatures {
    let mut f: BTreeMap<&str, Option<f64>> = FEATURES.iter().map(|n| (*n, None)).collect();
    f.insert("total_requests", Some(kw.requests as f64));
    let member_count = if kw.broad {
        kw.sketch.estimate()
    } else {
        kw.members.len() as u64
    };
    f.insert("members", Some(member_count as f64));
    let mut typical = Vec::new();
    if !kw.broad {
        let ms: Vec<&Member> = kw.members.values().collect();
        let n = ms.len();
        let volumes: Vec<f64> = ms.iter().map(|m| m.requests as f64).collect();
        f.insert("requests_per_member", share(kw.requests as usize, n));
        f.insert("volume_gini", gini(&volumes));
        let series: Vec<&[u16]> = ms.iter().map(|m| m.minutes.as_slice()).collect();
        f.insert("activity_sync", activity_sync(&series));
        // A template cluster's own template is shared by definition: the
        // overlap that says something is in the members' other templates.
        let own_template: Option<i64> = (kind == "template").then(|| key.parse().ok()).flatten();
        let mut users: BTreeMap<i64, usize> = BTreeMap::new();
        for m in &ms {
            for t in m.templates.iter().filter(|t| Some(**t) != own_template) {
                *users.entry(*t).or_default() += 1;
            }
        }
        let overlaps = |m: &Member| {
            m.templates
                .iter()
                .any(|t| Some(*t) != own_template && users[t] >= 2)
        };
        let with_templates = ms.iter().filter(|m| !m.templates.is_empty()).count();
        let overlapping = ms.iter().filter(|m| overlaps(m)).count();
        f.insert("template_overlap_share", share(overlapping, with_templates));
        // An application sends its one tool set window after window, and
        // its users share it; a harvest invents a new set for nearly every
        // agent session, so nearly every active window brings a new one.
        let tool_windows: i64 = ms.iter().map(|m| m.tool_windows).sum();
        let tool_users = ms.iter().filter(|m| m.tool_windows > 0).count();
        let schemas: BTreeSet<i64> = ms
            .iter()
            .flat_map(|m| m.tool_schemas.iter().copied())
            .collect();
        f.insert(
            "tool_schema_novelty",
            (tool_users >= 3).then(|| schemas.len() as f64 / tool_windows as f64),
        );
        let young = |m: &Member| m.age_days.map(|a| a < YOUNG_DAYS);
        let aged = ms.iter().filter(|m| young(m).is_some()).count();
        let young_n = ms.iter().filter(|m| young(m) == Some(true)).count();
        f.insert("young_account_share", share(young_n, aged));
        let unverified = ms.iter().filter(|m| !m.verified).count();
        f.insert("unverified_share", share(unverified, n));
        let mut days: BTreeMap<i64, usize> = BTreeMap::new();
        for d in ms.iter().filter_map(|m| m.signup_day) {
            *days.entry(d).or_default() += 1;
        }
        let known_days: usize = days.values().sum();
        // Most common day; ties to the earliest, so it is order-independent.
        let top_day = days
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(d, c)| (*d, *c));
        f.insert(
            "same_signup_day_share",
            share(top_day.map_or(0, |t| t.1), known_days),
        );
        let discounted = |m: &Member| {
            m.channel
                .as_deref()
                .map(|c| matches!(c, "education" | "research" | "startup"))
        };
        let channels = ms.iter().filter(|m| discounted(m).is_some()).count();
        let discounted_n = ms.iter().filter(|m| discounted(m) == Some(true)).count();
        f.insert("discounted_signup_share", share(discounted_n, channels));
        let mean_score = ms.iter().map(|m| m.own_score).sum::<f64>() / n.max(1) as f64;
        f.insert("member_score_mean", (n > 0).then_some(mean_score));
        // Typical members: those holding every attribute most members
        // share, and not far less suspicious on their own than the mean.
        // Only they receive the cluster's risk: an ordinary account that
        // merely shares a sign-up day or an address with a hydra does not.
        let consensus = |count: usize, of: usize| of > 0 && count as f64 >= CONSENSUS * of as f64;
        let need_young = consensus(young_n, aged);
        let need_unverified = consensus(unverified, n);
        let need_discounted = consensus(discounted_n, channels);
        let need_overlap = consensus(overlapping, with_templates);
        let need_day = consensus(top_day.map_or(0, |t| t.1), known_days);
        let mut sorted = volumes.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[n / 2];
        typical = ms
            .iter()
            .map(|m| {
                let lacks = [
                    need_young && young(m) != Some(true),
                    need_unverified && m.verified,
                    need_discounted && discounted(m) != Some(true),
                    need_day && m.signup_day != top_day.map(|t| t.0),
                ];
                lacks.iter().filter(|l| **l).count() <= may_lack
                    && (!need_overlap || overlaps(m))
                    && m.own_score >= 0.5 * mean_score
                    // A load-balanced cluster's members send alike; one far
                    // busier (a reseller behind a shared client) is not one.
                    && (m.requests as f64) <= VOLUME_SPREAD * median
            })
            .collect();
    }
    ClusterFeatures {
        kind,
        key,
        window_start: start,
        window_end: end,
        member_requests: kw.members.values().map(|m| m.requests).collect(),
        members: kw.members.into_keys().collect(),
        typical,
        member_count,
        broad: kw.broad,
        requests: kw.requests,
        features: f
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.filter(|x| x.is_finite())))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(account: &str, key: &str, start: i64, requests: i64, minute: usize) -> MemberRow {
        let mut minute_counts = vec![0; 10];
        minute_counts[minute] = requests as i32;
        MemberRow {
            kind: "ip_prefix".into(),
            key: key.into(),
            account_id: account.into(),
            window_start: start,
            window_end: start + 600_000,
            requests,
            output_tokens: 0,
            minute_counts,
            templates: vec![7],
            tool_requests: 0,
            tool_schemas: vec![],
            account_age_days: Some(3.0),
            signup_day: Some(20_000),
            signup_channel: Some("education".into()),
            verified: false,
            own_score: 0.2,
        }
    }

    const LIMITS: Limits = Limits {
        window_ms: 3_600_000,
        slide_ms: 3_600_000,
        max_members: 50,
        sketch_size: 64,
        typical_may_lack: 0,
    };

    #[test]
    fn gini_is_zero_for_equal_and_high_for_skewed() {
        assert_eq!(gini(&[3.0, 3.0, 3.0]), Some(0.0));
        let g = gini(&[0.0, 0.0, 0.0, 10.0]).unwrap();
        assert!((g - 0.75).abs() < 1e-12, "{g}");
        assert_eq!(gini(&[1.0]), None);
    }

    #[test]
    fn sync_sees_members_moving_together() {
        let a: Vec<u16> = vec![5, 0, 5, 0, 5, 0];
        let b: Vec<u16> = vec![4, 0, 4, 0, 4, 0];
        let c: Vec<u16> = vec![6, 0, 6, 0, 6, 0];
        let s = activity_sync(&[&a, &b, &c]).unwrap();
        assert!(s > 0.99, "{s}");
        let d: Vec<u16> = vec![0, 5, 0, 5, 0, 5];
        let s = activity_sync(&[&a, &b, &d]).unwrap();
        assert!(s < 0.5, "{s}");
    }

    #[test]
    fn rows_of_an_hour_form_one_window_in_any_order() {
        let rows: Vec<MemberRow> = (0..6)
            .flat_map(|w| {
                (0..4).map(move |a| row(&format!("acct-{a}"), "10.0.0.0/24", w * 600_000, 2, a))
            })
            .collect();
        let mut forward = ClusterWindows::default();
        for (i, r) in rows.iter().enumerate() {
            forward.add(&LIMITS, r, i as i64, i64::MIN);
        }
        let mut backward = ClusterWindows::default();
        for (i, r) in rows.iter().enumerate().rev() {
            backward.add(&LIMITS, r, i as i64, i64::MIN);
        }
        assert_eq!(
            forward.closable(&LIMITS, 3_599_999, i64::MIN),
            Vec::<i64>::new()
        );
        assert_eq!(forward.closable(&LIMITS, 3_600_000, i64::MIN), vec![0]);
        assert_eq!(forward.oldest_offset(), Some(0));
        let a = forward.close(&LIMITS, 0, 3);
        let b = backward.close(&LIMITS, 0, 3);
        assert_eq!(a, b);
        assert_eq!(a.len(), 1);
        let c = &a[0];
        assert_eq!(c.members, vec!["acct-0", "acct-1", "acct-2", "acct-3"]);
        assert_eq!(c.requests, 48);
        let get = |n: &str| c.features.iter().find(|(k, _)| k == n).unwrap().1;
        assert_eq!(get("volume_gini"), Some(0.0));
        assert_eq!(get("template_overlap_share"), Some(1.0));
        assert_eq!(get("young_account_share"), Some(1.0));
        assert_eq!(get("requests_per_member"), Some(12.0));
        assert!(forward.is_empty());
    }

    #[test]
    fn a_key_shared_by_too_many_turns_broad_and_drops_its_members() {
        let mut w = ClusterWindows::default();
        for a in 0..10_000 {
            w.add(
                &LIMITS,
                &row(&format!("acct-{a}"), "ua", 0, 1, 0),
                a,
                i64::MIN,
            );
        }
        assert_eq!(w.held_members(), 0);
        assert!(w.held_bytes() < 20_000, "{}", w.held_bytes());
        let out = w.close(&LIMITS, 0, 3);
        assert!(out[0].broad);
        assert!(out[0].members.is_empty());
        let est = out[0].member_count as f64;
        assert!((est - 10_000.0).abs() / 10_000.0 < 0.3, "{est}");
    }

    #[test]
    fn only_members_like_the_rest_are_typical() {
        let mut w = ClusterWindows::default();
        for a in 0..8 {
            w.add(
                &LIMITS,
                &row(&format!("hydra-{a}"), "k", 0, 2, a),
                a as i64,
                i64::MIN,
            );
        }
        // Shares the address but is old and verified: not like the rest.
        let mut bystander = row("old-user", "k", 0, 2, 0);
        bystander.account_age_days = Some(900.0);
        bystander.verified = true;
        w.add(&LIMITS, &bystander, 20, i64::MIN);
        // Like the rest, but sends 30 times as much (a reseller).
        w.add(&LIMITS, &row("reseller", "k", 0, 60, 0), 21, i64::MIN);
        let c = &w.close(&LIMITS, 0, 3)[0];
        let typical: Vec<&str> = c
            .members
            .iter()
            .zip(&c.typical)
            .filter(|(_, t)| **t)
            .map(|(m, _)| m.as_str())
            .collect();
        assert_eq!(typical.len(), 8, "{typical:?}");
        assert!(typical.iter().all(|m| m.starts_with("hydra-")));
    }

    #[test]
    fn a_bought_account_that_behaves_like_the_rest_is_typical_when_one_lack_is_allowed() {
        let lenient = Limits {
            typical_may_lack: 1,
            ..LIMITS
        };
        let members = |limits: &Limits| {
            let mut w = ClusterWindows::default();
            for a in 0..8 {
                w.add(
                    limits,
                    &row(&format!("hydra-{a}"), "k", 0, 2, a),
                    a as i64,
                    i64::MIN,
                );
            }
            // An aged account sending the hydra's templates: bought.
            let mut bought = row("bought", "k", 0, 2, 0);
            bought.account_age_days = Some(700.0);
            w.add(limits, &bought, 20, i64::MIN);
            // Old and verified: lacks two attributes.
            let mut bystander = row("old-user", "k", 0, 2, 0);
            bystander.account_age_days = Some(900.0);
            bystander.verified = true;
            w.add(limits, &bystander, 21, i64::MIN);
            // Young and unverified like the rest, but its own prompts.
            let mut own_prompts = row("own-prompts", "k", 0, 2, 0);
            own_prompts.templates = vec![99];
            w.add(limits, &own_prompts, 22, i64::MIN);
            let c = w.close(limits, 0, 3).remove(0);
            c.members
                .into_iter()
                .zip(c.typical)
                .filter(|(_, t)| *t)
                .map(|(m, _)| m)
                .filter(|m| !m.starts_with("hydra-"))
                .collect::<Vec<_>>()
        };
        assert_eq!(members(&LIMITS), Vec::<String>::new());
        assert_eq!(members(&lenient), vec!["bought".to_string()]);
    }

    #[test]
    fn a_row_lands_in_every_hopping_window_that_covers_it() {
        let hop = Limits {
            window_ms: 6 * 3_600_000,
            slide_ms: 3_600_000,
            ..LIMITS
        };
        // 02:10 is in the windows starting 21:00 (day before) .. 02:00.
        let t = 2 * 3_600_000 + 600_000;
        let starts: Vec<i64> = hop.windows_of(t).collect();
        assert_eq!(
            starts,
            (0..6).map(|k| (2 - k) * 3_600_000).collect::<Vec<_>>()
        );
        let mut w = ClusterWindows::default();
        for a in 0..3 {
            let mut r = row(&format!("acct-{a}"), "k", t, 4, 1);
            r.tool_requests = 4;
            r.tool_schemas = vec![100 + a];
            // Windows ending at or before 05:00 were emitted before.
            w.add(&hop, &r, a, 5 * 3_600_000);
        }
        // One pane holds each row once, whatever the number of windows.
        assert_eq!(w.held_members(), 3);
        assert_eq!(
            w.starts(&hop, 5 * 3_600_000),
            vec![0, 3_600_000, 2 * 3_600_000]
        );
        assert_eq!(
            w.closable(&hop, 7 * 3_600_000, 5 * 3_600_000),
            vec![0, 3_600_000]
        );
        let first = w.close(&hop, 0, 3);
        assert_eq!(first[0].window_end, 6 * 3_600_000);
        assert_eq!(first[0].requests, 12);
        let c = &w.close(&hop, 3_600_000, 3)[0];
        assert_eq!(c.window_end, 7 * 3_600_000);
        assert_eq!(c.requests, 12);
        let get = |n: &str| c.features.iter().find(|(k, _)| k == n).unwrap().1;
        // Three members, each with a tool set of its own in its one window.
        assert_eq!(get("tool_schema_novelty"), Some(1.0));
        assert_eq!(hop.slot_ms(), 360_000);
        // The last window holding the pane drops it.
        assert!(!w.is_empty());
        assert_eq!(w.close(&hop, 2 * 3_600_000, 3).len(), 1);
        assert!(w.is_empty());
    }

    #[test]
    fn a_window_merges_its_panes() {
        let hop = Limits {
            window_ms: 3 * 3_600_000,
            slide_ms: 3_600_000,
            ..LIMITS
        };
        let mut w = ClusterWindows::default();
        // Member a in hours 0 and 2, b in hour 1, c in hour 2.
        for (i, (a, hour)) in [("a", 0), ("b", 1), ("a", 2), ("c", 2)].iter().enumerate() {
            w.add(
                &hop,
                &row(a, "k", hour * 3_600_000, 2, 3),
                i as i64,
                i64::MIN,
            );
        }
        assert_eq!(w.oldest_offset(), Some(0));
        let starts = w.starts(&hop, i64::MIN);
        assert_eq!(starts.first().copied(), Some(-2 * 3_600_000));
        let mut out = Vec::new();
        for s in starts {
            out.extend(w.close(&hop, s, 3));
        }
        // Windows of hours 0-2 and 1-3 have three members each.
        let got: Vec<(i64, Vec<String>, Vec<i64>)> = out
            .iter()
            .map(|c| (c.window_start, c.members.clone(), c.member_requests.clone()))
            .collect();
        let abc: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(
            got,
            vec![
                (0, abc.clone(), vec![4, 2, 2]),
                (3_600_000, abc, vec![2, 2, 2])
            ]
        );
        assert!(w.is_empty());
    }

    #[test]
    fn tool_sets_reused_window_after_window_are_not_novel() {
        let mut w = ClusterWindows::default();
        // Four services, each sending its own tool set in all six windows.
        for a in 0..4 {
            for k in 0..6 {
                let mut r = row(&format!("service-{a}"), "k", k * 600_000, 3, 0);
                r.tool_requests = 3;
                r.tool_schemas = vec![40 + a];
                w.add(&LIMITS, &r, a * 6 + k, i64::MIN);
            }
        }
        let c = &w.close(&LIMITS, 0, 3)[0];
        let novelty = c
            .features
            .iter()
            .find(|(k, _)| k == "tool_schema_novelty")
            .unwrap()
            .1;
        assert_eq!(novelty, Some(4.0 / 24.0));
    }

    #[test]
    fn small_keys_are_not_clusters() {
        let mut w = ClusterWindows::default();
        w.add(&LIMITS, &row("a", "k", 0, 1, 0), 0, i64::MIN);
        w.add(&LIMITS, &row("b", "k", 0, 1, 0), 1, i64::MIN);
        assert!(w.close(&LIMITS, 0, 3).is_empty());
    }
}
