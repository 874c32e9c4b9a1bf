#!/usr/bin/env python3
"""A minimal socket.io HOST that follows SPEC §3 (seed 000) to the letter, and nothing more.

It exists to test the testfleet agent against a host that is not testfleet: no long poll, no
heartbeats, no extra events. When an agent sends `fetchWork` and its queue is empty, this host
sends nothing, ever (the agent must poll again on its own, every 30 s while idle).

    python3 minimal_host.py --port 0 --secret SECRET --work WORK.json --record RECORD.jsonl [--dev]

- Prints `LISTENING <port>` (the bound port) on stdout once it accepts connections.
- WORK.json: `{"<hostname>": [<work item>, ...]}`; items are passed through unchanged.
- RECORD.jsonl: one line per event received from an agent, plus `connect`, `connect_refused`
  and `disconnect` (with the reason): `{"event", "hostname", "data", "t"}`.
- HTTP on the same port: `POST /enqueue` `{"hostname", "item"}` appends to that host's queue;
  `POST /request-status` `{"hostname"}` emits `requestStatus` to that host's sockets;
  `GET /record` returns the records as a JSON list.
- `--dev` enables the dev-only `queryWork` and `mockItem`; without it they are refused with an
  `error` event, as SPEC §3 says.
- SIGTERM/SIGINT stop it cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import sys
import time
from collections import defaultdict, deque
from datetime import datetime, timezone
from typing import Any, TextIO

import socketio
from aiohttp import web


class Host:
    def __init__(self, secret: str, work: dict[str, list[Any]], record: TextIO, dev: bool) -> None:
        self.secret = secret
        self.dev = dev
        self.queues: defaultdict[str, deque[Any]] = defaultdict(deque)
        for hostname, items in work.items():
            self.queues[hostname].extend(items)
        self.record_file = record
        self.records: list[dict[str, Any]] = []
        self.sid_host: dict[str, str] = {}

        self.sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
        self.sio.on("connect", self.on_connect)
        self.sio.on("disconnect", self.on_disconnect)
        self.sio.on("*", self.on_event)

        self.app = web.Application()
        self.sio.attach(self.app)  # serves /socket.io/
        self.app.router.add_post("/enqueue", self.http_enqueue)
        self.app.router.add_post("/request-status", self.http_request_status)
        self.app.router.add_get("/record", self.http_record)

    def record(self, event: str, hostname: str | None, data: Any) -> None:
        entry = {"event": event, "hostname": hostname, "data": data, "t": time.time()}
        self.records.append(entry)
        self.record_file.write(json.dumps(entry) + "\n")
        self.record_file.flush()  # a test may read the file while the host runs

    # -- socket.io ---------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        auth = auth if isinstance(auth, dict) else {}
        hostname = auth.get("hostname")
        # Never write the secret to the record.
        shown = {k: v for k, v in auth.items() if k != "secret"}
        if auth.get("clientType") != "agent":
            reason = "unsupported clientType"
        elif not isinstance(hostname, str) or not hostname:
            reason = "missing hostname"
        elif auth.get("secret") != self.secret:
            reason = "wrong secret"
        else:
            self.sid_host[sid] = hostname
            self.record("connect", hostname, shown)
            return
        self.record("connect_refused", hostname, {"reason": reason, "auth": shown})
        # Reaches the client as a connect_error whose message is `reason`.
        raise socketio.exceptions.ConnectionRefusedError(reason)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        # python-socketio >= 5.12 passes the reason ("client disconnect", "transport close", …).
        hostname = self.sid_host.pop(sid, None)
        self.record("disconnect", hostname, {"reason": reason})

    async def on_event(self, event: str, sid: str, *args: Any) -> None:
        hostname = self.sid_host.get(sid)
        data = args[0] if len(args) == 1 else (list(args) if args else None)
        self.record(event, hostname, data)
        if hostname is None:
            return
        if event == "fetchWork":
            queue = self.queues[hostname]
            if queue:
                await self.sio.emit("sendWork", queue.popleft(), to=sid)
            # Empty queue: send nothing, and do not remember the request (no long poll).
        elif event in ("queryWork", "mockItem"):
            if not self.dev:
                await self.sio.emit(
                    "error", {"message": f"{event} is only available in dev mode"}, to=sid
                )
            elif event == "queryWork":
                queue = self.queues[hostname]
                # A bare None would be dropped by python-socketio's emit; (None,) sends null.
                await self.sio.emit("sendWork", (queue[0] if queue else None,), to=sid)
            elif not self.queues[hostname]:
                self.queues[hostname].append(mock_item())

    # -- HTTP --------------------------------------------------------------------------------

    async def http_enqueue(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            hostname, item = body["hostname"], body["item"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'expected {"hostname": ..., "item": {...}}'},
                                     status=400)
        self.queues[hostname].append(item)
        return web.json_response({"hostname": hostname, "queued": len(self.queues[hostname])})

    async def http_request_status(self, request: web.Request) -> web.Response:
        try:
            hostname = (await request.json())["hostname"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'expected {"hostname": ...}'}, status=400)
        sids = [sid for sid, h in self.sid_host.items() if h == hostname]
        for sid in sids:
            await self.sio.emit("requestStatus", to=sid)
        return web.json_response({"hostname": hostname, "sockets": len(sids)})

    async def http_record(self, _request: web.Request) -> web.Response:
        return web.json_response(self.records)


def mock_item() -> dict[str, Any]:
    """A valid Qt WorkItem, as the dev-mode mockItem of seed 000 asks for."""
    now = datetime.now(timezone.utc)
    iid = str(random.randint(100_000_000, 999_999_999))
    return {
        "integrationId": iid,
        "integrationURL": f"https://codereview.example/{iid}",
        "integrationTimestamp": now.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{now.microsecond // 1000:03d}Z",
        "integrationData": [],
        "branch": "dev",
        "sha": "%040x" % random.getrandbits(160),
    }


async def serve(args: argparse.Namespace) -> None:
    with open(args.work, encoding="utf-8") as f:
        work = json.load(f)
    if not isinstance(work, dict) or not all(isinstance(v, list) for v in work.values()):
        sys.exit(f"{args.work}: expected {{\"<hostname>\": [<work item>, ...]}}")
    with open(args.record, "a", encoding="utf-8") as record:
        host = Host(args.secret, work, record, args.dev)
        runner = web.AppRunner(host.app, handle_signals=False)
        await runner.setup()
        # Bind the socket ourselves so that --port 0 can report the real port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        site = web.SockSite(runner, sock)
        await site.start()
        print(f"LISTENING {sock.getsockname()[1]}", flush=True)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    parser.add_argument("--secret", required=True, help="the agents' shared secret")
    parser.add_argument("--work", required=True, help='JSON file {"<hostname>": [items]}')
    parser.add_argument("--record", required=True, help="JSON-lines file to append events to")
    parser.add_argument("--dev", action="store_true", help="enable queryWork and mockItem")
    asyncio.run(serve(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
