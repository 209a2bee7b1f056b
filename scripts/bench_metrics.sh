#!/usr/bin/env bash
# The cost of metrics on the hot path: two routers over the same etcd
# config store and the same two SecantusDB shards, one serving metrics
# (--metrics-listen) and one not, measured by `shardgate bench` with
# targeted find_one at 32 clients, each order once. Prints both reports;
# the ratio is with-metrics / without (throughput).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SKIP_SETUP:-}" ] || scripts/setup.sh
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin shardgate
BIN=target/release/shardgate
WORK=$(mktemp -d /tmp/shardgate-bench-metrics.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ETCD_PORT=${ETCD_PORT:-23790}
etcd --data-dir "$WORK/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 10))" >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
for i in 0 1; do
  mkdir -p "$WORK/s$i"
  .venv/bin/secantusd-py --host 127.0.0.1 --port $((28101 + i)) --storage-path "$WORK/s$i" \
    --log-level WARNING >"$WORK/s$i.log" 2>&1 &
  PIDS+=($!)
done
sleep 3
STORE="etcd://127.0.0.1:$ETCD_PORT/bench"
$BIN serve --listen 127.0.0.1:28017 --config-store "$STORE" --metrics-listen 127.0.0.1:29216 >"$WORK/with.log" 2>&1 &
PIDS+=($!)
$BIN serve --listen 127.0.0.1:28018 --config-store "$STORE" >"$WORK/without.log" 2>&1 &
PIDS+=($!)
sleep 3
for i in 0 1; do
  .venv/bin/python -c "import pymongo,sys; print(pymongo.MongoClient('mongodb://127.0.0.1:28017').admin.command('addShard', sys.argv[1]))" "127.0.0.1:$((28101 + i))"
done
COMMON=(--clients 32 --mix find_by_key=100 --docs 20000 --warmup-secs 3)
RUN=(--duration-secs "${DURATION:-15}")
$BIN bench --uri mongodb://127.0.0.1:28017 --label setup "${COMMON[@]}" --setup --shard-key --duration-secs 1 >/dev/null
$BIN bench --uri mongodb://127.0.0.1:28017 --label with-metrics --uri2 mongodb://127.0.0.1:28018 --label2 without "${COMMON[@]}" "${RUN[@]}"
$BIN bench --uri mongodb://127.0.0.1:28018 --label without --uri2 mongodb://127.0.0.1:28017 --label2 with-metrics "${COMMON[@]}" "${RUN[@]}"
curl -s http://127.0.0.1:29216/metrics | grep -E '^shardgate_command_duration_seconds_count\{command="find"\}' || true
