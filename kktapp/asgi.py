"""The service for gunicorn's asyncio worker: each request is read in full before a thread runs it.

Why: with gunicorn's threaded workers a thread is given to a connection as soon as its first
bytes arrive and then waits on the socket while the client sends the rest. Twenty clients
trickling a body a byte a second held every thread of a 2 × 8 deployment, and nobody else got
an answer. Here the event loop reads headers and bodies of any number of connections at once (a
slow client costs a coroutine, not a thread), and the Flask application runs in a thread only
with the whole body in memory. Bodies have to arrive within :data:`BODY_TIMEOUT` seconds (a
client slower than that gets 408) and are never kept past MAX_CONTENT_LENGTH (the application
answers 413 in its contract's shape without the body; the rest is read and thrown away, up to
:data:`DRAIN_LIMIT`, so that the client gets that answer).

Run it (deploy/kkt-gunicorn.service)::

    gunicorn 'kktapp.asgi:application' --worker-class asgi --workers 2

``KKT_THREADS`` (default 16) is the number of requests a process runs at once: every caller that
waits for its receipt holds one (see the README on sizing threads). ``KKT_BODY_TIMEOUT``
(default 30) overrides :data:`BODY_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import Flask

from . import create_app

log = logging.getLogger(__name__)

#: Seconds a client has to send a whole request body (2 MB needs 70 KB/s; a LAN does far more).
BODY_TIMEOUT = 30.0
#: Requests run at once per process when KKT_THREADS is not set.
DEFAULT_THREADS = 16
#: A body over MAX_CONTENT_LENGTH is still read and thrown away, up to this many bytes in all:
#: an HTTP client sends the whole body before it reads the answer, and a connection closed with
#: its bytes unread is reset, so the client saw "connection reset" instead of the 413 that says
#: what is wrong (bench/fuzz.py: 2 of 20 oversized bodies). A larger one is answered at once.
DRAIN_LIMIT = 32 * 1024 * 1024

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BufferedWSGI:
    """ASGI application around a WSGI one: buffer the request, then run the WSGI app in a thread."""

    def __init__(self, app: Flask, threads: int = DEFAULT_THREADS, body_timeout: float = BODY_TIMEOUT) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.max_body = app.config.get("MAX_CONTENT_LENGTH")
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kkt-request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # Device owners finish their current job and release the devices.
                service = self.app.extensions.get("kkt")
                if service is not None:
                    await asyncio.get_running_loop().run_in_executor(None, service.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _header(scope, b"content-length")
        too_big = self.max_body is not None and declared.isdigit() and int(declared) > self.max_body
        # Past the limit the body is only counted (the application answers 413 without it);
        # one past DRAIN_LIMIT is not read at all, nor one the client holds back until it is
        # told to go on (Expect: 100-continue, curl's way with large bodies): the server sends
        # that "100 Continue" once the body is first asked for, and the 413 makes it needless.
        drain = not too_big or (int(declared) <= DRAIN_LIMIT
                                and _header(scope, b"expect").lower() != "100-continue")
        body = bytearray()
        seen = 0
        deadline = time.monotonic() + self.body_timeout
        while drain:
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.001))
            except TimeoutError:
                if too_big:
                    break  # answered 413 as it is: the rest of a refused body is not waited for
                log.warning("клиент %s слишком медленно передаёт запрос %s %s: соединение закрыто",
                            _client(scope), scope.get("method"), scope.get("path", "")[:200])
                await _plain(send, 408, "запрос не получен целиком за отведённое время")
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if not too_big:
                body += chunk
                if self.max_body is not None and seen > self.max_body:
                    too_big, body = True, bytearray()
            if not message.get("more_body", False) or seen > DRAIN_LIMIT:
                break
        environ = wsgi_environ(scope, b"" if too_big else bytes(body))
        if too_big:
            # Werkzeug refuses a declared length over MAX_CONTENT_LENGTH before reading anything.
            environ["CONTENT_LENGTH"] = declared if declared.isdigit() else str(seen)
        loop = asyncio.get_running_loop()
        status, headers, chunks = await loop.run_in_executor(self.executor, self._run, environ)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
        await send({"type": "http.response.body", "body": chunks})

    def _run(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            started[:] = [status, headers]
            return lambda data: None  # the write() callable: Flask never uses it

        result: Iterable[bytes] = self.app(environ, start_response)
        try:
            data = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started
        return int(status.split(" ", 1)[0]), list(headers), data


def wsgi_environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """PEP 3333 environ for an ASGI HTTP scope and its whole body."""
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
    raw_path = raw_path.split(b"?", 1)[0]
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        if key == "CONTENT_LENGTH":
            continue  # what was read is what the application gets
        if key != "CONTENT_TYPE":
            key = "HTTP_" + key
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return ""


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


async def _plain(send: Send, status: int, text: str) -> None:
    body = ('{"error": {"code": 1001, "message": "' + text + '"}}').encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json; charset=utf-8"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _env_number(name: str, default: float) -> float:
    try:
        return max(1.0, float(os.environ.get(name, default)))
    except ValueError:
        log.error("%s=%r: ожидается число, используется %s", name, os.environ.get(name), default)
        return default


_application: BufferedWSGI | None = None


def __getattr__(name: str) -> Any:
    """``application`` is what gunicorn loads; built on first access, so that importing this
    module (tests, tools) does not create the app and start its device owners."""
    global _application
    if name != "application":
        raise AttributeError(name)
    if _application is None:
        _application = BufferedWSGI(create_app(), threads=int(_env_number("KKT_THREADS", DEFAULT_THREADS)),
                                    body_timeout=_env_number("KKT_BODY_TIMEOUT", BODY_TIMEOUT))
    return _application
