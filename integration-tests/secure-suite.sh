#!/usr/bin/env bash
# The integration suite (integration-tests/tests/pipeline.rs) against the
# local broker with TLS and SASL/SCRAM required: every test in its own
# process, so every test gets its own secure broker.
#
# Why one broker per test: users need nisshi's sqlite:// storage, and its
# fetches slow down as the database fills. In one process the nine tests
# share one broker; the last of them, a replay by a second group, then
# waited more than five minutes for its first request records (ten seconds
# on a fresh broker). Per process, the suite takes about five minutes.
#
# Uses cargo-nextest (a process per test, two at a time) when installed,
# else runs the tests one by one with `cargo test --exact`.
set -euo pipefail
cd "$(dirname "$0")/.."
export DISTILL_WATCH_TEST_SECURE=1

if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --locked -p integration-tests --test pipeline \
        --test-threads 2 --no-fail-fast "$@"
fi
tests=$(cargo test --locked -q -p integration-tests --test pipeline -- --list --format terse |
    sed -n 's/: test$//p')
[ -n "$tests" ] || { echo "no tests listed" >&2; exit 1; }
failed=()
for t in $tests; do
    cargo test --locked -q -p integration-tests --test pipeline -- --exact "$t" "$@" ||
        failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed over TLS + SASL: %s\n' "${failed[@]}" >&2
    exit 1
fi
