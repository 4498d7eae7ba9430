#!/usr/bin/env bash
# Local Kafka-protocol broker (nisshi, formerly Tansu) for the demo and manual runs.
#
#   deploy/local/broker.sh install         cargo install nisshi into the cache (~7 min, once)
#   deploy/local/broker.sh install-sqlite  the build with sqlite:// storage the security tests use
#   deploy/local/broker.sh start [PORT]    start it in the background (default port 19092)
#   deploy/local/broker.sh stop [PORT]     stop it
#   deploy/local/broker.sh status [PORT]   is it running? (exit 0 yes, 3 no)
#   deploy/local/broker.sh up [PORT]       install if needed, start, create the topics
#   deploy/local/broker.sh topics [PORT]   create the topics (4 partitions; accounts.v1 compacted)
#
# Same install location and version as pipeline/src/local_broker.rs:
#   ${DISTILL_WATCH_CACHE:-$HOME/.cache/distill-watch}/nisshi-<version>/bin/nisshi
# (or the binary named by $DISTILL_WATCH_NISSHI). Storage is in memory: a
# restart loses all topics and data. Create the topics with `distill-watch
# topics create`: the broker does create a topic a client produces to, but
# with its default partition count and settings (pinned by
# integration-tests/tests/broker_behaviour.rs). Clients must use
# 127.0.0.1:PORT, not localhost.
set -euo pipefail

readonly NISSHI_VERSION="0.7.0-pre.2"
# Only the in-memory storage engine (memory://) is used; libsql (sqlite://)
# would add a C build of SQLite to every fresh install.
readonly NISSHI_FEATURES="dynostore"
# Compiled at opt-level 1 (7 min instead of ~13 on 2 cores; the broker is
# not what limits the demo, the tests or the bench): see NISSHI_OPT_LEVEL
# in pipeline/local-broker/src/lib.rs.
readonly NISSHI_OPT_LEVEL="1"
readonly DEFAULT_PORT=19092

CACHE_DIR="${DISTILL_WATCH_CACHE:-${HOME:?HOME is not set}/.cache/distill-watch}"
INSTALL_ROOT="$CACHE_DIR/nisshi-$NISSHI_VERSION"
NISSHI="${DISTILL_WATCH_NISSHI:-$INSTALL_ROOT/bin/nisshi}"
CARGO="${CARGO:-cargo}"

die() {
    echo "broker.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
}

check_port() {
    [[ "$1" =~ ^[0-9]+$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)) || die "invalid port: $1"
}

pid_file() { echo "$CACHE_DIR/broker-$1.pid"; }
log_file() { echo "$CACHE_DIR/logs/broker-$1.log"; }

# Prints the pid of the broker on PORT if it is running, else fails.
running_pid() {
    local file pid
    file="$(pid_file "$1")"
    [[ -f "$file" ]] || return 1
    pid="$(<"$file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q nisshi || return 1
    echo "$pid"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# cmd_install [ROOT FEATURES]: the default build, or another into ROOT.
cmd_install() {
    local root="${1:-$INSTALL_ROOT}" features="${2:-$NISSHI_FEATURES}" binary
    binary="${1:+$1/bin/nisshi}"
    binary="${binary:-$NISSHI}"
    if [[ -x "$binary" ]]; then
        echo "nisshi is installed: $binary ($("$binary" --version))"
        return 0
    fi
    [[ -n "${1:-}" || -z "${DISTILL_WATCH_NISSHI:-}" ]] || die "DISTILL_WATCH_NISSHI=$DISTILL_WATCH_NISSHI is not an executable"
    command -v "$CARGO" >/dev/null || die "cargo not found (install Rust from https://rustup.rs)"
    mkdir -p "$CACHE_DIR"
    # Same lock file as local_broker.rs (flock(2) on both sides), so a test run
    # and this script never install at the same time.
    exec 9>>"$CACHE_DIR/nisshi.lock"
    if ! flock -n 9; then
        echo "another process is installing nisshi; waiting for $CACHE_DIR/nisshi.lock" >&2
        flock 9
    fi
    if [[ ! -x "$binary" ]]; then
        echo "installing nisshi $NISSHI_VERSION into $root (one time, takes ~7 min on 2 cores)" >&2
        (cd "$CACHE_DIR" && CARGO_PROFILE_RELEASE_OPT_LEVEL="$NISSHI_OPT_LEVEL" "$CARGO" install nisshi --version "$NISSHI_VERSION" \
            --features "$features" --locked --root "$root")
    fi
    exec 9>&-
    [[ -x "$binary" ]] || die "cargo install finished but $binary does not exist"
    echo "nisshi is installed: $binary"
}

cmd_start() {
    local port="${1:-$DEFAULT_PORT}" pid log waited=0
    check_port "$port"
    [[ -x "$NISSHI" ]] || die "nisshi is not installed ($NISSHI); run: $0 install"
    if pid="$(running_pid "$port")"; then
        echo "broker already running on 127.0.0.1:$port (pid $pid)"
        return 0
    fi
    port_open "$port" && die "port $port on 127.0.0.1 is already in use by another process"
    log="$(log_file "$port")"
    mkdir -p "$(dirname "$log")"
    # nisshi reads these as flag defaults; keep the developer's shell out of it.
    env -u CLUSTER_ID -u LISTENER_URL -u ADVERTISED_LISTENER_URL -u STORAGE_ENGINE \
        -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG="${RUST_LOG:-warn}" NO_COLOR=1 \
        setsid "$NISSHI" broker \
        --storage-engine memory://nisshi/ \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        </dev/null >"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$(pid_file "$port")"
    until port_open "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$(pid_file "$port")"
            echo "broker exited during startup; last lines of $log:" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        if ((waited >= 300)); then
            echo "broker did not accept connections on 127.0.0.1:$port within 30 s; last lines of $log:" >&2
            tail -n 20 "$log" >&2 || true
            kill "$pid" 2>/dev/null || true
            rm -f "$(pid_file "$port")"
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    echo "broker running on 127.0.0.1:$port (pid $pid, log $log)"
}

cmd_stop() {
    local port="${1:-$DEFAULT_PORT}" pid i
    check_port "$port"
    if ! pid="$(running_pid "$port")"; then
        rm -f "$(pid_file "$port")"
        echo "broker on port $port is not running"
        return 0
    fi
    kill "$pid"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "broker (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pid_file "$port")"
    echo "broker on port $port stopped (pid $pid)"
}

cmd_status() {
    local port="${1:-$DEFAULT_PORT}" pid
    check_port "$port"
    if pid="$(running_pid "$port")"; then
        if port_open "$port"; then
            echo "running: 127.0.0.1:$port (pid $pid, log $(log_file "$port"))"
            return 0
        fi
        echo "starting or unresponsive: pid $pid, port $port not accepting connections"
        return 3
    fi
    echo "not running (port $port)"
    return 3
}

# Topic names, partitions and compaction come from the pipeline's
# configuration (`distill-watch topics create`), so they are defined once.
cmd_topics() {
    local port="${1:-$DEFAULT_PORT}"
    check_port "$port"
    local root
    root="$(cd "$(dirname "$0")/../.." && pwd)"
    (cd "$root" && DISTILL_WATCH_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$port" \
        "$CARGO" run --release -q -p distill-watch -- topics create --partitions 4)
}

cmd_up() {
    local port="${1:-$DEFAULT_PORT}"
    cmd_install
    running_pid "$port" >/dev/null || cmd_start "$port"
    cmd_topics "$port"
}

main() {
    local cmd="${1:-}"
    shift || true
    case "$cmd" in
    install) (($# == 0)) || die "usage: $0 install"; cmd_install ;;
    install-sqlite)
        (($# == 0)) || die "usage: $0 install-sqlite"
        # Same root and features as local_broker::ensure_installed_sqlite.
        cmd_install "$CACHE_DIR/nisshi-$NISSHI_VERSION-sqlite" "dynostore,libsql" ;;
    start) (($# <= 1)) || die "usage: $0 start [PORT]"; cmd_start "$@" ;;
    stop) (($# <= 1)) || die "usage: $0 stop [PORT]"; cmd_stop "$@" ;;
    status) (($# <= 1)) || die "usage: $0 status [PORT]"; cmd_status "$@" ;;
    topics) (($# <= 1)) || die "usage: $0 topics [PORT]"; cmd_topics "$@" ;;
    up) (($# <= 1)) || die "usage: $0 up [PORT]"; cmd_up "$@" ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
