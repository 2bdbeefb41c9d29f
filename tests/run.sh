#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs (etcd, openssl,
# the official OSS Python SDKs, pytest, nginx and HAProxy for the benchmark smoke run,
# Prometheus' promtool for the alert rules and dashboards,
# cargo-nextest, cargo-machete, cargo-deny, cargo-fuzz),
# checks formatting, lints, the docs (cargo doc), the module shape (tests/scripts/shape.py) and the dependencies
# (no unused one; licenses, one crypto provider, no unchosen second major: deny.toml), builds,
# then runs every Rust test (unit, property, in-process and end-to-end with
# real etcd and real processes), a tiny run of every benchmark, the official-SDK suite, and a
# short run of every fuzz target
# over its corpus. CI runs exactly this (.ci/run).
#
#   FUZZ_SECONDS=N    seconds per fuzz target (default 10; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
# No protoc: tools/protoc (.cargo/config.toml) uses the system's or installs protox.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The peers of the benchmark smoke run (tlsfleet-bench handshakes --smoke).
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
# promtool checks the alert rules and every dashboard query.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The Debian package check (tests/scripts/deb_check.sh).
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import oss2, alibabacloud_oss_v2, pytest' >/dev/null 2>&1; then
  echo "==> installing the official OSS SDKs (oss2, alibabacloud-oss-v2) and pytest"
  python3 -m pip install -q --disable-pip-version-check -r tests/sdk/requirements.txt
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install --locked -q cargo-nextest
fi
for tool in cargo-machete cargo-deny; do
  if ! cargo "${tool#cargo-}" --version >/dev/null 2>&1; then
    echo "==> installing $tool"
    cargo install --locked -q "$tool"
  fi
done
FUZZ_SECONDS=${FUZZ_SECONDS:-10}
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "cargo fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install --locked -q cargo-fuzz
  fi
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo doc: the crates' docs build without a warning (links, HTML)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "==> module shape: acyclic modules, no production file over 600 lines"
python3 tests/scripts/shape.py
echo "==> dependencies: none unused (cargo machete); licenses, bans, sources (cargo deny)"
cargo machete
cargo deny --log-level error check bans licenses sources
echo "==> alert rules: promtool check rules, promtool test rules (deploy/prometheus)"
promtool check rules deploy/prometheus/tlsfleet-alerts.yml
(cd deploy/prometheus && promtool test rules tlsfleet-alerts.test.yml)
echo "==> build"
cargo build --workspace --bins --tests
echo "==> Rust tests (unit, property, end-to-end)"
cargo nextest run --workspace --no-fail-fast
echo "==> benchmark smoke: every server and case of tlsfleet-bench, tiny (BENCHMARKS.md for the real runs)"
target/debug/tlsfleet-bench handshakes --smoke > /dev/null
target/debug/tlsfleet-bench control --smoke > /dev/null
target/debug/tlsfleet-bench convergence --smoke > /dev/null
# Nothing the benchmarks started may outlive them: a peer's worker whose master was killed
# instead of stopped is left running with parent 1.
orphans=$(ps -eo ppid=,pid=,args= | awk '$1 == 1 && (($3 ~ /^nginx/ && /worker/) || $3 ~ /haproxy$/ || $3 ~ /tlsfleet-(agent|control)$/ || $3 ~ /etcd$/)')
if [ -n "$orphans" ]; then
  echo "the benchmark smoke left processes running:" >&2
  echo "$orphans" >&2
  exit 1
fi
echo "==> official SDK tests (pytest)"
TLSFLEET_BIN_DIR="$PWD/target/debug" python3 -m pytest -q tests/sdk
echo "==> Debian package: build, dpkg -i, check (systemd-analyze verify), purge"
as_root tests/scripts/deb_check.sh
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  echo "==> fuzz smoke: ${FUZZ_SECONDS}s per target over fuzz/corpus (tests/fuzz.sh for long runs)"
  bash tests/fuzz.sh "$FUZZ_SECONDS"
fi
