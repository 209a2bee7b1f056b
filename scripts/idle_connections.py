#!/usr/bin/env python3
"""Router RSS with many idle client connections (issue 17, item 6).

Starts `shardgate serve` (embedded config store, no shards needed), opens
N client connections spread over several loopback source addresses
(127.0.0.2, 127.0.0.3, ...; the router allows
`limits.max_connections_per_ip` per address), sends `hello` on each and
reads the reply, then reports the router's RSS (VmRSS) before and after.

    scripts/idle_connections.py --bin target/release/shardgate --connections 15000

Needs `ulimit -n` above N (this machine allows 20,000).
"""

import argparse
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

PER_ADDRESS = 4000


def bson_hello():
    """The BSON body {hello: 1, $db: "admin"}."""
    elems = b"\x10hello\x00" + struct.pack("<i", 1)
    db = b"admin\x00"
    elems += b"\x02$db\x00" + struct.pack("<i", len(db)) + db
    return struct.pack("<i", len(elems) + 5) + elems + b"\x00"


def op_msg(request_id, body):
    payload = struct.pack("<I", 0) + b"\x00" + body
    header = struct.pack("<iiii", 16 + len(payload), request_id, 0, 2013)
    return header + payload


def read_reply(sock):
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("router closed the connection")
        head += chunk
    (length,) = struct.unpack("<i", head)
    rest = length - 4
    while rest > 0:
        chunk = sock.recv(rest)
        if not chunk:
            raise ConnectionError("router closed the connection")
        rest -= len(chunk)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_listening(port, deadline=30.0):
    start = time.time()
    while time.time() - start < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("router did not start listening")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="target/release/shardgate")
    parser.add_argument("--connections", type=int, default=15000)
    parser.add_argument("--port", type=int, default=27517)
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    data = tempfile.mkdtemp(prefix="idle-conns-")
    with open(os.path.join(data, "router.toml"), "w") as f:
        f.write("balancer = false\n[limits]\nmax_connections = 20000\n")
        f.write(f"max_connections_per_ip = {PER_ADDRESS + 10}\n")
    router = subprocess.Popen(
        [args.bin, "serve", "--listen", f"127.0.0.1:{args.port}",
         "--config-store", f"embedded:{data}/store",
         "--config", os.path.join(data, "router.toml")],
        stderr=open(os.path.join(data, "router.log"), "w"),
    )
    socks = []
    try:
        wait_listening(args.port)
        time.sleep(0.5)
        before = rss_kb(router.pid)
        hello = bson_hello()
        for i in range(args.connections):
            source = f"127.0.0.{2 + i // PER_ADDRESS}"
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((source, 0))
            s.connect(("127.0.0.1", args.port))
            s.sendall(op_msg(i + 1, hello))
            read_reply(s)
            socks.append(s)
        time.sleep(2)
        after = rss_kb(router.pid)
        print(f"connections: {len(socks)} (after hello, idle)")
        print(f"router RSS before: {before / 1024:.1f} MB")
        print(f"router RSS with idle connections: {after / 1024:.1f} MB")
        print(f"per connection: {(after - before) / max(len(socks), 1):.1f} KB")
    finally:
        for s in socks:
            s.close()
        router.terminate()
        router.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
