"""kktapp.asgi's wrapper driven by hand, as gunicorn's asgi worker drives it: lifespan and one request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from flask import Flask

from kktapp import asgi
from kktapp.asgi import BufferedWSGI


def _plain_app() -> Flask:
    app = Flask(__name__)

    @app.post("/echo")
    def echo() -> str:
        from flask import request

        return request.get_data(as_text=True).upper()

    return app


def _lifespan(wrapper: BufferedWSGI) -> list[str]:
    """Startup then shutdown through the wrapper; the messages it sent back."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    asyncio.run(asyncio.wait_for(wrapper({"type": "lifespan"}, receive, send), timeout=10))
    return sent


def test_shutdown_stops_the_device_owners() -> None:
    stopped: list[bool] = []
    app = _plain_app()
    app.extensions["kkt"] = type("Service", (), {"stop": lambda self: stopped.append(True)})()
    assert _lifespan(BufferedWSGI(app, threads=1)) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert stopped == [True]


def test_an_app_without_the_service_shuts_down_too() -> None:
    # The benches' floor app runs behind the same wrapper and owns no devices.
    assert _lifespan(BufferedWSGI(_plain_app(), threads=1)) == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


def test_a_request_runs_with_its_whole_body() -> None:
    chunks = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"c", "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "headers": [(b"content-length", b"3")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(asyncio.wait_for(BufferedWSGI(_plain_app(), threads=1)(scope, receive, send), timeout=10))
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b"ABC"


def _drive(wrapper: BufferedWSGI, declared: int, chunks: list[bytes], *, stall: bool = False,
           headers: tuple[tuple[bytes, bytes], ...] = ()) -> tuple[list, int]:
    """One POST /echo through ``wrapper``: the messages it sent and how many body chunks it read.
    ``stall``: after the chunks the client sends nothing more (the body is never finished)."""
    incoming = [{"type": "http.request", "body": c, "more_body": stall or i < len(chunks) - 1}
                for i, c in enumerate(chunks)]
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not incoming:
            await asyncio.sleep(3600)  # a client that stopped sending
        read += 1
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    length = [(b"content-length", str(declared).encode())] if declared else []
    scope = {"type": "http", "method": "POST", "path": "/echo", "headers": [*length, *headers],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    asyncio.run(asyncio.wait_for(wrapper(scope, receive, send), timeout=10))
    return sent, read


def _limited_app(limit: int) -> Flask:
    app = _plain_app()
    app.config["MAX_CONTENT_LENGTH"] = limit
    return app


def test_an_oversized_body_is_read_to_its_end_before_the_413() -> None:
    """A client sends all of its body before it reads the answer; closing the connection on
    unread bytes resets it, and the 413 never arrives. So the rest is read and thrown away."""
    chunks = [b"x" * 40] * 5
    for declared in (200, 0):  # declared over the limit, or sent without a length and found over it
        sent, read = _drive(BufferedWSGI(_limited_app(100), threads=1), declared, chunks)
        assert sent[0]["status"] == 413 and read == len(chunks)


def test_a_refused_body_is_not_waited_for_past_the_body_timeout_nor_read_past_the_drain_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The client stops sending: the 413 goes out after the body timeout (not a 408).
    sent, read = _drive(BufferedWSGI(_limited_app(100), threads=1, body_timeout=0.2), 200, [b"x" * 40], stall=True)
    assert sent[0]["status"] == 413 and read == 1
    # A declared length past DRAIN_LIMIT is answered without reading anything.
    monkeypatch.setattr(asgi, "DRAIN_LIMIT", 150)
    sent, read = _drive(BufferedWSGI(_limited_app(100), threads=1), 200, [b"x" * 40] * 5)
    assert sent[0]["status"] == 413 and read == 0
    # One sent without a length stops being read once past it.
    sent, read = _drive(BufferedWSGI(_limited_app(100), threads=1), 0, [b"x" * 40] * 8)
    assert sent[0]["status"] == 413 and read == 4


def test_an_oversized_body_held_back_for_100_continue_is_not_asked_for() -> None:
    """A client that waits for "100 Continue" before sending the body (curl with a large one)
    gets the 413 at once: asking for the body would make the server tell it to send all of it."""
    sent, read = _drive(BufferedWSGI(_limited_app(100), threads=1), 200, [b"x" * 40] * 5,
                        headers=((b"expect", b"100-continue"),))
    assert sent[0]["status"] == 413 and read == 0
    # Within the limit the body is asked for (and the server says "100 Continue") as always.
    sent, read = _drive(BufferedWSGI(_limited_app(100), threads=1), 40, [b"x" * 40],
                        headers=((b"expect", b"100-continue"),))
    assert sent[0]["status"] == 200 and read == 1
