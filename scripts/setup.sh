#!/usr/bin/env bash
# Installs what shardgate's demo and tests need, idempotently:
#   .venv/        SecantusDB (the default shard server) and pymongo
#   .tools/       mongosh (npm), for the tests that drive a second real client
#   etcd-server   (Debian) for the replicated config store
#   protoc        (Debian protobuf-compiler) which the etcd client crate's build needs
#   promtool      (Debian prometheus) which checks the router's /metrics exposition
# A second run with everything present takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

SECANTUS_VERSION=0.7.0b3
PYMONGO_SPEC='pymongo>=4.6,<5'

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('SecantusDB') == '$SECANTUS_VERSION' else 1)" 2>/dev/null \
   || ! .venv/bin/python -c "import pymongo" 2>/dev/null; then
  echo "setup: installing SecantusDB==$SECANTUS_VERSION and pymongo into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "SecantusDB==$SECANTUS_VERSION" "$PYMONGO_SPEC"
fi

if [ ! -x .tools/node_modules/.bin/mongosh ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "setup: installing mongosh into .tools"
    mkdir -p .tools
    (cd .tools && npm install --no-audit --no-fund --silent mongosh >/dev/null)
  else
    echo "setup: npm not found; tests that need mongosh will say so and fail" >&2
  fi
fi

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]} (apt)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing ${missing[*]}; install them (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
