#!/usr/bin/env bash
# The whole test suite: installs what it needs, then every crate's unit
# tests, the end-to-end tests against real shard servers and real clients,
# the decoder property tests, and a one-pass run of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --all-targets --locked
