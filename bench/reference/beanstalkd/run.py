#!/usr/bin/env python3
"""Reference measurement for `cargo xtask compare`: beanstalkd with fsync.

One run: start `beanstalkd -l 127.0.0.1 -p PORT -b BINLOG_DIR -f 0` (the
binlog is fsynced on every write), then PRODUCERS producer processes put
JOBS no-op jobs between them while CONSUMERS consumer processes reserve and
delete them. Each client is its own Python process with one greenstalk
connection; all of them connect first and are started together, so the
interpreters' start-up is not measured. The figure is JOBS / (last delete -
first put), on the system-wide monotonic clock. Prints one JSON line on
stdout; the binlog directory is removed afterwards.

    .venv/bin/python bench/reference/beanstalkd/run.py [--jobs 20000]
        [--producers 4] [--consumers 4] [--beanstalkd beanstalkd]

Consumers stop on a "stop" job: one per consumer, put at a lower priority
once every producer is done, so it is reserved only after every real job.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import greenstalk

STOP = "stop"
BODY = "noop"
JOB_PRIORITY = 1000
STOP_PRIORITY = 2**31  # served after every job of JOB_PRIORITY


def producer(port: int, count: int) -> dict:
    client = greenstalk.Client(("127.0.0.1", port))
    print("ready", flush=True)
    sys.stdin.readline()
    first = time.monotonic()
    for _ in range(count):
        client.put(BODY, priority=JOB_PRIORITY, ttr=60)
    last = time.monotonic()
    client.close()
    return {"role": "producer", "put": count, "first_put": first, "last_put": last}


def consumer(port: int) -> dict:
    client = greenstalk.Client(("127.0.0.1", port))
    print("ready", flush=True)
    sys.stdin.readline()
    deleted = 0
    last = None
    while True:
        job = client.reserve()
        client.delete(job)
        if job.body == STOP:
            break
        deleted += 1
        last = time.monotonic()
    client.close()
    return {"role": "consumer", "deleted": deleted, "last_delete": last}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"beanstalkd exited with {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("beanstalkd did not start listening within 10 s")


def spawn(role: str, port: int, count: int) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, __file__, "--role", role, "--port", str(port), "--count", str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{role} did not start")
    return child


def finish(child: subprocess.Popen, timeout: float) -> dict:
    out, _ = child.communicate(timeout=timeout)
    if child.returncode != 0:
        raise RuntimeError(f"a client exited with {child.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def stats(port: int) -> dict:
    client = greenstalk.Client(("127.0.0.1", port))
    try:
        return client.stats()
    finally:
        client.close()


def bench(args: argparse.Namespace) -> dict:
    binlog = tempfile.mkdtemp(prefix="testfleet-ref-beanstalkd-")
    port = free_port()
    server = subprocess.Popen(
        [args.beanstalkd, "-l", "127.0.0.1", "-p", str(port), "-b", binlog, "-f", "0"],
        stdout=subprocess.DEVNULL,
    )
    clients = []
    try:
        wait_for(port, server)
        version = str(stats(port).get("version", ""))
        share = [args.jobs // args.producers + (i < args.jobs % args.producers) for i in range(args.producers)]
        consumers = [spawn("consumer", port, 0) for _ in range(args.consumers)]
        producers = [spawn("producer", port, n) for n in share]
        clients = consumers + producers
        for child in clients:
            child.stdin.write("go\n")
            child.stdin.flush()
        produced = [finish(p, args.timeout) for p in producers]
        # Every real job is in; let the consumers stop after them.
        stopper = greenstalk.Client(("127.0.0.1", port))
        for _ in consumers:
            stopper.put(STOP, priority=STOP_PRIORITY)
        stopper.close()
        consumed = [finish(c, args.timeout) for c in consumers]
        left = stats(port)
    finally:
        for child in clients:
            if child.poll() is None:
                child.kill()
                child.wait()
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(binlog, ignore_errors=True)

    deleted = sum(c["deleted"] for c in consumed)
    if deleted != args.jobs or left["current-jobs-ready"] or left["current-jobs-reserved"]:
        raise RuntimeError(
            f"deleted {deleted} of {args.jobs} jobs; beanstalkd still has "
            f"{left['current-jobs-ready']} ready, {left['current-jobs-reserved']} reserved"
        )
    first_put = min(p["first_put"] for p in produced)
    last_delete = max(c["last_delete"] for c in consumed if c["last_delete"] is not None)
    last_put = max(p["last_put"] for p in produced)
    seconds = last_delete - first_put
    return {
        "reference": "beanstalkd",
        "version": version,
        "fsync": "every write (-f 0)",
        "jobs": args.jobs,
        "producers": args.producers,
        "consumers": args.consumers,
        "deleted_per_consumer": [c["deleted"] for c in consumed],
        "put_seconds": round(last_put - first_put, 3),
        "seconds": round(seconds, 3),
        "jobs_per_second": round(args.jobs / seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--beanstalkd", default=shutil.which("beanstalkd") or "/usr/bin/beanstalkd")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a client may take")
    # Internal: how the driver starts its client processes.
    parser.add_argument("--role", choices=["producer", "consumer"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "producer":
        print(json.dumps(producer(args.port, args.count)), flush=True)
    elif args.role == "consumer":
        print(json.dumps(consumer(args.port)), flush=True)
    else:
        if args.jobs < 1 or args.producers < 1 or args.consumers < 1:
            parser.error("--jobs, --producers and --consumers must be at least 1")
        print(json.dumps(bench(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
