"""Slow clients (issue 11): the shipped Apache config and the shipped gunicorn command survive 20
connections trickling a request body, and still answer everyone else at once.

Both servers run for real (tests/e2e.py) in front of the emulator. Twenty tricklers send headers
announcing a body and then one byte every half second, twenty more send their headers that way;
meanwhile a status request and a 1C receipt must be answered within a few seconds, and the
tricklers must be cut off by the server's own timeouts (Apache's RequestReadTimeout for both
kinds, kktapp.asgi's body timeout for bodies), not by us.
"""

from __future__ import annotations

import http.client
import json
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import e2e
import pytest

from kktapp.atol.emulator import Emulator

REPO = Path(__file__).resolve().parent.parent
TRICKLERS = 20
ONEC_HEADERS = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"}


def receipt(number: str) -> bytes:
    return json.dumps({"DocNumber": number, "DocDate": "06.10.2017", "DocSumm": 10,
                       "Goods": {"Position_1": {"Name": "Чай", "Price": 10, "Quantity": 1, "Tax": 22,
                                                "PositionSumm": 10}}}, ensure_ascii=False).encode()


class Trickler(threading.Thread):
    """One connection that sends its request a byte at a time: the body (announced by its
    headers) or, with ``headers=True``, the headers themselves (slowloris)."""

    def __init__(self, host: str, port: int, stop: threading.Event, headers: bool = False) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.stop, self.headers = host, port, stop, headers
        self.cut_after: float | None = None
        self.started_at = time.monotonic()

    def run(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=5)
        except OSError:
            return
        try:
            if self.headers:
                sock.sendall(b"POST /kkt HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            else:
                sock.sendall(b"POST /kkt HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 100000\r\n\r\n{")
            while not self.stop.is_set():
                time.sleep(0.5)
                sock.sendall(b"a" if self.headers else b" ")
                sock.setblocking(False)
                try:
                    if sock.recv(4096) == b"":
                        raise ConnectionResetError
                    raise ConnectionResetError  # an answer (408) also ends it
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
        except OSError:
            self.cut_after = time.monotonic() - self.started_at
        finally:
            sock.close()


def survive_tricklers(srv: e2e.ServerProcess, emu: Emulator, cut_within: float, *,
                      slow_headers_cut: bool = True) -> None:
    """20 body tricklers and 20 header tricklers; the body ones (and, when the server bounds
    header time, the header ones) must be cut off by the server."""
    host, port = srv.url.split("//", 1)[1].split(":")
    stop = threading.Event()
    tricklers = [Trickler(host, int(port), stop) for _ in range(TRICKLERS)]
    header_tricklers = [Trickler(host, int(port), stop, headers=True) for _ in range(TRICKLERS)]
    if slow_headers_cut:
        tricklers += header_tricklers
    for t in {*tricklers, *header_tricklers}:
        t.start()
    try:
        time.sleep(2)  # every trickler is connected and has started its body
        began = time.monotonic()
        status, _, body = srv.get("/kkt", headers={"Accept": "application/json"})
        assert status == 200, body[:300]
        status, _, body = srv.post("/kkt", receipt("МЕДЛЕННО-1"), headers=ONEC_HEADERS)
        assert status == 200 and json.loads(body)["result_code"] == 0, body[:300]
        assert time.monotonic() - began < 10, "the service answered too late behind the tricklers"
        deadline = time.monotonic() + cut_within
        while time.monotonic() < deadline and any(t.cut_after is None for t in tricklers):
            time.sleep(0.5)
        cut = [t.cut_after for t in tricklers]
        assert all(c is not None for c in cut), f"server did not cut slow clients off: {cut}"
    finally:
        stop.set()
        for t in {*tricklers, *header_tricklers}:
            t.join(5)
    assert len([d for d in emu.documents() if d["type"] == "receipt"]) == 1


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    emulator = Emulator(state_path=tmp_path / "emulator-state.json")
    emulator.start("127.0.0.1", 0)
    try:
        yield emulator
    finally:
        emulator.stop()


def settings(emu: Emulator) -> dict[str, Any]:
    return {"DEVICE_URL": emu.url, "AUTH_REQUIRED": True, "ONEC_ALLOWED_ADDRESSES": ["127.0.0.1"], "USERS": {},
            "KKT_WAIT_TIMEOUT": 30}


def raw_status(srv: e2e.ServerProcess, request: bytes) -> int:
    """Send raw bytes, return the status of the answer (0 when the server just closed)."""
    host, port = srv.url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass
        head = sock.recv(64)
    return int(head.split()[1]) if head.startswith(b"HTTP/") else 0


def oversized_post(srv: e2e.ServerProcess) -> int:
    """POST a body one byte over the 2 MB limit as HTTP clients do (all of it, then read the
    answer); the status, or 0 when the connection was reset before an answer was read."""
    host, port = srv.url.split("//", 1)[1].split(":")
    body = b" " * (2 * 1024 * 1024 + 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/kkt", body=body, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        return answer.status
    except OSError:
        return 0
    finally:
        conn.close()


def test_apache_survives_trickling_bodies(emu: Emulator) -> None:
    with e2e.start_apache(settings(emu), vhost="kkt.conf") as srv:
        # LimitRequestBody: a declared body over 2 MB is refused before anything is read.
        assert raw_status(srv, b"POST /kkt HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n{") == 413
        # RequestReadTimeout body=10-30: a body under 1000 B/s is cut after about 10 s.
        survive_tricklers(srv, emu, cut_within=40)


def unit_file_command() -> tuple[str, list[str], dict[str, str]]:
    """The app, flags (minus --bind) and environment of deploy/kkt-gunicorn.service's ExecStart."""
    lines = (REPO / "deploy" / "kkt-gunicorn.service").read_text(encoding="utf-8").splitlines()
    env = dict(line.split("=", 2)[1:] for line in lines if line.startswith("Environment="))
    start = next(i for i, line in enumerate(lines) if line.startswith("ExecStart="))
    command = ""
    for line in lines[start:]:
        command += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            break
    args = shlex.split(command.removeprefix("ExecStart="))
    app_spec, flags = args[1], args[2:]
    i = flags.index("--bind")
    del flags[i:i + 2]
    return app_spec, flags, env


def test_gunicorn_deployment_survives_trickling_bodies(emu: Emulator, tmp_path: Path) -> None:
    app_spec, flags, env = unit_file_command()
    assert "asgi" in flags, "the unit file must use a worker that reads bodies without a thread"
    site = e2e.write_settings(tmp_path / "site.py", JOURNAL_PATH=str(tmp_path / "journal.sqlite3"),
                              LOG_FILE=str(tmp_path / "kkt.log"), **settings(emu))
    # Fewer threads than tricklers, and a short body timeout so the test does not wait 30 s.
    env.update(KKT_THREADS="4", KKT_BODY_TIMEOUT="6")
    env.pop("KKT_SETTINGS", None)
    with e2e.start_gunicorn(site, workers=2, extra_args=flags, app_spec=app_spec, env=env) as srv:
        # The unit file's request-line and header limits.
        assert 400 <= raw_status(srv, b"GET /kkt?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n") < 500
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(60))
        assert 400 <= raw_status(srv, b"GET /kkt HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n") < 500
        status = raw_status(srv, b"POST /kkt HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n{")
        assert status == 413
        # A client that sends a whole oversized body before reading gets the 413, not a reset
        # connection (under load, 6 of 40 were reset when the body was left unread).
        assert [oversized_post(srv) for _ in range(20)] == [413] * 20
        # gunicorn has no time limit for headers: a slow header costs it a connection, not a
        # thread, so the service keeps answering; only the bodies are cut (KKT_BODY_TIMEOUT).
        survive_tricklers(srv, emu, cut_within=20, slow_headers_cut=False)
