"""kktapp.asgi's wrapper driven by hand, as gunicorn's asgi worker drives it: lifespan and one request."""

from __future__ import annotations

import asyncio
from typing import Any

from flask import Flask

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
