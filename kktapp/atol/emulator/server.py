"""TCP side of the emulator: one connection at a time, the v3 task buffer, latency and faults.

Threads per connection, so that timing behaves like a device on a network:

* reader — turns bytes into packets (:class:`kktapp.atol.framing.Decoder`) and stamps each with
  the time it may be handled (arrival + latency);
* handler — answers every packet at once on its own ID (task-buffer model in
  :mod:`kktapp.atol.model`), asks for a resend of broken packets, resends on request;
* executor — runs the tasks one after another, ``device_time`` seconds each (the device is
  busy), and pushes A6/A7 on packet ID 0xF0 for tasks that asked for it;
* writer — sends packets when their latency has passed, applying the injected faults.

Without latency the reader and handler, and any sender and the writer, need not be two
threads: a packet is handled by the reader and sent by the thread that made it, whenever
nothing is queued ahead of it and no fault waits for the next packet. A benchmark's emulated
registers took as much of the 2-core machine as the service they stand for; the two hand-offs
saved cut the emulator's CPU per 10-position sale from 6.3 to 4.9 ms.

The command itself is executed by a callable ``execute(task) -> (reply, failed)`` so that this
module knows the task buffer and nothing about commands.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ...sockets import peer_gone
from .. import model, taskbuf
from ..framing import BadPacket, Decoder, Packet, encode_packet
from ..taskbuf import Flags, Status
from .listener import JOIN_TIMEOUT, Listener

log = logging.getLogger(__name__)

#: How long the handler waits for a task without NeedResult to finish before answering its Add,
#: when the device is not told to be slow: the device then answers Add with the result (A3/A4),
#: as Z's tests show, and tests stay deterministic. NeedResult tasks are answered at once (A1)
#: and pushed (A6/A7) when done.
SYNC_WAIT = 5.0

Execute = Callable[[bytes], "tuple[bytes, bool]"]


@dataclass
class Faults:
    """Faults injected from the test API; consumed by the connection that meets them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Close the link after this many more executed tasks (the last one's reply not sent).
    drop_after: int | None = None
    #: Next outgoing packet: send its first half, then close.
    drop_mid_frame: bool = False
    #: Next outgoing packet: flip one byte.
    corrupt_next: bool = False
    #: Faults that actually happened. An armed fault may never meet its moment (a drop after
    #: more tasks than the host sends); tests report what fired, not what they armed.
    fired: int = 0
    #: Of those, the ones that hit a fiscal document in flight (``in_flight`` said so).
    fired_in_flight: int = 0
    #: Whether a fiscal document is in flight now; set by the emulator, called with ``lock`` held.
    in_flight: Callable[[], bool] = field(default=lambda: False)

    def fire(self) -> None:
        """Count one fault that happened now (``lock`` held)."""
        self.fired += 1
        self.fired_in_flight += self.in_flight()

    def take(self, name: str) -> bool:
        """Return and clear a one-shot flag (counted as fired when it was set)."""
        with self.lock:
            value = bool(getattr(self, name))
            setattr(self, name, False)
            if value:
                self.fire()
            return value

    def task_executed(self) -> bool:
        """Count one executed task; True when the link must drop now."""
        with self.lock:
            if self.drop_after is None:
                return False
            self.drop_after -= 1
            if self.drop_after <= 0:
                self.drop_after = None
                self.fire()
                return True
            return False

    def send_armed(self) -> bool:
        """A fault waits for the next outgoing packet (read without the lock: a fault armed
        while a packet goes out meets the one after it, as it would on a busy link)."""
        return self.drop_mid_frame or self.corrupt_next

    def clear(self) -> None:
        """Disarm every fault that has not fired yet."""
        with self.lock:
            self.drop_after = None
            self.drop_mid_frame = False
            self.corrupt_next = False


@dataclass
class PaceStats:
    """What a paced device (``device_time`` > 0) saw of its host, summed over its connections.

    For the benchmarks, which must tell the service's share of a register's lost time from the
    emulator's own: the emulators share the machine with the service, and a register is idle
    both while the host prepares its next document and while the emulator, short of CPU, is late
    with the answer the host waits for.
    """

    #: Tasks run at the device's pace.
    tasks: int = 0
    #: Seconds the device stood with nothing to run between one task and the next one's arrival.
    idle: float = 0.0
    #: Tasks after which nothing was queued: the host was waiting for their answers.
    ends: int = 0
    #: Seconds after their paced end at which those tasks' answers were ready to go out.
    late: float = 0.0


@dataclass
class Timing:
    """Seconds the device spends on each task and the one-way delay of every packet, and what
    the pace measured (:class:`PaceStats`)."""

    device_time: float = 0.0
    latency: float = 0.0
    stats: PaceStats = field(default_factory=PaceStats)


@dataclass
class Pace:
    """The device's own clock for busy tasks: each starts when it arrived or when the one
    before it ended, whichever is later (times from ``time.monotonic``)."""

    #: When the work taken so far ends: the next task cannot start before.
    free_at: float = 0.0

    def end_of(self, arrived: float, busy: float) -> float:
        """When a task that arrived at ``arrived`` and takes ``busy`` seconds ends."""
        self.free_at = max(arrived, self.free_at) + busy
        return self.free_at

    def stop(self, now: float) -> None:
        """The task in progress was abandoned at ``now``: the device is free from then."""
        self.free_at = now


@dataclass
class Task:
    """One entry of the device's task buffer."""

    tid: int
    flags: Flags
    body: bytes
    status: Status = Status.PENDING
    reply: bytes = b""
    #: The Add was answered with a status that was not final: the end is reported later.
    add_answered: bool = False
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    #: When the device took the task (monotonic): its work starts then at the earliest.
    arrived: float = field(default_factory=time.monotonic)

    @property
    def final(self) -> bool:
        """Done, failed or stopped."""
        return self.status in taskbuf.FINAL


def corrupt(raw: bytes) -> bytes:
    """Flip one bit of a DATA/CRC byte so the CRC no longer matches (framing stays intact).

    Escape pairs and the header are left alone and the flipped byte never becomes FE/FD, so
    the host sees a well-formed packet with a bad CRC — the case the resend request is for.
    """
    data = bytearray(raw)
    for i in range(len(data) - 1, 3, -1):
        if data[i] in (0xFE, 0xFD) or data[i - 1] == 0xFD:
            continue
        for mask in (0x01, 0x02, 0x04, 0x08):
            if data[i] ^ mask not in (0xFE, 0xFD):
                data[i] ^= mask
                return bytes(data)
    # A packet made only of escapes: damage the ID instead (still a CRC failure).
    data[3] ^= 0x01 if data[3] ^ 0x01 != 0xFE else 0x02
    return bytes(data)


class Connection:
    """One host connection and its task buffer."""

    def __init__(self, sock: socket.socket, execute: Execute, faults: Faults, timing: Timing,
                 on_close: Callable[[Connection], None]) -> None:
        self.sock = sock
        self.execute = execute
        self.faults = faults
        self.timing = timing
        self.on_close = on_close
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)
        #: TId → task, in the order added.
        self.buffer: dict[int, Task] = {}
        self.queue: collections.deque[Task] = collections.deque()
        self.running: Task | None = None
        #: TId of the failed task that stops the following ones (model.STOPPED_UNTIL_ACK_OR_ABORT).
        self.stopped_by: int | None = None
        #: Last packet sent under each ID, for resend requests.
        self.sent: dict[int, bytes] = {}
        self._inbound: list[tuple[float, int, Packet | BadPacket]] = []
        self._inbound_cv = threading.Condition()
        self._outbound: collections.deque[tuple[float, bytes]] = collections.deque()
        self._outbound_cv = threading.Condition()
        #: The handler has taken a packet and not finished it: the reader must not overtake it.
        self._handling = False
        #: The writer has taken a packet and not sent it yet: no sender may overtake it.
        self._writing = False
        self._seq = itertools.count()
        self._abort = threading.Event()
        self._pace = Pace()
        try:
            name = f"emu-{sock.getpeername()[1]}"
        except OSError:
            name = "emu-?"
        self.threads = [
            threading.Thread(target=self._reader, name=f"{name}-read", daemon=True),
            threading.Thread(target=self._handler, name=f"{name}-handle", daemon=True),
            threading.Thread(target=self._executor, name=f"{name}-exec", daemon=True),
            threading.Thread(target=self._writer, name=f"{name}-write", daemon=True),
        ]

    def peer_gone(self) -> bool:
        """True when the host has closed its side (end of stream waiting in the socket)."""
        return peer_gone(self.sock)

    def start(self) -> None:
        """Start serving."""
        for t in self.threads:
            t.start()

    def close(self) -> None:
        """Drop the link (idempotent); pending tasks are discarded, as the buffer belongs to
        the session here (the host clears it with Abort on connect anyway)."""
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        with self.work:
            if self._cancel_pending():
                # Its result has nowhere to go; wake an Add waiting for it.
                self.running.done.set()
            self.work.notify_all()
        self._abort.set()
        with self._inbound_cv:
            self._inbound_cv.notify_all()
        with self._outbound_cv:
            self._outbound_cv.notify_all()
        self.on_close(self)

    def join(self) -> None:
        """Wait for the threads (bounded)."""
        me = threading.current_thread()
        for t in self.threads:
            if t is not me and t.is_alive():
                t.join(JOIN_TIMEOUT)

    # ------------------------------------------------------------------ reader / writer

    def _reader(self) -> None:
        decoder = Decoder()
        try:
            while not self.closed.is_set():
                try:
                    chunk = self.sock.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                due = time.monotonic() + self.timing.latency
                events = decoder.feed(chunk)
                if not events:
                    continue
                with self._inbound_cv:
                    direct = self.timing.latency <= 0 and not self._inbound and not self._handling
                    if direct:
                        self._handling = True
                    else:
                        for ev in events:
                            heapq.heappush(self._inbound, (due, next(self._seq), ev))
                        self._inbound_cv.notify()
                if direct:
                    # Only this thread queues packets, so none can arrive behind these meanwhile.
                    try:
                        for ev in events:
                            self._handle_logged(ev)
                    finally:
                        with self._inbound_cv:
                            self._handling = False
        finally:
            self.close()

    def _send(self, packet_id: int, data: bytes) -> None:
        """Queue one packet (caller may hold ``self.lock``: order of answers is kept)."""
        raw = encode_packet(packet_id, data)
        self.sent[packet_id] = raw
        self._send_raw(raw)

    def _send_raw(self, raw: bytes) -> None:
        with self._outbound_cv:
            if (self.timing.latency <= 0 and not self._outbound and not self._writing
                    and not self.faults.send_armed()):
                # Nothing to delay and nothing ahead of it: send from this thread (module docstring).
                if not self.closed.is_set():
                    log.debug("emulator >> %s", raw.hex(" "))
                    try:
                        self.sock.sendall(raw)
                    except OSError:
                        # The caller may hold the task lock close() takes: end the stream
                        # instead, and the reader closes the connection.
                        self._shut()
                return
            self._outbound.append((time.monotonic() + self.timing.latency, raw))
            self._outbound_cv.notify()

    def _shut(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _writer(self) -> None:
        try:
            while self._write_next():
                pass
        finally:
            with self._outbound_cv:
                self._writing = False

    def _write_next(self) -> bool:
        """Send the next queued packet; False when the connection is closed."""
        with self._outbound_cv:
            self._writing = False
            while not self._outbound and not self.closed.is_set():
                self._outbound_cv.wait()
            if self.closed.is_set():
                return False
            due, raw = self._outbound.popleft()
            self._writing = True
        delay = due - time.monotonic()
        if delay > 0 and self.closed.wait(delay):
            return False
        try:
            if self.faults.take("drop_mid_frame"):
                log.info("emulator: dropping the link in the middle of a packet")
                self.sock.sendall(raw[: max(1, len(raw) // 2)])
                self.close()
                return False
            if self.faults.take("corrupt_next"):
                log.info("emulator: corrupting an outgoing packet")
                raw = corrupt(raw)
            log.debug("emulator >> %s", raw.hex(" "))
            self.sock.sendall(raw)
        except OSError:
            self.close()
            return False
        return True

    # ------------------------------------------------------------------ handler

    def _handler(self) -> None:
        while True:
            with self._inbound_cv:
                while not self.closed.is_set():
                    if self._inbound:
                        due = self._inbound[0][0]
                        delay = due - time.monotonic()
                        if delay <= 0:
                            break
                        self._inbound_cv.wait(delay)
                    else:
                        self._inbound_cv.wait()
                if self.closed.is_set():
                    return
                _, _, event = heapq.heappop(self._inbound)
                self._handling = True
            try:
                self._handle_logged(event)
            finally:
                with self._inbound_cv:
                    self._handling = False

    def _handle_logged(self, event: Packet | BadPacket) -> None:
        try:
            self._handle(event)
        except Exception:  # a bug must not kill the link silently
            log.exception("emulator: error handling a packet")

    def _handle(self, event: Packet | BadPacket) -> None:
        if isinstance(event, BadPacket):
            # Ask the host to send that packet again: an empty packet with its ID.
            if event.id is not None:
                with self.lock:
                    self._send(event.id, b"")
            return
        log.debug("emulator << id=%02X %s", event.id, event.data.hex(" "))
        if not event.data:
            raw = self.sent.get(event.id)
            if raw is not None:
                self._send_raw(raw)
            return
        try:
            msg = taskbuf.decode_request(event.data)
        except taskbuf.TaskBufError:
            with self.lock:
                self._send(event.id, taskbuf.encode_answer(Status.ILLEGAL_VALUE, bytes((model.BAD_PARAMETER_FLAGS,))))
            return
        if isinstance(msg, taskbuf.Add):
            self._add(event.id, msg.tid, msg.flags, msg.task)
        elif isinstance(msg, taskbuf.AckAdd):
            with self.lock:
                self._release(msg.ack_tid)
            self._add(event.id, msg.tid, msg.flags, msg.task)
        elif isinstance(msg, taskbuf.Req):
            with self.lock:
                task = self.buffer.get(msg.tid)
                if task is None:
                    self._send(event.id, taskbuf.encode_answer(Status.NOT_FOUND))
                else:
                    self._answer(event.id, task)
        elif isinstance(msg, taskbuf.Ack):
            with self.lock:
                status = self._release(msg.tid)
                self._send(event.id, taskbuf.encode_answer(status))
        elif isinstance(msg, taskbuf.Abort):
            with self.work:
                self._abort_all()
                self._send(event.id, taskbuf.encode_answer(Status.RESULT))

    def _answer(self, packet_id: int, task: Task) -> None:
        """Answer with the task's current status (lock held); forget a delivered result."""
        reply = task.reply if task.status in taskbuf.WITH_REPLY else b""
        tid = None
        if task.status == Status.STOPPED:
            # ``A5 TId`` ([C Z,K]); which TId: model.STOPPED_CARRIES_FAILED_TID.
            tid = self.stopped_by if self.stopped_by is not None else task.tid
        self._send(packet_id, taskbuf.encode_answer(task.status, reply, tid))
        if task.final:
            self._delivered(task)

    def _delivered(self, task: Task) -> None:
        """A final status reached the host (or never will): keep it only for NeedResult (until
        Ack) or as the Stopped cause."""
        if not (task.flags & Flags.NEED_RESULT) and task.tid != self.stopped_by:
            if self.buffer.get(task.tid) is task:
                del self.buffer[task.tid]

    def _unfinished(self) -> int:
        """Tasks in the buffer not yet ended (caller holds ``work``).

        They are the queued ones and the running one: a task enters the queue and the buffer
        together, leaves the buffer only once final (Ack, delivery, a reused TId) or with the
        whole queue (Abort: then a cancelled task may still be running, out of the buffer).
        Counting them here, not by a scan of the buffer, keeps an Add cheap when the buffer holds
        up to 255 finished tasks: a fleet of emulated registers spent 15 % of its CPU in that scan.
        Results kept until Ack do not count: model.TASK_BUFFER_CAPACITY [U].
        """
        running = self.running
        return len(self.queue) + (running is not None and self.buffer.get(running.tid) is running)

    def _release(self, tid: int) -> Status:
        """Ack: drop a finished task's kept result; acking the failed task lifts Stopped."""
        task = self.buffer.get(tid)
        if task is None:
            return Status.NOT_FOUND
        if not task.final:
            return Status.ILLEGAL_VALUE
        del self.buffer[tid]
        if self.stopped_by == tid:
            self.stopped_by = None
        return Status.RESULT

    def _cancel_pending(self) -> bool:
        """Cancel the queued tasks and the running one (caller holds ``work``).

        Returns True when a task was running: it finishes its current step, then drops its result.
        """
        for task in self.queue:
            task.cancelled = True
            task.done.set()
        self.queue.clear()
        if self.running is None:
            return False
        self.running.cancelled = True
        return True

    def _abort_all(self) -> None:
        if self._cancel_pending():
            self._abort.set()
        self.buffer.clear()
        self.stopped_by = None

    def _add(self, packet_id: int, tid: int, flags: Flags, body: bytes) -> None:
        with self.work:
            old = self.buffer.get(tid)
            if old is not None and not (old.final and not old.flags & Flags.NEED_RESULT and tid != self.stopped_by):
                # A kept result (NeedResult, until Ack) or a task still running: the TId is taken.
                self._send(packet_id, taskbuf.encode_answer(Status.ALREADY_EXISTS))
                return
            if tid > model.ID_MAX:
                # [S K] B4 is followed by the index of the bad parameter: 0 flags, 1 TId.
                self._send(packet_id, taskbuf.encode_answer(Status.ILLEGAL_VALUE, bytes((model.BAD_PARAMETER_TID,))))
                return
            if self._unfinished() >= model.TASK_BUFFER_CAPACITY:
                self._send(packet_id, taskbuf.encode_answer(Status.OVERFLOW))
                return
            task = Task(tid, flags, body)
            self.buffer[tid] = task
            self.queue.append(task)
            self.work.notify_all()
            if self.timing.device_time > 0 or flags & Flags.NEED_RESULT:
                # A NeedResult task's result always comes as A6/A7 on 0xF0: hosts like atol4j
                # (A) read results only from there, C waits there first ([C C,A]).
                task.add_answered = True
                self._send(packet_id, taskbuf.encode_answer(task.status))
                return
        # A quick device answers a quiet Add with the result: wait for the executor outside the lock.
        task.done.wait(SYNC_WAIT)
        with self.lock:
            if self.closed.is_set() or task.cancelled:
                return
            if not task.final:
                task.add_answered = True
            self._answer(packet_id, task)

    # ------------------------------------------------------------------ executor

    def _executor(self) -> None:
        while True:
            with self.work:
                while not self.queue and not self.closed.is_set():
                    self.work.wait()
                if self.closed.is_set():
                    return
                task = self.queue.popleft()
                if self.stopped_by is not None and not (task.flags & Flags.IGNORE_ERROR):
                    task.status = Status.STOPPED
                    self._finished(task)
                    continue
                task.status = Status.IN_PROGRESS
                self.running = task
                self._abort.clear()
            busy = self.timing.device_time
            if busy > 0:
                # A device keeps its own pace whatever the host's load: the task starts when it
                # arrived or when the previous one ended, not when this thread got the CPU. A
                # sleep counted from here would stretch every task by the emulator's own
                # scheduling delays, and a benchmark would charge them to the service.
                free_at = self._pace.free_at
                end = self._pace.end_of(task.arrived, busy)
                stats = self.timing.stats
                stats.tasks += 1
                if free_at:  # 0: the first task of a connection, nothing to be idle after
                    stats.idle += max(0.0, task.arrived - free_at)
                if self._abort.wait(max(0.0, end - time.monotonic())):
                    # Abort or close while the device was "busy": the task never ran.
                    self._pace.stop(time.monotonic())
                    with self.work:
                        self.running = None
                        task.cancelled = True
                        task.done.set()
                    continue
            try:
                reply, failed = self.execute(task.body)
            except Exception:  # report as a device error, keep serving
                log.exception("emulator: task %02X crashed", task.tid)
                reply, failed = bytes((0x55, model.UNKNOWN_COMMAND_ERROR, 0)), True
            if busy > 0 and not self.queue:  # read without the lock: a statistic, not a decision
                stats.ends += 1
                stats.late += max(0.0, time.monotonic() - end)
            if self.faults.task_executed():
                log.info("emulator: dropping the link after task %02X (reply not sent)", task.tid)
                with self.work:
                    self.running = None
                    task.cancelled = True
                    task.done.set()
                self.close()
                return
            with self.work:
                self.running = None
                if task.cancelled:
                    continue
                task.reply = reply
                task.status = Status.ERROR if failed else Status.RESULT
                if failed:
                    self.stopped_by = task.tid
                self._finished(task)

    def _finished(self, task: Task) -> None:
        """Task ended (lock held): wake a waiting Add, or push the async result.

        Pushed when the Add was answered before the end ([C C,Z,K], model.py): A6/A7 for a
        NeedResult (or WaitAsyncData) task, A7 for any task that failed. Stopped has no async
        form: the host learns it on Req, or from the Add answer.
        """
        task.done.set()
        if not task.add_answered or task.status == Status.STOPPED:
            return  # a quiet task's result waits for a Req; its TId may be reused meanwhile
        failed = task.status == Status.ERROR
        if failed or task.flags & (Flags.NEED_RESULT | Flags.WAIT_ASYNC_DATA):
            status = Status.ASYNC_ERROR if failed else Status.ASYNC_RESULT
            self._send(model.ASYNC_PACKET_ID, taskbuf.encode_answer(status, task.reply, task.tid))
            self._delivered(task)


class Server(Listener):
    """Listening socket that serves one connection at a time, plus power off/on."""

    log = log

    def __init__(self, execute: Execute, faults: Faults, timing: Timing) -> None:
        super().__init__()
        self.execute = execute
        self.faults = faults
        self.timing = timing
        self.connection: Connection | None = None
        self._old: list[Connection] = []

    def close(self) -> None:
        """Stop accepting and drop the connection (used by stop and power off)."""
        self.stop_serving()
        for conn in self._old:
            conn.join()
        self._old.clear()

    def drop(self) -> None:
        """Close the current connection, if any."""
        with self._lock:
            conn = self.connection
        if conn is not None:
            conn.close()
            conn.join()

    def _closed(self, conn: Connection) -> None:
        with self._lock:
            if self.connection is conn:
                self.connection = None

    def _admit(self, sock: socket.socket) -> bool:
        with self._lock:
            current = self.connection
        if current is not None and not current.closed.is_set() and current.peer_gone():
            # The host closed cleanly (FIN already queued) but the reader has not seen it
            # yet: the device would have, so do not refuse the next client.
            current.close()
        with self._lock:
            if self.connection is not None and not self.connection.closed.is_set():
                return False
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, self.execute, self.faults, self.timing, self._closed)
            self.connection = conn
            self._old = [c for c in self._old if any(t.is_alive() for t in c.threads)]
            self._old.append(conn)
        conn.start()
        return True
