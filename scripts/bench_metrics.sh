#!/usr/bin/env bash
# The cost of metrics on the hot path: two routers over the same etcd
# config store and the same two SecantusDB shards, one serving metrics
# (--metrics-listen) and one not, measured by `shardgate bench` with
# targeted find_one at 32 clients, each order once. Prints both reports;
# the ratio is with-metrics / without (throughput).
#   CLIENTS="1 32"  client counts to measure (default 32)
#   REPS=3          repetitions of both orders per client count (default 1)
#   PORT_OFFSET=N   added to every port, to run beside another copy
#   SHARD_BIN=path  the shard server (default .venv/bin/secantusd-py; the
#                   Rust build secantusd-rs shows the router's own cost)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SKIP_SETUP:-}" ] || scripts/setup.sh
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin shardgate
BIN=target/release/shardgate
WORK=$(mktemp -d /tmp/shardgate-bench-metrics.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
OFF=${PORT_OFFSET:-0}
ETCD_PORT=${ETCD_PORT:-$((23790 + OFF))}
SHARD=$((28101 + OFF)) WITH=$((28017 + OFF)) WITHOUT=$((28018 + OFF)) METRICS=$((29216 + OFF))
etcd --data-dir "$WORK/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 10))" >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
for i in 0 1; do
  mkdir -p "$WORK/s$i"
  "${SHARD_BIN:-.venv/bin/secantusd-py}" --host 127.0.0.1 --port $((SHARD + i)) --storage-path "$WORK/s$i" \
    --log-level WARNING >"$WORK/s$i.log" 2>&1 &
  PIDS+=($!)
done
sleep 3
STORE="etcd://127.0.0.1:$ETCD_PORT/bench"
$BIN serve --listen 127.0.0.1:$WITH --config-store "$STORE" --metrics-listen 127.0.0.1:$METRICS >"$WORK/with.log" 2>&1 &
PIDS+=($!)
$BIN serve --listen 127.0.0.1:$WITHOUT --config-store "$STORE" >"$WORK/without.log" 2>&1 &
PIDS+=($!)
sleep 3
for i in 0 1; do
  .venv/bin/python -c "import pymongo,sys; print(pymongo.MongoClient('mongodb://127.0.0.1:$WITH').admin.command('addShard', sys.argv[1]))" "127.0.0.1:$((SHARD + i))"
done
COMMON=(--mix find_by_key=100 --docs 20000 --warmup-secs 3)
RUN=(--duration-secs "${DURATION:-15}")
$BIN bench --uri mongodb://127.0.0.1:$WITH --label setup --clients 32 "${COMMON[@]}" --setup --shard-key --duration-secs 1 >/dev/null
for clients in ${CLIENTS:-32}; do
  for rep in $(seq 1 "${REPS:-1}"); do
    echo "== $clients clients, repetition $rep"
    $BIN bench --uri mongodb://127.0.0.1:$WITH --label with-metrics --uri2 mongodb://127.0.0.1:$WITHOUT --label2 without --clients "$clients" "${COMMON[@]}" "${RUN[@]}"
    $BIN bench --uri mongodb://127.0.0.1:$WITHOUT --label without --uri2 mongodb://127.0.0.1:$WITH --label2 with-metrics --clients "$clients" "${COMMON[@]}" "${RUN[@]}"
  done
done
curl -s http://127.0.0.1:$METRICS/metrics | grep -E '^shardgate_command_duration_seconds_count\{command="find"\}' || true
