#!/usr/bin/env bash
# Three local shards, a router on 127.0.0.1:27017 with the embedded config
# store, Prometheus metrics and health checks on 127.0.0.1:9216 (/metrics,
# /healthz, /readyz), a sample dataset; Ctrl-C stops everything. Extra flags go to
# `shardgate demo` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --locked -- demo "$@"
