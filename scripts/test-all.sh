#!/usr/bin/env bash
# Runs every check and test of Pequod on a fresh machine: formatting, lints, unit,
# integration and golden tests. `.ci/run` calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/data ]; then
  echo "error: ../shared/data (upstream CRDs and JSON Schemas used by the tests) is missing" >&2
  exit 1
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --all-targets --locked
