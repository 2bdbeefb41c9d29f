#!/usr/bin/env bash
# Builds the Debian package from the dev build, installs it with dpkg -i on this machine,
# checks what it installed (binaries, user, files, permissions, units with
# `systemd-analyze verify`, tlsfleetctl's completions and manual, a control server started as
# the service user from the packaged settings), then purges it and checks it is gone.
# Run by tests/run.sh as root (or through sudo). Exits non-zero naming the first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
fail() { echo "deb check: $*" >&2; exit 1; }

if dpkg -s tlsfleet >/dev/null 2>&1; then
  fail "a tlsfleet package is already installed here; not touching it (dpkg --purge tlsfleet)"
fi
out=$(mktemp -d)
scratch=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then as_root kill "$pid" 2>/dev/null || true; fi
  as_root dpkg --purge tlsfleet >/dev/null 2>&1 || true
  rm -rf "$out" "$scratch"
}
trap cleanup EXIT

deb=$(deploy/debian/build-deb.sh --profile dev --fast --out "$out")
# Whole outputs are captured before grep reads them: under pipefail, `cmd | grep -q` fails
# whenever grep exits at its match before cmd has written everything (cmd gets SIGPIPE).
info=$(dpkg-deb --info "$deb") || fail "dpkg-deb --info $deb failed"
grep -q "Package: tlsfleet" <<<"$info" || fail "no package metadata: $info"
as_root env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null

for bin in tlsfleet-control tlsfleet-agent tlsfleetctl; do
  [ -x "/usr/bin/$bin" ] || fail "/usr/bin/$bin missing"
  "/usr/bin/$bin" --version >/dev/null || fail "$bin --version"
done
getent passwd tlsfleet >/dev/null || fail "no tlsfleet user"
shell=$(getent passwd tlsfleet | cut -d: -f7)
case "$shell" in */nologin|*/false) ;; *) fail "tlsfleet user has a login shell: $shell" ;; esac
[ "$(stat -c '%U:%G %a' /etc/tlsfleet)" = "root:tlsfleet 750" ] || fail "/etc/tlsfleet: $(stat -c '%U:%G %a' /etc/tlsfleet)"
[ "$(stat -c '%U:%G %a' /etc/tlsfleet/control.toml)" = "root:tlsfleet 640" ] || fail "control.toml permissions"
for f in /lib/systemd/system/tlsfleet-control.service /lib/systemd/system/tlsfleet-agent.service \
  /usr/share/bash-completion/completions/tlsfleetctl /usr/share/zsh/vendor-completions/_tlsfleetctl \
  /usr/share/man/man1/tlsfleetctl.1.gz /usr/share/man/man1/tlsfleetctl-rollout-status.1.gz \
  /usr/share/tlsfleet/grafana/tlsfleet-fleet.json /usr/share/tlsfleet/prometheus/tlsfleet-alerts.yml \
  /usr/share/doc/tlsfleet/copyright /usr/share/doc/tlsfleet/docs/configuration.md; do
  [ -s "$f" ] || fail "$f missing"
done
grep -q "^/etc/tlsfleet/control.toml$" /var/lib/dpkg/info/tlsfleet.conffiles || fail "conffiles"

# The units: systemd's own checker (here without a running systemd: it reads the files).
if command -v systemd-analyze >/dev/null 2>&1; then
  for unit in tlsfleet-control tlsfleet-agent; do
    if ! msg=$(systemd-analyze verify --man=no "/lib/systemd/system/$unit.service" 2>&1); then
      fail "systemd-analyze verify $unit: $msg"
    fi
    [ -z "$msg" ] || fail "systemd-analyze verify $unit says: $msg"
  done
  echo "deb check: systemd-analyze verify passed for both units"
else
  echo "deb check: systemd-analyze not here; units not verified"
fi
grep -q "^User=tlsfleet$" /lib/systemd/system/tlsfleet-agent.service || fail "agent unit user"
grep -q "^NoNewPrivileges=true$" /lib/systemd/system/tlsfleet-control.service || fail "hardening"

# The packaged settings parse (with the packaged credentials path) and, as the service user, a
# control server starts from them on its embedded store.
control_cfg=$(/usr/bin/tlsfleet-control --config /etc/tlsfleet/control.toml --print-config) \
  || fail "tlsfleet-control --print-config failed on the packaged control.toml"
grep -q '^store = "file:/var/lib/tlsfleet/data"  # file$' <<<"$control_cfg" || fail "packaged control.toml"
agent_cfg=$(/usr/bin/tlsfleet-agent --config /etc/tlsfleet/agent.toml --print-config) \
  || fail "tlsfleet-agent --print-config failed on the packaged agent.toml"
grep -q '^cache-dir = "/var/cache/tlsfleet"  # file$' <<<"$agent_cfg" || fail "packaged agent.toml"
install -d -o tlsfleet -g tlsfleet -m 0750 "$scratch/state"
printf '[[key]]\nid = "AKIDADMIN"\nsecret = "s"\nallow = ["*"]\n' > "$scratch/creds.toml"
chmod 0644 "$scratch/creds.toml"
chmod 0755 "$scratch"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
gport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Started without the as_root function: a function put in the background runs in a subshell,
# so $! would be that subshell's pid and killing it would leave the server running. setpriv
# execs the server (same pid); sudo passes the kill on to it.
if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
"${sudo[@]}" setpriv --reuid=tlsfleet --regid=tlsfleet --init-groups \
  /usr/bin/tlsfleet-control --config /etc/tlsfleet/control.toml \
  --store "file:$scratch/state/data" --credentials "$scratch/creds.toml" \
  --http-listen "127.0.0.1:$port" --grpc-listen "127.0.0.1:$gport" > "$scratch/control.log" 2>&1 &
pid=$!
ready=no
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/-/readyz" >/dev/null 2>&1; then ready=yes; break; fi
  sleep 0.1
done
as_root kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
pid=""
[ "$ready" = yes ] || fail "control server as user tlsfleet not ready: $(cat "$scratch/control.log")"
# Nothing the check started may outlive it.
left=$(pgrep -f "^/usr/bin/tlsfleet-control .*$scratch" || true)
if [ -n "$left" ]; then
  as_root kill $left 2>/dev/null || true
  fail "the packaged control server was still running after its kill (pid $left)"
fi
[ "$(stat -c %U "$scratch/state/data")" = tlsfleet ] || fail "store not owned by tlsfleet"

as_root dpkg --purge tlsfleet >/dev/null
[ ! -e /usr/bin/tlsfleet-control ] || fail "binaries left after purge"
[ ! -e /etc/tlsfleet ] || fail "/etc/tlsfleet left after purge"
echo "deb check: $(basename "$deb") built, installed, checked, purged"
