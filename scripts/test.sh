#!/usr/bin/env bash
# The whole test suite: installs what it needs, then every crate's unit
# tests, the end-to-end tests against real shard servers and real clients,
# the decoder property tests, and a one-pass run of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# A clean clone builds once: incremental state would only take disk (3 GB).
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
cargo test --workspace --all-targets --locked
