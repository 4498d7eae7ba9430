//! A second local broker that requires SASL/SCRAM authentication, reached
//! over TLS, for the security tests: started once per test process.
//!
//! Two of nisshi 0.7.0-pre.2's limits shape it (pinned by
//! `tests/broker_behaviour.rs`):
//! - users are stored only by the `sqlite://` storage engine (`memory://`
//!   keeps none), which needs nisshi's `libsql` feature (a second install,
//!   [`local_broker::ensure_installed_sqlite`]), and `nisshi user create`
//!   cannot authenticate itself, so the users are created first through a
//!   broker started on the same file without `--authentication`;
//! - it refuses `--cert` together with `--key`, so it cannot serve TLS;
//!   TLS is terminated by a small proxy here (OpenSSL, the same library
//!   librdkafka uses), and the broker advertises the proxy's address. The
//!   clients see a real TLS + SASL_SSL endpoint, as with Apache Kafka.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use local_broker::{LocalBroker, StartOptions};
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslStream};

/// The one user the secure broker knows.
pub const USER: &str = "distill-watch";
pub const PASSWORD: &str = "Scram-Test-Passw0rd-for-the-secure-broker";
pub const MECHANISM: &str = "SCRAM-SHA-512";

pub struct SecureBroker {
    /// Where clients connect: the TLS proxy.
    pub bootstrap: String,
    /// The CA that signed the broker's certificate.
    pub ca: PathBuf,
    /// A CA that did not: a client trusting only it must refuse the broker.
    pub rogue_ca: PathBuf,
}

impl SecureBroker {
    /// librdkafka settings for SASL_SSL with `password`, trusting `ca`.
    pub fn client_settings(&self, password: &str, ca: &Path) -> Vec<(String, String)> {
        [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", MECHANISM),
            ("sasl.username", USER),
            ("sasl.password", password),
            ("ssl.ca.location", &ca.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// The secure broker of this test process, started on first use.
pub fn secure_broker() -> &'static SecureBroker {
    static BROKER: OnceLock<Result<SecureBroker, String>> = OnceLock::new();
    match BROKER.get_or_init(start) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

fn start() -> Result<SecureBroker, String> {
    let binary = local_broker::ensure_installed_sqlite().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(crate::unique_name("secure-broker"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    make_certs(&dir)?;
    // Relative: nisshi resolves sqlite paths against its working directory.
    let storage = "sqlite://users.db".to_string();

    // Users first, on a broker that does not ask for them yet.
    let setup = LocalBroker::start_with(
        &binary,
        None,
        &StartOptions {
            storage: storage.clone(),
            dir: Some(dir.clone()),
            ..StartOptions::default()
        },
    )
    .map_err(|e| format!("starting the broker that creates users: {e}"))?;
    let status = Command::new(&binary)
        .args(["user", "create", "--broker"])
        .arg(format!("tcp://{}", setup.bootstrap))
        .args(["--mechanism", "scram512", USER, PASSWORD])
        .status()
        .map_err(|e| format!("nisshi user create: {e}"))?;
    if !status.success() {
        return Err(format!("nisshi user create failed: {status}"));
    }
    setup.stop();

    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding the TLS proxy: {e}"))?;
    let bootstrap = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    let secure = SecureBroker {
        bootstrap: bootstrap.clone(),
        ca: dir.join("ca.pem"),
        rogue_ca: dir.join("rogue-ca.pem"),
    };
    // The proxy first: the broker advertises it, and the readiness probe
    // goes through it as every client does.
    let port = local_broker::free_port().map_err(|e| e.to_string())?;
    let upstream = SocketAddr::from(([127, 0, 0, 1], port));
    tls_proxy(
        listener,
        &dir.join("server.pem"),
        &dir.join("server-key.pem"),
        upstream,
    )?;
    let broker = LocalBroker::start_with(
        &binary,
        Some(port),
        &StartOptions {
            storage,
            args: vec!["--authentication".into()],
            advertised: Some(bootstrap.clone()),
            client: secure.client_settings(PASSWORD, &secure.ca),
            dir: Some(dir.clone()),
        },
    )
    .map_err(|e| format!("starting the broker with --authentication: {e}"))?;
    eprintln!(
        "integration-tests: secure nisshi on {} behind TLS on {bootstrap} (log {})",
        broker.bootstrap,
        broker.log.display()
    );
    // Lives for the rest of the process (and dies with it).
    Box::leak(Box::new(broker));
    Ok(secure)
}

/// A CA (`ca.pem`), a server certificate for 127.0.0.1 signed by it
/// (`server.pem`, `server-key.pem`) and a CA that signed nothing
/// (`rogue-ca.pem`) in `dir`, with the `openssl` command.
pub fn make_certs(dir: &Path) -> Result<(), String> {
    std::fs::write(
        dir.join("server-ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .map_err(|e| e.to_string())?;
    let ca = |name: &str, cn: &str| -> Vec<String> {
        format!("req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -keyout {name}-key.pem -out {name}.pem -subj /CN={cn} -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign")
            .split(' ')
            .map(String::from)
            .collect()
    };
    let steps: Vec<Vec<String>> = vec![
        ca("ca", "distill-watch-test-ca"),
        ca("rogue-ca", "rogue-ca"),
        "req -newkey rsa:2048 -nodes -sha256 -keyout server-key.pem -out server.csr -subj /CN=127.0.0.1"
            .split(' ')
            .map(String::from)
            .collect(),
        "x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 -sha256 -extfile server-ext.cnf -out server.pem"
            .split(' ')
            .map(String::from)
            .collect(),
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// Terminates TLS on `listener` and relays each connection to `upstream`.
fn tls_proxy(
    listener: TcpListener,
    cert: &Path,
    key: &Path,
    upstream: SocketAddr,
) -> Result<(), String> {
    let mut acceptor =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| e.to_string())?;
    acceptor
        .set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    acceptor
        .set_certificate_chain_file(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let acceptor = Arc::new(acceptor.build());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            // Said, not skipped: a client whose connection is never
            // accepted waits out its 30 s connection timeout, and a test
            // that expected a quick TLS refusal fails without a cause.
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("integration-tests: TLS proxy: accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            std::thread::spawn(move || {
                // A client that stalls mid-handshake gives up the thread.
                let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
                let tls = match acceptor.accept(client) {
                    Ok(tls) => tls,
                    // A client that refuses our certificate ends here.
                    Err(e) => {
                        eprintln!("integration-tests: TLS proxy: handshake: {e}");
                        return;
                    }
                };
                let _ = tls.get_ref().set_read_timeout(None);
                match TcpStream::connect(upstream) {
                    Ok(server) => {
                        let _ = relay(tls, server);
                    }
                    Err(e) => eprintln!("integration-tests: TLS proxy: {upstream}: {e}"),
                }
            });
        }
    });
    Ok(())
}

/// Copy both ways until either side closes. One thread per connection,
/// non-blocking sockets: an `SslStream` cannot be split between threads.
fn relay(mut tls: SslStream<TcpStream>, mut server: TcpStream) -> io::Result<()> {
    tls.get_ref().set_nonblocking(true)?;
    server.set_nonblocking(true)?;
    server.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut moved = false;
        match tls.ssl_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                write_all(&mut server, &buf[..n])?;
                moved = true;
            }
            Err(e)
                if e.code() == openssl::ssl::ErrorCode::WANT_READ
                    || e.code() == openssl::ssl::ErrorCode::WANT_WRITE => {}
            Err(e) if e.code() == openssl::ssl::ErrorCode::ZERO_RETURN => return Ok(()),
            Err(e) => return Err(io::Error::other(e)),
        }
        match server.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                write_all(&mut tls, &buf[..n])?;
                moved = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if !moved {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// `write_all` on a non-blocking stream: retry what it would block on.
fn write_all<W: Write>(w: &mut W, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match w.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(e) => return Err(e),
        }
    }
    loop {
        match w.flush() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(e) => return Err(e),
        }
    }
}
