//! `distill-watch top`: a live terminal view of the risk scores and cluster
//! risks the workers publish. A [`Model`] (no terminal in it) ingests the
//! decoded records and answers the views; a background thread reads both
//! topics with one consumer and sends decoded records over a channel; the
//! terminal loop drains the channel, redraws at most ten times a second and
//! on input. Without a terminal (or with `--once`) it prints one plain-text
//! snapshot of both topics read to their current end.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use apache_avro::types::Value;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;

use distill_watch::config::Config;
use distill_watch::schemas::{unframe, ContractSchema, SchemaSet};
use distill_watch::score::{Level, Reason};

use crate::flags::TopArgs;

/// Windows of history kept per account or cluster.
pub const HISTORY: usize = 200;
/// Reasons kept per window.
const REASONS: usize = 3;

// ---------------------------------------------------------------- records

/// One decoded score (account, or member score when `cluster_id` is set)
/// or cluster risk, reduced to what the views show.
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub kind: Kind,
    /// Account id or cluster id.
    pub id: String,
    pub window_start: i64,
    pub window: Window,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Account,
    /// A member score: the cluster's risk carried on risk.scores.v1; not
    /// the account's own score, so only counted.
    Member,
    Cluster,
}

/// One window of one account or cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub window_end: i64,
    pub score: f64,
    pub level: Level,
    pub revision: i32,
    /// Largest contribution first, at most [`REASONS`].
    pub reasons: Vec<Reason>,
    /// Requests (accounts: event_count; clusters: requests).
    pub events: i64,
    /// Clusters only.
    pub member_count: i64,
    pub members: Vec<String>,
}

// ------------------------------------------------------------------ model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Score,
    Flagged,
    Recent,
    Id,
}

impl Sort {
    pub fn next(self) -> Sort {
        match self {
            Sort::Score => Sort::Flagged,
            Sort::Flagged => Sort::Recent,
            Sort::Recent => Sort::Id,
            Sort::Id => Sort::Score,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sort::Score => "score",
            Sort::Flagged => "windows >= high",
            Sort::Recent => "most recent",
            Sort::Id => "id",
        }
    }
}

/// The windows of one account or cluster, by window start, at most
/// [`HISTORY`] (the oldest are dropped).
#[derive(Debug, Default, Clone)]
pub struct Entity {
    pub windows: BTreeMap<i64, Window>,
}

impl Entity {
    /// The newest window (the highest revision of it).
    pub fn latest(&self) -> &Window {
        self.windows
            .values()
            .next_back()
            .expect("an entity has at least one window")
    }

    /// Windows at high or above.
    pub fn flagged(&self) -> usize {
        self.windows
            .values()
            .filter(|w| w.level >= Level::High)
            .count()
    }

    /// Keeps `w` unless this window already has a higher revision. Returns
    /// whether anything changed.
    fn ingest(&mut self, start: i64, w: Window) -> bool {
        if let Some(old) = self.windows.get(&start) {
            if old.revision > w.revision {
                return false;
            }
        } else if self.windows.len() >= HISTORY
            && self
                .windows
                .keys()
                .next()
                .is_some_and(|&first| start < first)
        {
            // Older than everything kept, and no room.
            return false;
        }
        self.windows.insert(start, w);
        while self.windows.len() > HISTORY {
            self.windows.pop_first();
        }
        true
    }
}

#[derive(Debug, Default)]
pub struct Model {
    pub accounts: HashMap<String, Entity>,
    pub clusters: HashMap<String, Entity>,
    pub records: u64,
    pub member_scores: u64,
    pub undecodable: u64,
    pub last_error: Option<String>,
    /// Wall-clock time of the last record read (ms since the epoch).
    pub last_record_ms: Option<i64>,
}

impl Model {
    pub fn ingest(&mut self, rec: Rec) {
        self.records += 1;
        let map = match rec.kind {
            Kind::Member => {
                self.member_scores += 1;
                return;
            }
            Kind::Account => &mut self.accounts,
            Kind::Cluster => &mut self.clusters,
        };
        map.entry(rec.id)
            .or_default()
            .ingest(rec.window_start, rec.window);
    }

    pub fn undecodable(&mut self, why: String) {
        self.records += 1;
        self.undecodable += 1;
        self.last_error = Some(why);
    }

    pub fn top_accounts(&self, sort: Sort) -> Vec<(&str, &Entity)> {
        ranked(&self.accounts, sort)
    }

    pub fn top_clusters(&self, sort: Sort) -> Vec<(&str, &Entity)> {
        ranked(&self.clusters, sort)
    }

    /// Entities by the level of their newest window.
    pub fn by_level(map: &HashMap<String, Entity>) -> [usize; 4] {
        let mut n = [0; 4];
        for e in map.values() {
            n[e.latest().level as usize] += 1;
        }
        n
    }
}

fn ranked(map: &HashMap<String, Entity>, sort: Sort) -> Vec<(&str, &Entity)> {
    let mut v: Vec<(&str, &Entity)> = map.iter().map(|(k, e)| (k.as_str(), e)).collect();
    let score = |e: &Entity| e.latest().score;
    v.sort_by(|(a, ea), (b, eb)| {
        let by_score = score(eb).total_cmp(&score(ea));
        match sort {
            Sort::Score => by_score,
            Sort::Flagged => eb.flagged().cmp(&ea.flagged()).then(by_score),
            Sort::Recent => eb
                .latest()
                .window_end
                .cmp(&ea.latest().window_end)
                .then(by_score),
            Sort::Id => std::cmp::Ordering::Equal,
        }
        .then_with(|| a.cmp(b))
    });
    v
}

// --------------------------------------------------------------- decoding

/// Decodes one Confluent-framed RiskScore or ClusterRisk (any accepted
/// writer version).
pub fn decode(set: &SchemaSet, payload: &[u8]) -> Result<Rec, String> {
    let (id, mut body) = unframe(payload).ok_or("no Confluent header")?;
    let read = |s: &ContractSchema, body: &mut &[u8]| -> Result<Value, String> {
        let r = if id == s.id {
            apache_avro::from_avro_datum(&s.avro, body, None)
        } else {
            let v = s.versions.iter().find(|v| v.id == id).ok_or("no version")?;
            apache_avro::from_avro_datum(&v.avro, body, Some(&s.avro))
        };
        r.map_err(|e| format!("{} (schema id {id}): {e}", s.name))
    };
    if set.risk_score.accepts(id) {
        let v = read(&set.risk_score, &mut body)?;
        record(v, false)
    } else if set.cluster_risk.accepts(id) {
        let v = read(&set.cluster_risk, &mut body)?;
        record(v, true)
    } else {
        Err(format!(
            "schema id {id} is neither RiskScore nor ClusterRisk"
        ))
    }
}

fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        v => v,
    }
}

fn record(v: Value, cluster: bool) -> Result<Rec, String> {
    let Value::Record(fields) = v else {
        return Err("not a record".into());
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| unwrap_union(v))
    };
    let string = |name: &str| match get(name) {
        Some(Value::String(s)) | Some(Value::Enum(_, s)) => Some(s.clone()),
        _ => None,
    };
    let long = |name: &str| match get(name) {
        Some(Value::TimestampMillis(t)) | Some(Value::Long(t)) => Some(*t),
        Some(Value::Int(i)) => Some(i64::from(*i)),
        _ => None,
    };
    let double = |v: Option<&Value>| match v {
        Some(Value::Double(x)) => Some(*x),
        Some(Value::Float(x)) => Some(f64::from(*x)),
        _ => None,
    };
    let id_field = if cluster { "cluster_id" } else { "account_id" };
    let id = string(id_field).ok_or(format!("no {id_field}"))?;
    let window_start = long("window_start").ok_or("no window_start")?;
    let window_end = long("window_end").ok_or("no window_end")?;
    let score = double(get("score")).ok_or("no score")?;
    let level = Level::parse(&string("level").unwrap_or_default()).unwrap_or(Level::Low);
    let mut reasons = Vec::new();
    if let Some(Value::Array(items)) = get("reasons") {
        for item in items {
            let Value::Record(f) = item else { continue };
            let field = |n: &str| f.iter().find(|(k, _)| k == n).map(|(_, v)| v);
            if let Some(Value::String(feature)) = field("feature") {
                reasons.push(Reason {
                    feature: feature.clone(),
                    value: double(field("value")).unwrap_or(f64::NAN),
                    contribution: double(field("contribution")).unwrap_or(0.0),
                });
            }
        }
    }
    reasons.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
    reasons.truncate(REASONS);
    let members = match get("members") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|m| match m {
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let kind = if cluster {
        Kind::Cluster
    } else if string("cluster_id").is_some() {
        Kind::Member
    } else {
        Kind::Account
    };
    Ok(Rec {
        kind,
        id,
        window_start,
        window: Window {
            window_end,
            score,
            level,
            revision: long("revision").unwrap_or(0) as i32,
            reasons,
            events: long(if cluster { "requests" } else { "event_count" }).unwrap_or(0),
            member_count: long("member_count").unwrap_or(members.len() as i64),
            members,
        },
    })
}

// ---------------------------------------------------------------- reading

enum Msg {
    Rec(Rec),
    Bad(String),
    Error(String),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn consumer_config(cfg: &Config, from_end: bool) -> rdkafka::ClientConfig {
    let mut cc = cfg.consumer_config();
    cc.set(
        "group.id",
        format!("{}-top-{}", cfg.kafka.group_id, std::process::id()),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("isolation.level", "read_committed")
    .set(
        "auto.offset.reset",
        if from_end { "latest" } else { "earliest" },
    );
    cc
}

/// Follows both topics on a thread until `stop` is set.
fn spawn_reader(
    cc: rdkafka::ClientConfig,
    topics: [String; 2],
    stop: Arc<AtomicBool>,
) -> Result<(mpsc::Receiver<Msg>, std::thread::JoinHandle<()>)> {
    let consumer: BaseConsumer = cc.create().context("creating the consumer")?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .with_context(|| format!("subscribing to {}", names.join(", ")))?;
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("top-reader".into())
        .spawn(move || {
            let set = SchemaSet::builtin();
            while !stop.load(Ordering::Relaxed) {
                let msg = match consumer.poll(Duration::from_millis(100)) {
                    None => continue,
                    Some(Ok(m)) => match decode(set, m.payload().unwrap_or_default()) {
                        Ok(r) => Msg::Rec(r),
                        Err(e) => Msg::Bad(format!(
                            "{} [{}] @{}: {e}",
                            m.topic(),
                            m.partition(),
                            m.offset()
                        )),
                    },
                    Some(Err(e)) => Msg::Error(e.to_string()),
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
        })
        .context("starting the reader thread")?;
    Ok((rx, handle))
}

// ------------------------------------------------------------------ entry

pub async fn run(cfg: Config, args: &TopArgs) -> Result<()> {
    distill_watch::connect::check_async(&cfg, distill_watch::connect::TIMEOUT).await?;
    let once = args.once || !std::io::stdout().is_terminal();
    if once {
        let cfg2 = cfg.clone();
        let model = tokio::task::spawn_blocking(move || snapshot_model(&cfg2))
            .await
            .context("snapshot reader")??;
        print!(
            "{}",
            snapshot(
                &model,
                &cfg,
                args.limit.unwrap_or(20),
                args.limit.unwrap_or(10)
            )
        );
        return Ok(());
    }
    let cc = consumer_config(&cfg, args.from_end);
    let stop = Arc::new(AtomicBool::new(false));
    let (rx, reader) = spawn_reader(
        cc,
        [cfg.topics.scores.clone(), cfg.topics.clusters.clone()],
        stop.clone(),
    )?;
    let limit = args.limit;
    let result = tokio::task::spawn_blocking(move || ui::run(&cfg, rx, limit))
        .await
        .context("terminal loop")?;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    result
}

/// Both topics from the beginning to their current end.
fn snapshot_model(cfg: &Config) -> Result<Model> {
    let mut cc = consumer_config(cfg, false);
    cc.set("enable.partition.eof", "true");
    let set = SchemaSet::builtin();
    let mut model = Model::default();
    for topic in [&cfg.topics.scores, &cfg.topics.clusters] {
        let messages = distill_watch::source::read_to_end(&cc, topic, Duration::from_secs(600))
            .with_context(|| format!("reading {topic}"))?;
        for m in &messages {
            match decode(set, m.payload().unwrap_or_default()) {
                Ok(r) => model.ingest(r),
                Err(e) => model.undecodable(format!(
                    "{} [{}] @{}: {e}",
                    m.topic(),
                    m.partition(),
                    m.offset()
                )),
            }
        }
        if !messages.is_empty() {
            model.last_record_ms = Some(now_ms());
        }
    }
    Ok(model)
}

// ------------------------------------------------------------- formatting

/// `YYYY-MM-DD HH:MM` (UTC) of epoch milliseconds.
pub fn fmt_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let sod = secs.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}",
        distill_watch::cluster::keys::civil_date(secs.div_euclid(86_400)),
        sod / 3600,
        (sod % 3600) / 60
    )
}

pub fn fmt_reasons(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(|r| {
            format!(
                "{}={} +{:.2}",
                r.feature,
                fmt_value(r.value),
                r.contribution
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_value(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e9 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

fn fmt_levels(n: [usize; 4]) -> String {
    [Level::Low, Level::Elevated, Level::High, Level::Critical]
        .iter()
        .map(|l| format!("{} {}", n[*l as usize], l.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn header_lines(model: &Model, cfg: &Config) -> [String; 3] {
    let last = model
        .last_record_ms
        .map(|t| format!("{} UTC", fmt_time(t)))
        .unwrap_or_else(|| "none yet".into());
    [
        format!(
            "broker {}  topics {}, {}",
            cfg.kafka.bootstrap_servers, cfg.topics.scores, cfg.topics.clusters
        ),
        format!(
            "records {} (undecodable {}, member scores {})  last record {last}",
            model.records, model.undecodable, model.member_scores
        ),
        format!(
            "accounts {}: {}  |  clusters {}: {}",
            model.accounts.len(),
            fmt_levels(Model::by_level(&model.accounts)),
            model.clusters.len(),
            fmt_levels(Model::by_level(&model.clusters)),
        ),
    ]
}

/// The plain-text view: header, top accounts and top clusters.
pub fn snapshot(model: &Model, cfg: &Config, accounts: usize, clusters: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for line in header_lines(model, cfg) {
        let _ = writeln!(out, "{line}");
    }
    if let Some(e) = &model.last_error {
        let _ = writeln!(out, "last undecodable record: {e}");
    }
    let _ = writeln!(out, "\ntop accounts (by score)");
    let _ = writeln!(
        out,
        "{:>4}  {:<24} {:>6} {:<8} {:>5} {:<16} reasons",
        "rank", "account", "score", "level", ">=hi", "window end"
    );
    for (i, (id, e)) in model
        .top_accounts(Sort::Score)
        .iter()
        .take(accounts)
        .enumerate()
    {
        let w = e.latest();
        let _ = writeln!(
            out,
            "{:>4}  {:<24} {:>6.3} {:<8} {:>5} {:<16} {}",
            i + 1,
            id,
            w.score,
            w.level.as_str(),
            e.flagged(),
            fmt_time(w.window_end),
            fmt_reasons(&w.reasons)
        );
    }
    let _ = writeln!(out, "\ntop clusters (by score)");
    let _ = writeln!(
        out,
        "{:>4}  {:<40} {:>6} {:<8} {:>7} reasons",
        "rank", "cluster", "score", "level", "members"
    );
    for (i, (id, e)) in model
        .top_clusters(Sort::Score)
        .iter()
        .take(clusters)
        .enumerate()
    {
        let w = e.latest();
        let _ = writeln!(
            out,
            "{:>4}  {:<40} {:>6.3} {:<8} {:>7} {}",
            i + 1,
            id,
            w.score,
            w.level.as_str(),
            w.member_count,
            fmt_reasons(&w.reasons)
        );
    }
    out
}

// --------------------------------------------------------------- terminal

mod ui {
    use super::*;
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    use ratatui::layout::{Constraint, Layout};
    use ratatui::style::{Color, Modifier, Style};
    use ratatui::text::Line;
    use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
    use ratatui::Frame;

    #[derive(PartialEq, Eq, Clone, Copy)]
    enum Focus {
        Accounts,
        Clusters,
    }

    struct App<'a> {
        cfg: &'a Config,
        model: Model,
        sort: Sort,
        focus: Focus,
        accounts: TableState,
        clusters: TableState,
        /// The account whose history is open.
        history: Option<String>,
        history_state: TableState,
        limit: Option<usize>,
        reader_error: Option<String>,
    }

    /// Standard error goes to a file while the screen is ours (the log
    /// would otherwise scribble over it); restored on drop.
    struct StderrToFile {
        saved: libc::c_int,
        path: std::path::PathBuf,
    }

    impl StderrToFile {
        fn new() -> Option<StderrToFile> {
            use std::os::fd::IntoRawFd;
            let path =
                std::env::temp_dir().join(format!("distill-watch-top-{}.log", std::process::id()));
            let file = std::fs::File::create(&path).ok()?;
            // SAFETY: plain descriptor calls on fds we own or on stderr.
            unsafe {
                let saved = libc::dup(2);
                if saved < 0 {
                    return None;
                }
                let fd = file.into_raw_fd();
                libc::dup2(fd, 2);
                libc::close(fd);
                Some(StderrToFile { saved, path })
            }
        }
    }

    impl Drop for StderrToFile {
        fn drop(&mut self) {
            // SAFETY: restoring the descriptor saved in `new`.
            unsafe {
                libc::dup2(self.saved, 2);
                libc::close(self.saved);
            }
            match std::fs::metadata(&self.path) {
                Ok(m) if m.len() > 0 => {
                    eprintln!("log of the session: {}", self.path.display())
                }
                _ => {
                    let _ = std::fs::remove_file(&self.path);
                }
            }
        }
    }

    pub fn run(cfg: &Config, rx: mpsc::Receiver<Msg>, limit: Option<usize>) -> Result<()> {
        let redirect = StderrToFile::new();
        let saved = redirect.as_ref().map(|r| r.saved);
        // ratatui::init restores the terminal on panic; before that, give
        // the panic message its standard error back.
        let mut terminal = ratatui::init();
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(fd) = saved {
                // SAFETY: dup2 on descriptors this process owns.
                unsafe {
                    libc::dup2(fd, 2);
                }
            }
            hook(info)
        }));
        let mut app = App {
            cfg,
            model: Model::default(),
            sort: Sort::Score,
            focus: Focus::Accounts,
            accounts: TableState::default().with_selected(Some(0)),
            clusters: TableState::default().with_selected(Some(0)),
            history: None,
            history_state: TableState::default().with_selected(Some(0)),
            limit,
            reader_error: None,
        };
        let result = (|| -> Result<()> {
            let mut dirty = true;
            let mut last_draw = Instant::now() - Duration::from_secs(1);
            loop {
                loop {
                    match rx.try_recv() {
                        Ok(Msg::Rec(r)) => {
                            app.model.last_record_ms = Some(now_ms());
                            app.model.ingest(r);
                            dirty = true;
                        }
                        Ok(Msg::Bad(e)) => {
                            app.model.last_record_ms = Some(now_ms());
                            app.model.undecodable(e);
                            dirty = true;
                        }
                        Ok(Msg::Error(e)) => {
                            app.reader_error = Some(e);
                            dirty = true;
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => break,
                    }
                }
                if dirty && last_draw.elapsed() >= Duration::from_millis(100) {
                    terminal.draw(|f| draw(f, &mut app))?;
                    last_draw = Instant::now();
                    dirty = false;
                }
                if event::poll(Duration::from_millis(100))? {
                    if let Event::Key(k) = event::read()? {
                        if k.kind != KeyEventKind::Press {
                            continue;
                        }
                        let ctrl_c = k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL);
                        if ctrl_c || k.code == KeyCode::Char('q') {
                            return Ok(());
                        }
                        app.key(k.code);
                    }
                    // Input redraws at once.
                    terminal.draw(|f| draw(f, &mut app))?;
                    last_draw = Instant::now();
                    dirty = false;
                }
            }
        })();
        ratatui::restore();
        drop(redirect);
        result
    }

    impl App<'_> {
        fn key(&mut self, code: KeyCode) {
            if self.history.is_some() {
                let n = self
                    .history
                    .as_ref()
                    .and_then(|a| self.model.accounts.get(a))
                    .map_or(0, |e| e.windows.len());
                match code {
                    KeyCode::Esc | KeyCode::Backspace => self.history = None,
                    _ => move_selection(&mut self.history_state, code, n),
                }
                return;
            }
            match code {
                KeyCode::Char('s') => self.sort = self.sort.next(),
                KeyCode::Tab | KeyCode::BackTab => {
                    self.focus = match self.focus {
                        Focus::Accounts => Focus::Clusters,
                        Focus::Clusters => Focus::Accounts,
                    }
                }
                KeyCode::Enter => {
                    if self.focus == Focus::Accounts {
                        let i = self.accounts.selected().unwrap_or(0);
                        let top = self.model.top_accounts(self.sort);
                        if let Some((id, _)) = top.get(i) {
                            self.history = Some(id.to_string());
                            self.history_state.select(Some(0));
                        }
                    }
                }
                _ => {
                    let (state, n) = match self.focus {
                        Focus::Accounts => (&mut self.accounts, self.model.accounts.len()),
                        Focus::Clusters => (&mut self.clusters, self.model.clusters.len()),
                    };
                    let n = self.limit.map_or(n, |l| n.min(l));
                    move_selection(state, code, n);
                }
            }
        }
    }

    fn move_selection(state: &mut TableState, code: KeyCode, n: usize) {
        if n == 0 {
            return;
        }
        let i = state.selected().unwrap_or(0).min(n - 1);
        let j = match code {
            KeyCode::Up => i.saturating_sub(1),
            KeyCode::Down => (i + 1).min(n - 1),
            KeyCode::PageUp => i.saturating_sub(10),
            KeyCode::PageDown => (i + 10).min(n - 1),
            KeyCode::Home => 0,
            KeyCode::End => n - 1,
            _ => i,
        };
        state.select(Some(j));
    }

    fn level_style(l: Level) -> Style {
        match l {
            Level::Critical => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            Level::High => Style::new().fg(Color::LightRed),
            Level::Elevated => Style::new().fg(Color::Yellow),
            Level::Low => Style::new(),
        }
    }

    fn draw(f: &mut Frame, app: &mut App) {
        let [head, body, foot] = Layout::vertical([
            Constraint::Length(5),
            Constraint::Min(6),
            Constraint::Length(1),
        ])
        .areas(f.area());
        let mut lines: Vec<Line> = header_lines(&app.model, app.cfg)
            .into_iter()
            .map(Line::from)
            .collect();
        if let Some(e) = &app.reader_error {
            lines.push(Line::styled(
                format!("reader: {e}"),
                Style::new().fg(Color::Red),
            ));
        } else if let Some(e) = &app.model.last_error {
            lines.push(Line::styled(
                format!("last undecodable: {e}"),
                Style::new().fg(Color::Yellow),
            ));
        }
        f.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" distill-watch top ")),
            head,
        );
        let keys = if app.history.is_some() {
            " Up/Down/PgUp/PgDn select   Esc back   q quit"
        } else {
            " s sort   Tab switch table   Up/Down/PgUp/PgDn select   Enter account history   q quit"
        };
        f.render_widget(
            Paragraph::new(format!("{keys}   [sort: {}]", app.sort.name()))
                .style(Style::new().add_modifier(Modifier::REVERSED)),
            foot,
        );
        if let Some(id) = app.history.clone() {
            draw_history(f, app, &id, body);
            return;
        }
        let [acc, clu] =
            Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body);
        let limit = app.limit.unwrap_or(usize::MAX);
        let focused = |f: Focus| {
            if app.focus == f {
                Style::new().fg(Color::Cyan)
            } else {
                Style::new()
            }
        };
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let highlight = Style::new().add_modifier(Modifier::REVERSED);

        let top = app.model.top_accounts(app.sort);
        let rows: Vec<Row> = top
            .iter()
            .take(limit)
            .enumerate()
            .map(|(i, (id, e))| {
                let w = e.latest();
                Row::new(vec![
                    format!("{}", i + 1),
                    id.to_string(),
                    format!("{:.3}", w.score),
                    w.level.as_str().to_string(),
                    e.flagged().to_string(),
                    fmt_time(w.window_end),
                    fmt_reasons(&w.reasons),
                ])
                .style(level_style(w.level))
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Length(5),
                Constraint::Length(24),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(16),
                Constraint::Fill(1),
            ],
        )
        .header(
            Row::new([
                "rank",
                "account",
                "score",
                "level",
                ">=high",
                "window end",
                "top reasons",
            ])
            .style(bold),
        )
        .row_highlight_style(highlight)
        .block(
            Block::bordered()
                .border_style(focused(Focus::Accounts))
                .title(format!(
                    " accounts ({}) by {} ",
                    app.model.accounts.len(),
                    app.sort.name()
                )),
        );
        f.render_stateful_widget(table, acc, &mut app.accounts);

        let top = app.model.top_clusters(app.sort);
        let rows: Vec<Row> = top
            .iter()
            .take(limit)
            .enumerate()
            .map(|(i, (id, e))| {
                let w = e.latest();
                Row::new(vec![
                    format!("{}", i + 1),
                    id.to_string(),
                    format!("{:.3}", w.score),
                    w.level.as_str().to_string(),
                    w.member_count.to_string(),
                    fmt_reasons(&w.reasons),
                ])
                .style(level_style(w.level))
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Length(5),
                Constraint::Length(40),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(7),
                Constraint::Fill(1),
            ],
        )
        .header(
            Row::new([
                "rank",
                "cluster",
                "score",
                "level",
                "members",
                "top reasons",
            ])
            .style(bold),
        )
        .row_highlight_style(highlight)
        .block(
            Block::bordered()
                .border_style(focused(Focus::Clusters))
                .title(format!(
                    " clusters ({}) by {} ",
                    app.model.clusters.len(),
                    app.sort.name()
                )),
        );
        f.render_stateful_widget(table, clu, &mut app.clusters);
    }

    fn draw_history(f: &mut Frame, app: &mut App, id: &str, area: ratatui::layout::Rect) {
        let rows: Vec<Row> = app
            .model
            .accounts
            .get(id)
            .map(|e| {
                e.windows
                    .iter()
                    .rev()
                    .map(|(start, w)| {
                        Row::new(vec![
                            fmt_time(*start),
                            fmt_time(w.window_end),
                            format!("{:.3}", w.score),
                            w.level.as_str().to_string(),
                            w.revision.to_string(),
                            w.events.to_string(),
                            fmt_reasons(&w.reasons),
                        ])
                        .style(level_style(w.level))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let n = rows.len();
        let table = Table::new(
            rows,
            [
                Constraint::Length(16),
                Constraint::Length(16),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(4),
                Constraint::Length(7),
                Constraint::Fill(1),
            ],
        )
        .header(
            Row::new([
                "window start",
                "window end",
                "score",
                "level",
                "rev",
                "events",
                "top reasons",
            ])
            .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(
            Block::bordered()
                .border_style(Style::new().fg(Color::Cyan))
                .title(format!(" {id}: {n} windows, newest first ")),
        );
        f.render_stateful_widget(table, area, &mut app.history_state);
    }
}

// ------------------------------------------------------------------ tests

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, start: i64, score: f64, level: Level, revision: i32) -> Rec {
        Rec {
            kind: Kind::Account,
            id: id.into(),
            window_start: start,
            window: Window {
                window_end: start + 600_000,
                score,
                level,
                revision,
                reasons: vec![Reason {
                    feature: "f".into(),
                    value: 1.0,
                    contribution: score,
                }],
                events: 1,
                member_count: 0,
                members: vec![],
            },
        }
    }

    fn ids(v: Vec<(&str, &Entity)>) -> Vec<String> {
        v.into_iter().map(|(k, _)| k.to_string()).collect()
    }

    #[test]
    fn revisions_replace_and_older_revisions_do_not() {
        let mut m = Model::default();
        m.ingest(rec("a", 0, 0.2, Level::Low, 0));
        m.ingest(rec("a", 0, 0.9, Level::Critical, 2));
        m.ingest(rec("a", 0, 0.5, Level::Elevated, 1)); // late, older revision
        let e = &m.accounts["a"];
        assert_eq!(e.windows.len(), 1);
        assert_eq!(e.latest().score, 0.9);
        assert_eq!(e.latest().revision, 2);
        assert_eq!(m.records, 3);
    }

    #[test]
    fn newer_windows_replace_older_ones_as_latest() {
        let mut m = Model::default();
        m.ingest(rec("a", 600_000, 0.7, Level::High, 0));
        m.ingest(rec("a", 0, 0.1, Level::Low, 0)); // an older window, late
        assert_eq!(m.accounts["a"].latest().score, 0.7);
        m.ingest(rec("a", 1_200_000, 0.3, Level::Elevated, 0));
        let e = &m.accounts["a"];
        assert_eq!(e.latest().score, 0.3);
        assert_eq!(e.windows.len(), 3);
        assert_eq!(e.flagged(), 1);
        assert_eq!(Model::by_level(&m.accounts), [0, 1, 0, 0]);
    }

    #[test]
    fn sort_orders() {
        let mut m = Model::default();
        // b: two flagged windows, latest low; c: highest score; a: newest.
        m.ingest(rec("b", 0, 0.8, Level::High, 0));
        m.ingest(rec("b", 600_000, 0.9, Level::Critical, 0));
        m.ingest(rec("b", 1_200_000, 0.1, Level::Low, 0));
        m.ingest(rec("c", 0, 0.95, Level::Critical, 0));
        m.ingest(rec("a", 3_000_000, 0.5, Level::Elevated, 0));
        assert_eq!(ids(m.top_accounts(Sort::Score)), ["c", "a", "b"]);
        assert_eq!(ids(m.top_accounts(Sort::Flagged)), ["b", "c", "a"]);
        assert_eq!(ids(m.top_accounts(Sort::Recent)), ["a", "b", "c"]);
        assert_eq!(ids(m.top_accounts(Sort::Id)), ["a", "b", "c"]);
        let mut s = Sort::Score;
        for _ in 0..4 {
            s = s.next();
        }
        assert_eq!(s, Sort::Score);
    }

    #[test]
    fn history_is_bounded_to_the_newest_windows() {
        let mut m = Model::default();
        let n = HISTORY as i64 + 50;
        for i in 0..n {
            m.ingest(rec("a", i * 600_000, 0.1, Level::Low, 0));
        }
        let e = &m.accounts["a"];
        assert_eq!(e.windows.len(), HISTORY);
        assert_eq!(*e.windows.keys().next().unwrap(), 50 * 600_000);
        // A late record of an evicted window does not come back.
        m.ingest(rec("a", 0, 0.99, Level::Critical, 1));
        let e = &m.accounts["a"];
        assert_eq!(e.windows.len(), HISTORY);
        assert!(!e.windows.contains_key(&0));
        assert_eq!(e.latest().window_end, (n - 1) * 600_000 + 600_000);
    }

    #[test]
    fn member_scores_and_bad_records_are_counted_not_ranked() {
        let mut m = Model::default();
        let mut r = rec("a", 0, 0.9, Level::Critical, 0);
        r.kind = Kind::Member;
        m.ingest(r);
        m.undecodable("junk".into());
        assert!(m.accounts.is_empty());
        assert_eq!((m.records, m.member_scores, m.undecodable), (2, 1, 1));
    }

    #[test]
    fn decodes_real_records_and_rejects_junk() {
        use distill_watch::schemas::{encode_framed, record_with_defaults};
        let set = SchemaSet::builtin();
        let reason = |f: &str, c: f64| {
            Value::Record(vec![
                ("feature".into(), Value::String(f.into())),
                ("value".into(), Value::Double(2.0)),
                ("contribution".into(), Value::Double(c)),
            ])
        };
        let v = record_with_defaults(
            &set.risk_score.avro,
            vec![
                ("account_id", Value::String("acct-1".into())),
                ("window_start", Value::TimestampMillis(0)),
                ("window_end", Value::TimestampMillis(600_000)),
                ("score", Value::Double(0.75)),
                ("level", Value::Enum(2, "high".into())),
                (
                    "reasons",
                    Value::Array(vec![reason("x", 0.5), reason("y", 0.25)]),
                ),
                ("model_version", Value::String("m1".into())),
                ("event_count", Value::Long(42)),
                ("revision", Value::Int(3)),
            ],
        );
        let bytes = encode_framed(&set.risk_score, v).unwrap();
        let r = decode(set, &bytes).unwrap();
        assert_eq!(r.kind, Kind::Account);
        assert_eq!(r.id, "acct-1");
        assert_eq!(r.window.level, Level::High);
        assert_eq!(r.window.revision, 3);
        assert_eq!(r.window.events, 42);
        assert_eq!(fmt_reasons(&r.window.reasons), "x=2 +0.50, y=2 +0.25");
        assert!(decode(set, b"junk").is_err());
        assert!(decode(set, &[0, 0, 0, 0, 99, 1, 2]).is_err());
        assert!(decode(set, &bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn formats_times() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00");
        assert_eq!(fmt_time(1_796_000_400_000), "2026-11-30 01:00");
    }
}
