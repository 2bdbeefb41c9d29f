#!/usr/bin/env bash
# Builds the Debian package of tlsfleet: the three binaries, their systemd units (an
# unprivileged user, the usual hardening), settings files, tlsfleetctl's completions and
# manual pages, the dashboards and alert rules, the docs.
#
#   deploy/debian/build-deb.sh [--profile release|dev] [--out DIR] [--fast]
#
# --profile: which cargo build to package (default release; the test suite packages its dev
# build). --fast: gzip -1 instead of xz (large unstripped binaries). Prints the .deb's path.
# Needs only cargo, dpkg-deb and gzip (no cargo-deb, no debhelper).
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=release
out=target/debian
compress=(-Zxz)
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --fast) compress=(-Zgzip -z1); shift ;;
    *) echo "usage: $0 [--profile release|dev] [--out DIR] [--fast]" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release) bindir=target/release ;;
  dev) bindir=target/debug ;;
  *) echo "unknown profile $profile (release or dev)" >&2; exit 2 ;;
esac

version=$(sed -n '/^version = "/{s/^version = "\(.*\)"/\1/p;q}' Cargo.toml)
arch=$(dpkg --print-architecture)
cargo build -q --profile "$profile" -p tlsfleet-control -p tlsfleet-agent -p tlsfleetctl --bins >&2

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/tlsfleet_${version}_${arch}"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/tlsfleet" \
  "$root/usr/share/doc/tlsfleet/docs" "$root/usr/share/man/man1" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d" \
  "$root/usr/share/tlsfleet/grafana" "$root/usr/share/tlsfleet/prometheus"

for bin in tlsfleet-control tlsfleet-agent tlsfleetctl; do
  install -m 0755 "$bindir/$bin" "$root/usr/bin/$bin"
done
if [ "$profile" = release ]; then
  strip --strip-debug "$root"/usr/bin/* 2>/dev/null || true
fi
install -m 0644 deploy/systemd/tlsfleet-control.service deploy/systemd/tlsfleet-agent.service \
  "$root/lib/systemd/system/"
install -m 0640 deploy/debian/control.toml deploy/debian/agent.toml "$root/etc/tlsfleet/"
install -m 0644 deploy/debian/credentials.toml.example "$root/usr/share/doc/tlsfleet/"

ctl="$root/usr/bin/tlsfleetctl"
"$ctl" completion bash > "$root/usr/share/bash-completion/completions/tlsfleetctl"
"$ctl" completion zsh > "$root/usr/share/zsh/vendor-completions/_tlsfleetctl"
"$ctl" completion fish > "$root/usr/share/fish/vendor_completions.d/tlsfleetctl.fish"
"$ctl" man --dir "$root/usr/share/man/man1" > /dev/null
gzip -9n "$root"/usr/share/man/man1/*.1

install -m 0644 README.md ARCHITECTURE.md SECURITY.md BENCHMARKS.md "$root/usr/share/doc/tlsfleet/"
install -m 0644 docs/*.md "$root/usr/share/doc/tlsfleet/docs/"
install -m 0644 deploy/grafana/*.json "$root/usr/share/tlsfleet/grafana/"
install -m 0644 deploy/prometheus/tlsfleet-alerts.yml deploy/prometheus/tlsfleet-alerts.test.yml \
  "$root/usr/share/tlsfleet/prometheus/"
cat > "$root/usr/share/doc/tlsfleet/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tlsfleet
License: Apache-2.0

Files: *
License: Apache-2.0
 On Debian systems, the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT

install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$root/DEBIAN/"
printf '/etc/tlsfleet/control.toml\n/etc/tlsfleet/agent.toml\n' > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: tlsfleet
Version: $version
Architecture: $arch
Maintainer: tlsfleet developers <tlsfleet@example.com>
Installed-Size: $size
Depends: libc6 (>= 2.34), adduser
Suggests: etcd-server, prometheus
Section: net
Priority: optional
Homepage: https://github.com/tlsfleet/tlsfleet
Description: per-bucket TLS versions and cipher suites for object storage
 tlsfleet lets an object-storage operator decide, bucket by bucket, which TLS
 versions and cipher suites clients may use, and has every edge node enforce it.
 .
 This package holds the control plane (tlsfleet-control: the OSS-compatible
 HttpsConfig REST API and gRPC, etcd or an embedded store), the edge agent
 (tlsfleet-agent) and the operator CLI (tlsfleetctl), with systemd units that
 run them as the unprivileged user tlsfleet.
CONTROL

mkdir -p "$out"
deb="$out/tlsfleet_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >&2
echo "$deb"
