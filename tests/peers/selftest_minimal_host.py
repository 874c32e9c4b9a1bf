#!/usr/bin/env python3
"""Self-test of minimal_host.py with a plain python-socketio client.

    python3 selftest_minimal_host.py

Starts the host on a free port, then checks: the three refusals, fetchWork pops queued items
unchanged (extra keys too), an empty queue gets no reply even after an /enqueue (no long poll)
until the next fetchWork, requestStatus, prod-mode refusal of queryWork, the record (file and
GET /record, with the disconnect reason), and a clean exit on SIGTERM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import requests
import socketio

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "s3cret"
ITEM1 = {
    "integrationId": "189470895",
    "integrationURL": None,
    "integrationTimestamp": "2023-02-10T13:11:13.000Z",
    "integrationData": [{"subject": "s", "sha": "a" * 40, "url": "u"}],
    "branch": "dev",
    "sha": "69609f0b3575c571fff4564f6f16cbca9c7d81f6",
    "testfleetTask": 7,  # extra keys must pass through unchanged
}
ITEM2 = dict(ITEM1, integrationId="189470896", testfleetTask=8)
ITEM3 = dict(ITEM1, integrationId="189470897", testfleetTask=9)


class Agent:
    def __init__(self) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.errors: list[Any] = []
        self.cond = threading.Condition()

        @self.sio.on("*")
        def _any(event: str, *args: Any) -> None:
            with self.cond:
                self.events.append((event, args))
                self.cond.notify_all()

        @self.sio.event
        def connect_error(data: Any = None) -> None:
            self.errors.append(data)

    def wait(self, event: str, timeout: float) -> tuple[Any, ...] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, (name, args) in enumerate(self.events):
                    if name == event:
                        del self.events[i]
                        return args
                if time.monotonic() >= deadline:
                    return None
                self.cond.wait(deadline - time.monotonic())


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="minimal-host-")
    work = os.path.join(tmp, "work.json")
    record = os.path.join(tmp, "record.jsonl")
    with open(work, "w") as f:
        json.dump({"h1": [ITEM1, ITEM2]}, f)
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "minimal_host.py"), "--port", "0",
         "--secret", SECRET, "--work", work, "--record", record],
        stdout=subprocess.PIPE, text=True,
    )
    failures = []

    def check(cond: bool, what: str) -> None:
        print(("ok - " if cond else "not ok - ") + what, flush=True)
        if not cond:
            failures.append(what)

    try:
        line = proc.stdout.readline().strip()
        check(line.startswith("LISTENING ") and line.split()[1].isdigit(), f"banner {line!r}")
        url = f"http://127.0.0.1:{line.split()[1]}"

        for auth, word in (
            ({"clientType": "agent", "hostname": "h1", "secret": "nope"}, "wrong secret"),
            ({"clientType": "agent", "secret": SECRET}, "missing hostname"),
            ({"clientType": "toaster", "hostname": "h1", "secret": SECRET}, "clientType"),
        ):
            a = Agent()
            try:
                a.sio.connect(url, auth=auth, wait_timeout=5)
                check(False, f"refused {auth}")
                a.sio.disconnect()
            except socketio.exceptions.ConnectionError:
                check(word in json.dumps(a.errors), f"refused with {word!r}: {a.errors}")

        a = Agent()
        a.sio.connect(url, auth={"clientType": "agent", "hostname": "h1", "secret": SECRET},
                      wait_timeout=5)
        a.sio.emit("statusUpdate", {"status": "idle"})
        a.sio.emit("fetchWork")
        check(a.wait("sendWork", 2) == (ITEM1,), "first fetchWork pops item 1 unchanged")
        a.sio.emit("fetchWork")
        check(a.wait("sendWork", 2) == (ITEM2,), "second fetchWork pops item 2")
        a.sio.emit("fetchWork")
        check(a.wait("sendWork", 1.0) is None, "empty queue: no sendWork")
        r = requests.post(f"{url}/enqueue", json={"hostname": "h1", "item": ITEM3}, timeout=5)
        check(r.status_code == 200, f"/enqueue {r.status_code}")
        check(a.wait("sendWork", 1.0) is None, "no long poll: enqueue alone sends nothing")
        a.sio.emit("fetchWork")
        check(a.wait("sendWork", 2) == (ITEM3,), "next fetchWork gets the enqueued item")
        requests.post(f"{url}/request-status", json={"hostname": "h1"}, timeout=5)
        check(a.wait("requestStatus", 2) is not None, "requestStatus reaches the agent")
        a.sio.emit("queryWork")
        err = a.wait("error", 2)
        check(err is not None and "dev" in json.dumps(err), f"queryWork refused: {err}")
        a.sio.emit("statusUpdate", dict(ITEM3, status="done", detailMessage="ok",
                                        updateTimestamp="2024-01-01T00:00:00.000Z"))
        # python-socketio's disconnect() can drop packets still queued for sending: let the
        # statusUpdate leave first.
        time.sleep(0.3)
        a.sio.disconnect()
        time.sleep(0.5)

        recs = requests.get(f"{url}/record", timeout=5).json()
        events = [(r["event"], r["hostname"]) for r in recs]
        check(events.count(("fetchWork", "h1")) == 4, f"4 fetchWork recorded: {events}")
        done = [r for r in recs if r["event"] == "statusUpdate" and r["data"].get("status") == "done"]
        check(len(done) == 1 and done[0]["data"]["integrationId"] == ITEM3["integrationId"],
              "statusUpdate payload recorded")
        check(events.count(("connect_refused", "h1")) == 2, "refusals recorded")
        disc = [r for r in recs if r["event"] == "disconnect"]
        check(len(disc) == 1 and disc[0]["data"]["reason"], f"disconnect reason: {disc}")
        with open(record) as f:
            lines = [json.loads(x) for x in f]
        check(lines == recs, "record file equals GET /record")
        check(all(set(r) == {"event", "hostname", "data", "t"} for r in lines), "record shape")
        check(not any(SECRET in json.dumps(r) for r in lines), "secret never recorded")
    finally:
        proc.terminate()
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        check(code == 0, f"clean exit on SIGTERM (code {code})")
    print(f"selftest_minimal_host: {'FAILED ' + str(failures) if failures else 'all ok'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
