#!/usr/bin/env bash
# Runs every check and test of Pequod on a fresh machine: formatting, lints, unit,
# integration and golden tests. `.ci/run` calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/data ]; then
  echo "error: ../shared/data (upstream CRDs and JSON Schemas used by the tests) is missing" >&2
  exit 1
fi

if ! command -v kubectl >/dev/null; then
  echo "error: kubectl is not installed; the end-to-end tests drive it against the test API server" >&2
  exit 1
fi

# Real tools the tests drive, from Debian's packages: promtool (prometheus) checks the
# operator's /metrics; docker-registry, skopeo and htpasswd (apache2-utils) are the OCI
# registry, another OCI client and the servers' credentials; sshd (openssh-server) and
# lighttpd with git http-backend serve Git over SSH and HTTP(S); openssl makes their keys.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v htpasswd >/dev/null || missing+=(apache2-utils)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ -x /usr/sbin/lighttpd ] || missing+=(lighttpd)
[ -e /usr/lib/lighttpd/mod_openssl.so ] || missing+=(lighttpd-mod-openssl)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --all-targets --locked
