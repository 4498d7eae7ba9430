//! Local Kafka-protocol broker for the demo and the integration tests.
//!
//! The broker is [nisshi](https://crates.io/crates/nisshi) (formerly Tansu), a
//! Kafka-protocol broker written in Rust. [`ensure_installed`] installs a pinned
//! version with `cargo install` into a per-user cache (once; it takes ~7 min on 2 cores),
//! and [`LocalBroker::start`] runs it with in-memory storage on a loopback port.
//!
//! Things to know about the broker (nisshi 0.7.0-pre.2, `memory://` storage),
//! pinned by `integration-tests/tests/broker_behaviour.rs`:
//! - it auto-creates topics a client produces to or asks metadata of, with
//!   default settings: create them first (`distill_watch::topics::create_topics`);
//! - clients must use `127.0.0.1:<port>` (what it advertises), never `localhost`;
//! - consumer-group joins take ~23 s unless `max.poll.interval.ms` is short
//!   (10 000 ms with `session.timeout.ms` 6 000 gives ~3 s);
//! - committed offsets round-trip but their *metadata* does not: OffsetFetch
//!   always answers `""`;
//! - ListOffsets LATEST (`fetch_watermarks`) answers the base offset of the last
//!   written batch + 1, which is the log end only for one-record batches; the
//!   high watermark in Fetch responses is right;
//! - `offsetsForTimes` answers 0, and high watermarks are wrong after an
//!   idempotent producer wrote.
//!
//! The broker process is killed when the [`LocalBroker`] is dropped and, on
//! Linux, also when the process that started it dies (`PR_SET_PDEATHSIG`), so a
//! broker kept in a leaked static never outlives its test binary.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::{debug, info, warn};

/// The nisshi version the project is tested against.
pub const NISSHI_VERSION: &str = "0.7.0-pre.2";

/// Cargo features nisshi is installed with: the in-memory storage engine
/// (`memory://`) is all the demo and the tests use; `libsql` (`sqlite://`)
/// would add a C build of SQLite and 16 crates to every fresh install.
pub const NISSHI_FEATURES: &str = "dynostore";

/// Features of the second install the security tests need: SCRAM users are
/// kept only by the `sqlite://` storage engine. Installed apart
/// (`<cache>/nisshi-<version>-sqlite`), on first use, so that the demo's
/// first run does not wait for SQLite's build.
pub const NISSHI_FEATURES_SQLITE: &str = "dynostore,libsql";

/// Optimisation level nisshi is compiled with (`cargo install` builds the
/// release profile, opt-level 3, otherwise). Measured on 2 cores from a
/// clean cargo cache: 7 min 15 s at level 1, against ~13 min at 3 on a
/// quiet machine; the bench's broker figures (produce 435,000 msg/s, the
/// bare consumer's 52,000 exchanges/s) did not change, because neither
/// the tests nor the demo come near what the broker can serve. A fresh
/// machine gets to the demo's table that much sooner.
pub const NISSHI_OPT_LEVEL: &str = "1";

/// Environment variable naming an already-installed nisshi binary to use instead
/// of the cached install.
pub const NISSHI_BINARY_ENV: &str = "DISTILL_WATCH_NISSHI";

/// Environment variable overriding the cache directory.
pub const CACHE_DIR_ENV: &str = "DISTILL_WATCH_CACHE";

/// How long [`LocalBroker::start`] waits for the broker to answer metadata.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables nisshi's CLI reads as defaults for its flags; they are
/// removed from the broker's environment so that a developer's shell cannot
/// silently change the local broker (e.g. point it at a schema registry).
const NISSHI_ENV_VARS: &[&str] = &[
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "DATA_LAKE",
    "ICEBERG_CATALOG",
    "ICEBERG_NAMESPACE",
    "ICEBERG_WAREHOUSE",
    "DELTA_DATABASE",
];

/// Errors from installing or running the local broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// `DISTILL_WATCH_NISSHI` is set but does not name a file.
    #[error("{NISSHI_BINARY_ENV}={} does not name a file", .0.display())]
    OverrideMissing(PathBuf),

    /// A filesystem or process operation failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The path (or program) involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// `cargo install nisshi` exited unsuccessfully.
    #[error("`{command}` failed ({status}); see its output above")]
    InstallFailed {
        /// The command line that was run.
        command: String,
        /// Its exit status.
        status: ExitStatus,
    },

    /// `cargo install` succeeded but the binary is not where it should be.
    #[error("`cargo install` succeeded but {} does not exist", .0.display())]
    InstallMissingBinary(PathBuf),

    /// No free loopback port could be found.
    #[error("cannot find a free port on 127.0.0.1: {0}")]
    NoFreePort(#[source] io::Error),

    /// The broker process exited before it became ready.
    #[error("nisshi broker on {bootstrap} exited during startup ({status}); log {}:\n{log_tail}", .log.display())]
    ExitedEarly {
        /// Address it was meant to listen on.
        bootstrap: String,
        /// Its exit status.
        status: ExitStatus,
        /// Where its output went.
        log: PathBuf,
        /// The last lines of that output.
        log_tail: String,
    },

    /// The broker did not answer a metadata request in time.
    #[error("nisshi broker on {bootstrap} did not answer a metadata request within {waited:?} (last error: {last_error}); log {}:\n{log_tail}", .log.display())]
    NotReady {
        /// Address it listens on.
        bootstrap: String,
        /// How long we waited.
        waited: Duration,
        /// The last client error seen.
        last_error: String,
        /// Where its output went.
        log: PathBuf,
        /// The last lines of that output.
        log_tail: String,
    },
}

fn io_err(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> BrokerError {
    let path = path.into();
    move |source| BrokerError::Io {
        action,
        path,
        source,
    }
}

/// The per-user cache directory: `$DISTILL_WATCH_CACHE`, else
/// `$HOME/.cache/distill-watch` (else a directory under the system temp dir).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("distill-watch"),
        None => std::env::temp_dir().join("distill-watch-cache"),
    }
}

/// Where `cargo install` puts nisshi: `<cache>/nisshi-<version>`.
pub fn install_root() -> PathBuf {
    cache_dir().join(format!("nisshi-{NISSHI_VERSION}"))
}

/// Where the install with `sqlite://` storage goes.
pub fn install_root_sqlite() -> PathBuf {
    cache_dir().join(format!("nisshi-{NISSHI_VERSION}-sqlite"))
}

/// Path of the nisshi binary inside [`install_root`] (may not exist yet).
pub fn installed_binary() -> PathBuf {
    install_root().join("bin").join("nisshi")
}

/// Returns the path of a nisshi binary, installing it if needed.
///
/// Order: `$DISTILL_WATCH_NISSHI` if set; else `<cache>/nisshi-<ver>/bin/nisshi`
/// if it exists; else `cargo install` it there (using `$CARGO` if set). The
/// install is guarded by an exclusive lock on `<cache>/nisshi.lock`, so parallel
/// test binaries and a demo started at the same time install only once.
pub fn ensure_installed() -> Result<PathBuf, BrokerError> {
    ensure_installed_at(&install_root(), NISSHI_FEATURES)
}

/// [`ensure_installed`] for the build with `sqlite://` storage
/// ([`NISSHI_FEATURES_SQLITE`]). `$DISTILL_WATCH_NISSHI`, if set, must name
/// such a build.
pub fn ensure_installed_sqlite() -> Result<PathBuf, BrokerError> {
    ensure_installed_at(&install_root_sqlite(), NISSHI_FEATURES_SQLITE)
}

fn ensure_installed_at(root: &Path, features: &str) -> Result<PathBuf, BrokerError> {
    if let Some(path) = std::env::var_os(NISSHI_BINARY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            debug!(binary = %path.display(), "using nisshi from {NISSHI_BINARY_ENV}");
            Ok(path)
        } else {
            Err(BrokerError::OverrideMissing(path))
        };
    }

    let binary = root.join("bin").join("nisshi");
    if binary.is_file() {
        return Ok(binary);
    }

    let cache = cache_dir();
    fs::create_dir_all(&cache).map_err(io_err("create directory", &cache))?;
    let lock_path = cache.join("nisshi.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("open lock file", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            eprintln!(
                "distill-watch: another process is installing nisshi {NISSHI_VERSION}; waiting for the lock on {}",
                lock_path.display()
            );
            lock.lock().map_err(io_err("lock", &lock_path))?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
    }

    // Someone else may have finished the install while we waited for the lock.
    if binary.is_file() {
        return Ok(binary);
    }
    install(&cache, root, features, &binary)?;
    // `lock` is released when it is dropped here.
    drop(lock);
    Ok(binary)
}

fn install(cache: &Path, root: &Path, features: &str, binary: &Path) -> Result<(), BrokerError> {
    let cargo = std::env::var_os("CARGO")
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| OsString::from("cargo"));
    let args: Vec<OsString> = vec![
        "install".into(),
        "nisshi".into(),
        "--version".into(),
        NISSHI_VERSION.into(),
        "--features".into(),
        features.into(),
        "--locked".into(),
        "--root".into(),
        root.as_os_str().to_owned(),
    ];
    const OPT_LEVEL_ENV: &str = "CARGO_PROFILE_RELEASE_OPT_LEVEL";
    let command_line = std::iter::once(&cargo)
        .chain(&args)
        .fold(format!("{OPT_LEVEL_ENV}={NISSHI_OPT_LEVEL}"), |line, a| {
            line + " " + &a.to_string_lossy()
        });
    eprintln!(
        "distill-watch: installing the nisshi {NISSHI_VERSION} Kafka broker into {} (one time, takes ~7 min on 2 cores): {command_line}",
        root.display()
    );
    info!(command = %command_line, "installing nisshi");
    let status = Command::new(&cargo)
        .args(&args)
        .env(OPT_LEVEL_ENV, NISSHI_OPT_LEVEL)
        // Run outside any workspace so its .cargo/config.toml does not apply.
        .current_dir(cache)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(io_err("run", PathBuf::from(&cargo)))?;
    if !status.success() {
        return Err(BrokerError::InstallFailed {
            command: command_line,
            status,
        });
    }
    if !binary.is_file() {
        return Err(BrokerError::InstallMissingBinary(binary.to_path_buf()));
    }
    Ok(())
}

/// How to start a [`LocalBroker`] other than the default (in-memory
/// storage, no authentication).
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// `--storage-engine`, e.g. `sqlite://FILE` (users are kept only there).
    pub storage: String,
    /// More flags, e.g. `--authentication`.
    pub args: Vec<String>,
    /// What the broker advertises instead of its own address (`host:port`
    /// of a proxy in front of it).
    pub advertised: Option<String>,
    /// librdkafka settings of the readiness probe (credentials), which
    /// connects to `advertised` when given.
    pub client: Vec<(String, String)>,
    /// The broker's working directory: nisshi takes `sqlite://` paths
    /// relative to it, even those starting with `/`.
    pub dir: Option<PathBuf>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            storage: "memory://nisshi/".into(),
            args: Vec::new(),
            advertised: None,
            client: Vec::new(),
            dir: None,
        }
    }
}

/// A nisshi broker process with in-memory storage, listening on 127.0.0.1.
///
/// Dropping it kills the broker and waits for it.
#[derive(Debug)]
pub struct LocalBroker {
    child: Child,
    /// Bootstrap address for clients, `127.0.0.1:<port>`.
    pub bootstrap: String,
    /// The port it listens on.
    pub port: u16,
    /// File receiving the broker's stdout and stderr.
    pub log: PathBuf,
}

impl LocalBroker {
    /// Starts `binary broker` on `127.0.0.1:port` (a free port if `None`) and
    /// waits until it answers a Kafka metadata request.
    pub fn start(binary: &Path, port: Option<u16>) -> Result<LocalBroker, BrokerError> {
        Self::start_with(binary, port, &StartOptions::default())
    }

    /// [`LocalBroker::start`] with other storage, flags and client settings.
    pub fn start_with(
        binary: &Path,
        port: Option<u16>,
        options: &StartOptions,
    ) -> Result<LocalBroker, BrokerError> {
        // A port picked by us can be taken by someone else before nisshi binds
        // it; retry with a fresh one in that case.
        let attempts = if port.is_some() { 1 } else { 3 };
        let mut last = None;
        for _ in 0..attempts {
            let port = match port {
                Some(p) => p,
                None => free_port()?,
            };
            match Self::start_on(binary, port, options) {
                Err(e @ BrokerError::ExitedEarly { .. }) => {
                    warn!(%e, "nisshi exited during startup");
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn start_on(
        binary: &Path,
        port: u16,
        options: &StartOptions,
    ) -> Result<LocalBroker, BrokerError> {
        let bootstrap = format!("127.0.0.1:{port}");
        let url = format!("tcp://{bootstrap}");
        let advertised = options
            .advertised
            .as_ref()
            .map_or(url.clone(), |a| format!("tcp://{a}"));
        let log_dir = cache_dir().join("logs");
        fs::create_dir_all(&log_dir).map_err(io_err("create directory", &log_dir))?;
        let log = log_dir.join(format!("nisshi-{port}.log"));
        let out = File::create(&log).map_err(io_err("create log file", &log))?;
        let err = out.try_clone().map_err(io_err("open log file", &log))?;

        let mut command = Command::new(binary);
        command
            .args(["broker", "--storage-engine", &options.storage])
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(&options.args)
            .current_dir(options.dir.as_deref().unwrap_or(Path::new(".")))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for var in NISSHI_ENV_VARS {
            command.env_remove(var);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        // Plain text in the log file (its tracing output is coloured otherwise).
        command.env("NO_COLOR", "1");
        die_with_parent(&mut command);

        info!(binary = %binary.display(), %bootstrap, log = %log.display(), "starting nisshi");
        let child = spawn_on_long_lived_thread(command).map_err(|e| {
            let _ = fs::remove_file(&log);
            io_err("start", binary)(e)
        })?;
        let mut broker = LocalBroker {
            child,
            bootstrap,
            port,
            log,
        };
        // On error `broker` is dropped, which kills the process.
        // Through what it advertises, where its clients will be sent.
        let probe = options.advertised.as_deref().unwrap_or(&broker.bootstrap);
        let probe = probe.to_string();
        broker.wait_ready(READY_TIMEOUT, &probe, &options.client)?;
        info!(bootstrap = %broker.bootstrap, "nisshi is ready");
        Ok(broker)
    }

    fn wait_ready(
        &mut self,
        timeout: Duration,
        bootstrap: &str,
        client: &[(String, String)],
    ) -> Result<(), BrokerError> {
        let started = Instant::now();
        let mut cc = ClientConfig::new();
        for (k, v) in client {
            cc.set(k, v);
        }
        let consumer: Result<BaseConsumer, _> = cc
            .set("bootstrap.servers", bootstrap)
            .set("socket.connection.setup.timeout.ms", "1000")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "250")
            .set("log_level", "0")
            .create();
        let consumer = match consumer {
            Ok(c) => c,
            Err(e) => return Err(self.not_ready(started.elapsed(), e.to_string())),
        };
        let mut last_error = String::from("none");
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(io_err("wait for", &self.log))?
            {
                return Err(BrokerError::ExitedEarly {
                    bootstrap: self.bootstrap.clone(),
                    status,
                    log: self.log.clone(),
                    log_tail: log_tail(&self.log),
                });
            }
            if started.elapsed() >= timeout {
                return Err(self.not_ready(started.elapsed(), last_error));
            }
            match consumer.fetch_metadata(None, Duration::from_millis(1000)) {
                Ok(md) if !md.brokers().is_empty() => {
                    debug!(waited = ?started.elapsed(), "nisshi answered metadata");
                    return Ok(());
                }
                Ok(_) => last_error = "metadata lists no brokers".into(),
                Err(e) => last_error = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn not_ready(&self, waited: Duration, last_error: String) -> BrokerError {
        BrokerError::NotReady {
            bootstrap: self.bootstrap.clone(),
            waited,
            last_error,
            log: self.log.clone(),
            log_tail: log_tail(&self.log),
        }
    }

    /// Process id of the broker.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker and waits for it to exit.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Err(e) = self.child.kill() {
            warn!(pid = self.child.id(), %e, "cannot kill nisshi");
        }
        if let Err(e) = self.child.wait() {
            warn!(pid = self.child.id(), %e, "cannot reap nisshi");
        }
        debug!(bootstrap = %self.bootstrap, "nisshi stopped");
    }
}

/// Finds a currently free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, BrokerError> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .map_err(BrokerError::NoFreePort)?;
    let port = listener
        .local_addr()
        .map_err(BrokerError::NoFreePort)?
        .port();
    Ok(port)
}

/// The last ~40 lines (at most 8 KiB) of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    const MAX: u64 = 8 * 1024;
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        let lines: Vec<&str> = text.lines().collect();
        Ok(lines[lines.len().saturating_sub(40)..].join("\n"))
    };
    match read() {
        Ok(t) if t.trim().is_empty() => "(log is empty)".into(),
        Ok(t) => t,
        Err(e) => format!("(cannot read log: {e})"),
    }
}

/// Makes the child get SIGKILL when its parent dies (Linux only).
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
/// the process; that is why children are spawned from
/// [`spawn_on_long_lived_thread`] rather than from whatever (test or tokio
/// blocking-pool) thread asked for a broker.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;

    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only makes async-signal-safe syscalls and does not
    // allocate (`from_raw_os_error` / `last_os_error` do not allocate).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {
    // No portable equivalent; the broker is killed when `LocalBroker` is dropped.
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` from a dedicated thread that lives as long as the process,
/// so that `PR_SET_PDEATHSIG` fires when the process dies, not when the thread
/// that happened to start the broker exits.
fn spawn_on_long_lived_thread(command: Command) -> io::Result<Child> {
    static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);

    let sender = {
        let mut guard = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(s) => s.clone(),
            None => {
                let (tx, rx) = mpsc::channel::<SpawnRequest>();
                std::thread::Builder::new()
                    .name("nisshi-spawner".into())
                    .spawn(move || {
                        // Runs until the process exits: the sender lives in a static.
                        for (mut command, reply) in rx {
                            let _ = reply.send(command.spawn());
                        }
                    })?;
                *guard = Some(tx.clone());
                tx
            }
        }
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .send((command, reply_tx))
        .map_err(|_| io::Error::other("nisshi spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("nisshi spawner thread is gone"))?
}
