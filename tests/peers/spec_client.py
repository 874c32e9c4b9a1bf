#!/usr/bin/env python3
"""Protocol conformance test for a running testfleet server (SPEC §3, seed 000).

It drives the server with an unmodified python-socketio client, the way a third-party agent or
dashboard written from SPEC §3 alone would, and uses only the documented REST endpoints
(`POST /api/v1/jobs`, `GET /api/v1/jobs/{id}`) to submit work and read task state.

    python3 spec_client.py --url http://127.0.0.1:PORT --secret SECRET --mode prod|dev

Each check prints `ok - NAME` or `not ok - NAME: WHY`; the last line is
`spec_client: N passed, M failed`. The exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import secrets
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import requests
import socketio

# Every key of Qt's WorkItem; testfleet may add more, which a Qt agent ignores.
QT_KEYS = (
    "integrationId",
    "integrationURL",
    "integrationTimestamp",
    "integrationData",
    "branch",
    "sha",
)
# Qt's agent parses integrationTimestamp with "%Y-%m-%dT%H:%M:%S.%fZ".
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
QT_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
TERMINAL_STATES = {"passed", "failed", "cancelled"}

# What every job file of this run gives, except the integration id (distinct per job).
JOB_TIMESTAMP = "2023-02-10T13:11:13Z"
JOB_TIMESTAMP_DT = datetime(2023, 2, 10, 13, 11, 13)
JOB_BRANCH = "dev"
JOB_SHA = "69609f0b3575c571fff4564f6f16cbca9c7d81f6"


class CheckFailed(Exception):
    """A check's expectation was not met; the message says why."""


class Peer:
    """A socketio.Client whose received events are kept in an inbox for the checks to await.

    python-socketio calls handlers on its own thread, so the inbox is guarded by a condition.
    """

    def __init__(self) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.inbox: list[tuple[str, tuple[Any, ...]]] = []
        self.cond = threading.Condition()
        self.connect_errors: list[Any] = []
        self.disconnects: list[tuple[Any, ...]] = []

        @self.sio.on("*")
        def _any_event(event: str, *args: Any) -> None:
            with self.cond:
                self.inbox.append((event, args))
                self.cond.notify_all()

        @self.sio.event
        def connect_error(data: Any = None) -> None:
            self.connect_errors.append(data)

        @self.sio.event
        def disconnect(*args: Any) -> None:  # python-socketio >= 5.12 passes the reason
            self.disconnects.append(args)

    def connect(self, url: str, auth: dict[str, Any], transports: list[str] | None) -> None:
        # wait_timeout: the default 1 s is short for a loaded CI machine.
        self.sio.connect(url, auth=auth, transports=transports, wait_timeout=5)

    def emit(self, event: str, *args: Any) -> None:
        # `emit(event)` with no data sends `["event"]`: the body-less fetchWork of the contract.
        self.sio.emit(event, args[0] if len(args) == 1 else (tuple(args) or None))

    def expect(
        self,
        event: str,
        timeout: float,
        pred: Callable[[tuple[Any, ...]], bool] = lambda _args: True,
    ) -> tuple[Any, ...] | None:
        """Remove and return the args of the first `event` matching `pred`, or None on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, (name, args) in enumerate(self.inbox):
                    if name == event and pred(args):
                        del self.inbox[i]
                        return args
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def take_all(self, event: str) -> list[tuple[Any, ...]]:
        """Remove and return every `event` received so far."""
        with self.cond:
            taken = [args for name, args in self.inbox if name == event]
            self.inbox = [(n, a) for n, a in self.inbox if n != event]
            return taken

    def close(self) -> None:
        try:
            self.sio.disconnect()
        except Exception:  # best effort at teardown
            pass


def iso_ms(dt: datetime) -> str:
    """UTC ISO-8601 with milliseconds and `Z`, the format of every timestamp in the contract."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class UpdateClock:
    """Strictly increasing updateTimestamps (at least 1 ms apart) from the wall clock."""

    def __init__(self) -> None:
        self.last: datetime | None = None

    def next(self) -> datetime:
        now = datetime.now(timezone.utc)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the wire has ms only
        if self.last is not None and now <= self.last:
            now = self.last + timedelta(milliseconds=1)
        self.last = now
        return now


def work_item_problems(item: Any, expected: dict[str, Any] | None = None) -> list[str]:
    """Why `item` is not a complete Qt WorkItem (with `expected` values), or [] when it is."""
    if not isinstance(item, dict):
        return [f"payload is {type(item).__name__}, not an object: {item!r}"]
    problems = []
    missing = [k for k in QT_KEYS if k not in item]
    if missing:
        problems.append(f"missing keys {missing} (got {sorted(item)})")
    ts = item.get("integrationTimestamp")
    if "integrationTimestamp" in item:
        if not isinstance(ts, str) or not TS_RE.match(ts):
            problems.append(f"integrationTimestamp {ts!r} is not YYYY-MM-DDTHH:MM:SS.fffZ")
        else:
            try:
                parsed = datetime.strptime(ts, QT_TS_FORMAT)
            except ValueError as exc:
                problems.append(f"integrationTimestamp {ts!r} does not parse: {exc}")
            else:
                if expected and parsed != expected["timestamp"]:
                    problems.append(
                        f"integrationTimestamp {ts!r} is not the job's {expected['timestamp']}"
                    )
    if "integrationData" in item and not isinstance(item["integrationData"], list):
        problems.append(f"integrationData is not a list: {item['integrationData']!r}")
    if expected:
        for key in ("integrationId", "integrationURL", "branch", "sha"):
            if key in item and item[key] != expected[key]:
                problems.append(f"{key} is {item[key]!r}, job gave {expected[key]!r}")
    return problems


def error_text(peer: Peer, exc: BaseException) -> str:
    """Everything the client learned about a refusal: connect_error payloads and the exception.

    python-socketio's ConnectionError text is generic ("One or more namespaces failed to
    connect"); the server's message arrives in the connect_error event as `{message: ...}`.
    """
    parts = [json.dumps(e) if not isinstance(e, str) else e for e in peer.connect_errors]
    text = " ".join(str(a) for a in exc.args)
    if text not in parts:  # an engine.io-level failure is reported both ways
        parts.append(text)
    joined = " | ".join(parts)
    return joined if len(joined) <= 400 else joined[:400] + "…"


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.url = args.url.rstrip("/")
        self.secret = args.secret
        self.mode = args.mode
        self.transports = args.transports.split(",") if args.transports else None
        self.http = requests.Session()
        if args.api_token:
            self.http.headers["Authorization"] = f"Bearer {args.api_token}"
        self.host = f"py-agent-{secrets.token_hex(4)}"
        self.agent: Peer | None = None
        self.clock = UpdateClock()
        self.used_ids: set[str] = set()
        # (job view, work item) of the long-poll job, driven through its statuses next.
        self.job1: tuple[dict[str, Any], dict[str, Any]] | None = None
        self.passed = 0
        self.failed = 0

    # -- reporting ---------------------------------------------------------------------------

    def check(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except CheckFailed as exc:
            self.failed += 1
            print(f"not ok - {name}: {exc}", flush=True)
        except Exception as exc:  # a crash in a check is a failure, not an abort
            self.failed += 1
            print(f"not ok - {name}: {type(exc).__name__}: {exc}", flush=True)
        else:
            self.passed += 1
            print(f"ok - {name}", flush=True)

    # -- REST --------------------------------------------------------------------------------

    def new_integration_id(self) -> str:
        while True:
            iid = str(random.randint(100_000_000, 999_999_999))
            if iid not in self.used_ids:
                self.used_ids.add(iid)
                return iid

    def submit_job(self, label: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Submit a one-task job for this run's host; return (job view, expected WorkItem values)."""
        iid = self.new_integration_id()
        url = f"https://codereview.example/{iid}"
        # json.dumps yields valid TOML basic strings for these ASCII values.
        body = "\n".join(
            [
                f"name = {json.dumps(f'py-spec-{label}-{iid}')}",
                "[integration]",
                f"id = {json.dumps(iid)}",
                f"timestamp = {json.dumps(JOB_TIMESTAMP)}",
                f"branch = {json.dumps(JOB_BRANCH)}",
                f"sha = {json.dumps(JOB_SHA)}",
                f"url = {json.dumps(url)}",
                "[[task]]",
                'name = "bench"',
                f"requires = {{ hostname = {json.dumps(self.host)} }}",
                'steps = [{ stage = "test", run = "true", timeout = "1m" }]',
                "",
            ]
        )
        resp = self.http.post(
            f"{self.url}/api/v1/jobs",
            data=body.encode(),
            headers={"Content-Type": "application/toml"},
            timeout=5,
        )
        if resp.status_code != 201:
            raise CheckFailed(
                f"POST /api/v1/jobs answered {resp.status_code}, not 201: {resp.text[:300]}"
            )
        view = resp.json()
        if not isinstance(view.get("id"), int) or not view.get("tasks"):
            raise CheckFailed(f"POST /api/v1/jobs returned an unexpected view: {view}")
        expected = {
            "integrationId": iid,
            "integrationURL": url,
            "timestamp": JOB_TIMESTAMP_DT,
            "branch": JOB_BRANCH,
            "sha": JOB_SHA,
        }
        return view, expected

    def get_job(self, job_id: int) -> dict[str, Any]:
        resp = self.http.get(f"{self.url}/api/v1/jobs/{job_id}", timeout=5)
        if resp.status_code != 200:
            raise CheckFailed(f"GET /api/v1/jobs/{job_id} answered {resp.status_code}")
        return resp.json()

    def wait_terminal(self, job_id: int, timeout: float = 5.0) -> dict[str, Any]:
        """Poll the job until its (only) task is in a terminal state; return that task view."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.get_job(job_id)["tasks"][0]
            if task.get("state") in TERMINAL_STATES:
                return task
            if time.monotonic() > deadline:
                raise CheckFailed(
                    f"task not terminal after {timeout:.0f} s: {json.dumps(task)}"
                )
            time.sleep(0.1)

    # -- socket.io helpers -------------------------------------------------------------------

    def expect_refused(self, auth: dict[str, Any], word: str) -> None:
        peer = Peer()
        try:
            peer.connect(self.url, auth, self.transports)
        except socketio.exceptions.ConnectionError as exc:
            text = error_text(peer, exc)
            if word.lower() not in text.lower():
                raise CheckFailed(f"refused, but the message does not mention {word!r}: {text}")
            return
        finally:
            peer.close()
        raise CheckFailed(f"connection with auth {auth} was accepted")

    def need_agent(self) -> Peer:
        if self.agent is None or not self.agent.sio.connected:
            raise CheckFailed("no connected agent (an earlier check failed)")
        return self.agent

    def status_update(self, item: dict[str, Any], status: str, detail: str,
                      stamp: datetime) -> None:
        """Send a status update as a Qt agent does: the WorkItem's own keys plus the status.

        Only Qt's keys are echoed (not testfleet's extras): the coordinator must match the update
        by hostname and integrationId alone.
        """
        payload = {k: item[k] for k in QT_KEYS}
        payload.update(status=status, detailMessage=detail, updateTimestamp=iso_ms(stamp))
        self.need_agent().emit("statusUpdate", payload)
        # Real agents send updates seconds apart; a short pause keeps this test from depending
        # on the server handling a burst of events from one socket strictly in order.
        time.sleep(0.1)

    def fetch_item(self, timeout: float) -> dict[str, Any]:
        args = self.need_agent().expect("sendWork", timeout)
        if args is None:
            raise CheckFailed(f"no sendWork within {timeout} s")
        if len(args) != 1:
            raise CheckFailed(f"sendWork carried {len(args)} arguments: {args!r}")
        return args[0]

    # -- the checks --------------------------------------------------------------------------

    def check_wrong_secret(self) -> None:
        self.expect_refused(
            {"clientType": "agent", "hostname": self.host, "secret": self.secret + "-wrong"},
            "secret",
        )

    def check_missing_hostname(self) -> None:
        self.expect_refused({"clientType": "agent", "secret": self.secret}, "hostname")

    def check_bad_client_type(self) -> None:
        self.expect_refused(
            {"clientType": "toaster", "hostname": self.host, "secret": self.secret},
            "clientType",
        )

    def check_idle_fetch(self) -> None:
        peer = Peer()
        try:
            peer.connect(
                self.url,
                {"clientType": "agent", "hostname": self.host, "secret": self.secret},
                self.transports,
            )
        except socketio.exceptions.ConnectionError as exc:
            raise CheckFailed(f"good agent refused: {error_text(peer, exc)}") from exc
        self.agent = peer
        peer.emit("statusUpdate", {"status": "idle"})
        peer.emit("fetchWork")
        args = peer.expect("sendWork", 1.5)
        if args is not None:
            raise CheckFailed(f"sendWork with no work queued (must send nothing): {args!r}")

    def check_long_poll(self) -> None:
        self.need_agent()
        view, expected = self.submit_job("longpoll")
        # No new fetchWork: the one left open by the previous check must be answered now.
        item = self.fetch_item(2.0)
        problems = work_item_problems(item, expected)
        if problems:
            raise CheckFailed("; ".join(problems))
        self.job1 = (view, item)

    def check_status_sequence(self) -> None:
        self.need_agent()
        if self.job1 is None:
            raise CheckFailed("no work item (the long-poll check failed)")
        view, item = self.job1
        for status in ("new", "git", "configure", "build", "test"):
            self.status_update(item, status, f"py-spec {status}", self.clock.next())
        # A stale update (older than the last one held) must be ignored.
        assert self.clock.last is not None
        self.status_update(item, "git", "py-spec stale git",
                           self.clock.last - timedelta(milliseconds=1))
        time.sleep(0.3)
        task = self.get_job(view["id"])["tasks"][0]
        if task.get("stage") == "git" or task.get("state") in TERMINAL_STATES:
            raise CheckFailed(
                f"after a stale 'git' update the task shows stage git or ended early: "
                f"{json.dumps(task)}"
            )
        for status in ("results", "done"):
            self.status_update(item, status, f"py-spec {status}", self.clock.next())
        task = self.wait_terminal(view["id"])
        if task.get("state") != "passed":
            raise CheckFailed(f"task ended {task.get('state')!r}, not 'passed': {json.dumps(task)}")
        if task.get("agent") != self.host:
            print(f"# note: task agent is {task.get('agent')!r}, expected {self.host!r}")

    def check_error_path(self) -> None:
        agent = self.need_agent()
        view, expected = self.submit_job("error")
        agent.emit("fetchWork")
        item = self.fetch_item(2.0)
        problems = work_item_problems(item, expected)
        if problems:
            raise CheckFailed("sendWork: " + "; ".join(problems))
        message = f"py-spec checkout failed {secrets.token_hex(3)}"
        self.status_update(item, "new", "py-spec new", self.clock.next())
        self.status_update(item, "git", "py-spec git", self.clock.next())
        self.status_update(item, "error", message, self.clock.next())
        task = self.wait_terminal(view["id"])
        if task.get("state") != "failed":
            raise CheckFailed(f"task ended {task.get('state')!r}, not 'failed': {json.dumps(task)}")
        if message not in (task.get("detail_message") or ""):
            raise CheckFailed(
                f"detail_message {task.get('detail_message')!r} does not contain {message!r}"
            )

    def check_browser(self) -> None:
        self.need_agent()
        browser = Peer()
        try:
            browser.connect(self.url, {"clientType": "browser"}, self.transports)
        except socketio.exceptions.ConnectionError as exc:
            raise CheckFailed(f"browser refused: {error_text(browser, exc)}") from exc
        try:
            browser.emit("getAgents")

            def has_host(args: tuple[Any, ...]) -> bool:
                return bool(args) and isinstance(args[0], list) and any(
                    isinstance(a, dict) and a.get("agent") == self.host for a in args[0]
                )

            # The server may also push agentData on its own; wait for one that lists our host.
            args = browser.expect("agentData", 3.0, has_host)
            if args is None:
                seen = browser.take_all("agentData")
                raise CheckFailed(
                    f"no agentData listing {self.host!r} within 3 s (saw {seen[-1:]!r})"
                )
            entry = next(a for a in args[0] if isinstance(a, dict) and a.get("agent") == self.host)
            missing = [k for k in ("currentJob", "online", "lastConnected") if k not in entry]
            if missing:
                raise CheckFailed(f"agentData entry lacks {missing}: {entry}")
            if entry["online"] is not True:
                raise CheckFailed(f"connected agent is not online in agentData: {entry}")
            browser.emit("getWorkLog")
            if browser.expect("workLogData", 3.0) is None:
                raise CheckFailed("no workLogData within 3 s of getWorkLog")
        finally:
            browser.close()

    def check_dev_events(self) -> None:
        agent = self.need_agent()
        agent.take_all("sendWork")
        agent.take_all("error")
        if self.mode == "prod":
            for event in ("queryWork", "mockItem"):
                agent.emit(event)
                args = agent.expect("error", 2.0)
                if args is None:
                    raise CheckFailed(f"no 'error' event within 2 s of {event} in prod mode")
                if "dev" not in json.dumps(args).lower():
                    raise CheckFailed(f"'error' for {event} does not mention dev mode: {args!r}")
            time.sleep(0.5)
            stray = agent.take_all("sendWork")
            if stray:
                raise CheckFailed(f"sendWork in prod mode after queryWork/mockItem: {stray!r}")
            return

        # dev mode
        agent.emit("queryWork")
        empty = self.fetch_item(2.0)
        if empty is not None:
            raise CheckFailed(f"queryWork on an empty queue sent {empty!r}, not null")
        agent.emit("mockItem")
        time.sleep(0.3)  # mockItem has no reply; give the server a moment to queue the item
        stray = agent.take_all("sendWork")
        if stray:
            raise CheckFailed(f"mockItem answered with sendWork without a fetch: {stray!r}")
        agent.emit("queryWork")
        first = self.fetch_item(2.0)
        problems = work_item_problems(first)
        if problems:
            raise CheckFailed("mock item from queryWork: " + "; ".join(problems))
        agent.emit("queryWork")
        second = self.fetch_item(2.0)
        if not isinstance(second, dict) or second.get("integrationId") != first["integrationId"]:
            raise CheckFailed(f"second queryWork gave {second!r}, not the same item {first!r}")
        agent.emit("fetchWork")
        fetched = self.fetch_item(2.0)
        if not isinstance(fetched, dict) or fetched.get("integrationId") != first["integrationId"]:
            raise CheckFailed(f"fetchWork gave {fetched!r}, not the queued mock item {first!r}")
        agent.emit("queryWork")
        after = self.fetch_item(2.0)
        if after is not None:
            raise CheckFailed(f"queryWork after fetchWork sent {after!r}, not null")

    def check_disconnect(self) -> None:
        agent = self.need_agent()
        agent.sio.disconnect()
        deadline = time.monotonic() + 3
        while agent.sio.connected or not agent.disconnects:
            if time.monotonic() > deadline:
                raise CheckFailed("client still connected 3 s after disconnect()")
            time.sleep(0.05)

    def run(self) -> int:
        print(f"# spec_client: server {self.url}, mode {self.mode}, hostname {self.host}")
        self.check("wrong secret is refused with a message about the secret",
                   self.check_wrong_secret)
        self.check("missing hostname is refused with a message about the hostname",
                   self.check_missing_hostname)
        self.check("unsupported clientType is refused with a message about clientType",
                   self.check_bad_client_type)
        self.check("agent connects; fetchWork with no work gets no sendWork within 1.5 s",
                   self.check_idle_fetch)
        self.check("open fetchWork is answered when a job arrives (long poll), complete WorkItem",
                   self.check_long_poll)
        self.check("statuses new..done pass the task; a stale update is ignored",
                   self.check_status_sequence)
        self.check("status error fails the task with its detailMessage", self.check_error_path)
        self.check("browser getAgents -> agentData, getWorkLog -> workLogData",
                   self.check_browser)
        self.check(f"dev-mode events queryWork/mockItem ({self.mode})", self.check_dev_events)
        self.check("agent disconnects cleanly", self.check_disconnect)
        if self.agent is not None:
            self.agent.close()
        print(f"spec_client: {self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--secret", required=True, help="the server's agent secret")
    parser.add_argument("--mode", choices=("prod", "dev"), required=True,
                        help="whether the server runs with --dev")
    parser.add_argument("--transports", default="",
                        help="comma-separated engine.io transports (default: the client's own: "
                             "polling, then upgrade to websocket)")
    parser.add_argument("--api-token", default="",
                        help="bearer token for REST job submission, if the server requires one")
    return Run(parser.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
