"""The TCP side of the tap: one client at a time, relayed byte for byte to the device.

Per client session, two pump threads copy ``recv`` → ``sendall`` (TCP_NODELAY both ways, so
nothing waits for Nagle). A pump hands each chunk to the recorder *before* sending it on: the
device's answer can then never be recorded ahead of the request it answers, and the recorder's
work (decoding, JSON, disk) runs in its own thread, never between the two sockets. A decoding
failure costs at most a record, never a byte of the relay.

The device accepts one connection; so does the tap. A second client gets a one-line refusal
in Russian (bytes without FE, which an ATOL client skips as noise) and is closed, as the
device itself would close it; the operator sees the same line in the log and the trace.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from ...sockets import shut
from .decode import DEVICE, HOST, Tracer, iso_time, masked_chunk_hex

log = logging.getLogger(__name__)

#: recv size: more than any ATOL packet burst, small enough to pass bytes on at once.
CHUNK = 65536
#: After one side has closed, how long the other may still deliver what it had in flight.
DRAIN = 0.5
#: How often the accept loop looks at the stop flag.
ACCEPT_POLL = 0.2

Address = tuple[str, int]


def busy_message(holder: str) -> str:
    """The refusal a second client gets (and the operator sees)."""
    return (f"Касса занята: через отвод записи уже работает клиент {holder}. "
            "Допускается одно подключение; закройте другую программу и подключитесь снова.")


class Recorder:
    """Writes the trace: one JSON line per packet or event, decoded in its own thread."""

    def __init__(self, out: str | os.PathLike[str] | TextIO) -> None:
        if isinstance(out, (str, os.PathLike)):
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            # Append: a second run must not wipe an earlier capture nobody has sent yet.
            self._file: TextIO = open(out, "a", encoding="utf-8")  # closed in close()
            self._owned = True
        else:
            self._file, self._owned = out, False
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._tracers: dict[int, Tracer] = {}
        self._seq = 0
        self.records = 0
        self._thread = threading.Thread(target=self._run, name="tap-recorder", daemon=True)
        self._thread.start()

    # Producer side: cheap, called from the pumps and the accept loop.

    def begin(self, session: int, ts: float) -> None:
        """A session starts at ``ts`` (its records count time from there)."""
        self._queue.put(("begin", session, ts))

    def chunk(self, session: int, side: str, ts: float, data: bytes) -> None:
        """Bytes ``side`` sent at ``ts``."""
        self._queue.put(("chunk", session, side, ts, data))

    def event(self, ts: float, event: str, **info: Any) -> None:
        """A line about the relay itself (connect, refuse, disconnect)."""
        self._queue.put(("event", ts, event, info))

    def end(self, session: int, ts: float) -> None:
        """The session is over: record what its streams left unfinished."""
        self._queue.put(("end", session, ts))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far is on disk."""
        done = threading.Event()
        self._queue.put(("sync", done))
        done.wait(timeout)

    def close(self) -> None:
        """Write what is queued, stop the thread, close the file (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._owned and not self._file.closed:
            self._file.close()

    # Consumer side.

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._handle(item)
            except Exception:  # the recorder must outlive any one bad record
                log.exception("tap recorder: cannot record %s", item[0])

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "sync":
            self._file.flush()
            item[1].set()
        elif kind == "begin":
            _, session, ts = item
            self._tracers[session] = Tracer(session, ts)
        elif kind == "chunk":
            _, session, side, ts, data = item
            tracer = self._tracers[session]
            try:
                records = tracer.feed(side, ts, data)
            except Exception as exc:  # keep the bytes even if the decoder fails
                log.exception("tap: cannot decode a chunk")
                # The stream state is unknown now: start afresh, keep what is known.
                tracer.splitters[side] = type(tracer.splitters[side])()
                records = [{"time": iso_time(ts), "t": round(ts - tracer.t0, 6), "session": session,
                            "from": side, "frame": "undecoded", "frame_error": type(exc).__name__,
                            "raw": masked_chunk_hex(data, side == HOST)}]
            self._write(records)
        elif kind == "end":
            _, session, ts = item
            tracer = self._tracers.pop(session, None)
            if tracer is not None:
                self._write(tracer.finish(ts))
        elif kind == "event":
            _, ts, event, info = item
            self._write([{"time": iso_time(ts), "event": event, **info}])

    def _write(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            self._seq += 1
            line = {"seq": self._seq, **rec}
            self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.records += 1
        if records:
            # A capture must survive the tap being killed: the device will not repeat a receipt.
            self._file.flush()


def _peer(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Session:
    """One client and its device connection, two pumps."""

    def __init__(self, tap: Tap, number: int, client: socket.socket, peer: str) -> None:
        self.tap = tap
        self.number = number
        self.client = client
        self.peer = peer
        self.device: socket.socket | None = None
        self.bytes = {HOST: 0, DEVICE: 0}
        self.closed_by = ""
        self._first_done = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, name=f"tap-session-{number}", daemon=True)

    def run(self) -> None:
        rec, target = self.tap.recorder, self.tap.target
        try:
            self.device = socket.create_connection(target, timeout=self.tap.connect_timeout)
        except OSError as exc:
            text = f"нет связи с ККТ {_peer(target)}: {exc}"
            log.error("tap: клиент %s отключён, %s", self.peer, text)
            rec.event(time.time(), "device_unreachable", client=self.peer, device=_peer(target), detail=text)
            _say_and_close(self.client, f"Отвод записи: {text}")
            return
        for sock in (self.client, self.device):
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.time()
        rec.begin(self.number, t0)
        rec.event(t0, "connect", session=self.number, client=self.peer, device=_peer(target))
        log.info("tap: сеанс %d, клиент %s ↔ ККТ %s", self.number, self.peer, _peer(target))
        up = threading.Thread(target=self._pump, args=(self.client, self.device, HOST), daemon=True,
                              name=f"tap-{self.number}-up")
        down = threading.Thread(target=self._pump, args=(self.device, self.client, DEVICE), daemon=True,
                                name=f"tap-{self.number}-down")
        up.start()
        down.start()
        self._first_done.wait()
        # The other side may still have something in flight (an answer, an async result).
        deadline = time.monotonic() + DRAIN
        for t in (up, down):
            t.join(max(0.0, deadline - time.monotonic()))
        shut(self.client)
        shut(self.device)
        up.join()
        down.join()
        ts = time.time()
        rec.end(self.number, ts)
        rec.event(ts, "disconnect", session=self.number, client=self.peer, closed_by=self.closed_by,
                  bytes_from_host=self.bytes[HOST], bytes_from_device=self.bytes[DEVICE])
        log.info("tap: сеанс %d окончен (%s закрыл соединение), байт от клиента %d, от ККТ %d", self.number,
                 "клиент" if self.closed_by == HOST else "ККТ", self.bytes[HOST], self.bytes[DEVICE])

    def _pump(self, src: socket.socket, dst: socket.socket, side: str) -> None:
        rec = self.tap.recorder
        clean = True
        try:
            while True:
                chunk = src.recv(CHUNK)
                if not chunk:
                    break
                rec.chunk(self.number, side, time.time(), chunk)
                self.bytes[side] += len(chunk)
                dst.sendall(chunk)
        except OSError as exc:
            clean = False
            log.debug("tap: session %d %s side: %s", self.number, side, exc)
        with self._lock:
            self.closed_by = self.closed_by or side
        if clean:
            try:
                dst.shutdown(socket.SHUT_WR)  # pass the close on, as the peer would have seen it
            except OSError:
                pass
        self._first_done.set()

    def alive(self) -> bool:
        """The session still holds the device."""
        return self.thread.is_alive()


class Tap:
    """The relay: listen for ATOL clients, pass each to ``target``, record to ``out``."""

    def __init__(self, listen: Address, target: Address, out: str | os.PathLike[str] | TextIO, *,
                 connect_timeout: float = 5.0) -> None:
        self.listen_address = listen
        self.target = target
        self.connect_timeout = connect_timeout
        self.recorder = Recorder(out)
        self.address: Address | None = None
        self.sessions = 0
        self.refused = 0
        self._listener: socket.socket | None = None
        self._active: _Session | None = None
        self._stop = threading.Event()
        self._accept_thread: threading.Thread | None = None

    def start(self) -> Address:
        """Bind and start accepting in a background thread; returns the bound address."""
        host, port = self.listen_address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(4)
        listener.settimeout(ACCEPT_POLL)
        self._listener = listener
        self.address = listener.getsockname()[:2]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="tap-accept", daemon=True)
        self._accept_thread.start()
        log.info("tap: жду клиента на %s, ККТ %s", _peer(self.address), _peer(self.target))
        return self.address

    @property
    def busy(self) -> bool:
        """A client session holds the device now."""
        return self._active is not None and self._active.alive()

    def wait(self) -> None:
        """Block until :meth:`stop` (the CLI's main loop)."""
        while not self._stop.wait(0.5):
            pass

    def stop(self) -> None:
        """Stop accepting, close the session, write out the trace (idempotent)."""
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join()
        if self._listener is not None:
            self._listener.close()
        session = self._active
        if session is not None:
            shut(session.client)
            if session.device is not None:
                shut(session.device)
            session.thread.join()
        self.recorder.close()

    def __enter__(self) -> Tap:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("tap: accept failed")
                time.sleep(ACCEPT_POLL)
                continue
            peer = _peer(addr)
            if self.busy:
                assert self._active is not None
                self._refuse(sock, peer, self._active.peer)
                continue
            self.sessions += 1
            self._active = _Session(self, self.sessions, sock, peer)
            self._active.thread.start()

    def _refuse(self, sock: socket.socket, peer: str, holder: str) -> None:
        self.refused += 1
        text = busy_message(holder)
        log.warning("tap: клиент %s отклонён. %s", peer, text)
        self.recorder.event(time.time(), "refused", client=peer, holder=holder, detail=text)
        threading.Thread(target=_say_and_close, args=(sock, text), daemon=True, name="tap-refuse").start()


def _say_and_close(sock: socket.socket, text: str) -> None:
    """Say why, close for writing, and let the client's own bytes drain before the close, so
    that the text is not lost to a reset."""
    try:
        sock.settimeout(1.0)
        sock.sendall(text.encode("utf-8") + b"\r\n")
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and sock.recv(4096):
            pass
    except OSError:
        pass
    finally:
        sock.close()
