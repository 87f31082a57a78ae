"""Byte streams of one client session → trace records, one per packet (sans-I/O).

Each direction is cut into wire segments at every unescaped FE (the only byte that can start
a packet) and fed to the project's framing :class:`~kktapp.atol.framing.Decoder`; a segment
that becomes a packet is decoded as a task-buffer request (host) or answer (device) and, where
the command registry knows it, its fields. A packet that breaks is recorded, raw, the moment
the framing gives up on it, with the framing's reason; bytes outside any packet as garbage, a
packet cut by the end of the connection as incomplete: nothing is dropped. Passwords are masked here, before a record
exists, in the decoded fields, in the data hex and in the wire hex (with the packet's CRC,
which would otherwise narrow a 4-digit access password down to a few dozen candidates).

A packet record (JSON): ``time`` (UTC), ``t`` (seconds since the session began), ``session``,
``from`` (``host`` / ``device``), ``frame`` (``ok``, ``bad``, ``garbage``, ``incomplete``) and
``frame_error``, ``id`` (packet ID), ``tb`` / ``tb_code`` (task-buffer request or status),
``flags``, ``tid``, ``answers`` (what a synchronous answer answers), ``cmd`` / ``name`` /
``title`` (the command, also on its answers), ``fields`` (decoded), ``status_data`` (bytes
after a status that carries no command reply), ``error`` (device error:
``code``, ``ext``, ``text``), ``decode_error``, ``data`` (the unescaped DATA in hex), ``raw``
(the wire bytes in hex, always) and ``masked``. The relay adds ``seq`` and its own event lines.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import adapter

log = logging.getLogger(__name__)

#: Directions: who sent the bytes.
HOST = "host"
DEVICE = "device"
#: What stands for a masked byte in hex, and for a masked field value.
MASK = "**"
MASKED_VALUE = "****"

# Frame kinds
OK = "ok"
BAD = "bad"
GARBAGE = "garbage"
INCOMPLETE = "incomplete"


def hex_bytes(data: bytes) -> str:
    """``FE 05 00`` style hex."""
    return data.hex(" ").upper()


def iso_time(ts: float) -> str:
    """Wall-clock time of a record, UTC, microseconds."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="microseconds")


# --------------------------------------------------------------------------- wire segments


@dataclass
class Wire:
    """A wire segment taken apart: unescaped DATA and where each of its bytes sat on the wire."""

    data: bytes
    #: Wire offsets of each DATA byte (two for an escaped one).
    data_at: list[tuple[int, ...]]
    #: Wire offsets of the CRC byte, empty when the segment ended before it.
    crc_at: tuple[int, ...] = ()


def parse_wire(raw: bytes) -> Wire | None:
    """Best-effort reading of a segment that starts with FE (None for other bytes).

    A broken length makes the rest count as DATA, so that a password in a broken packet is
    still found and masked.
    """
    if not raw or raw[0] != adapter.STX:
        return None
    length = None
    if len(raw) >= 3 and raw[1] < 0x80 and raw[2] < 0x80:
        length = raw[1] | raw[2] << 7
    data = bytearray()
    data_at: list[tuple[int, ...]] = []
    crc_at: tuple[int, ...] = ()
    pos = 4  # FE LEN0 LEN1 ID: never escaped
    while pos < len(raw):
        if raw[pos] == adapter.ESC and pos + 1 < len(raw):
            byte, at = adapter.UNESCAPE.get(raw[pos + 1], raw[pos + 1]), (pos, pos + 1)
            pos += 2
        else:
            byte, at = raw[pos], (pos,)
            pos += 1
        if length is None or len(data) < length:
            data.append(byte)
            data_at.append(at)
        elif not crc_at:
            crc_at = at
    return Wire(bytes(data), data_at, crc_at)


def masked_hex(raw: bytes, from_host: bool, context: bytes = b"") -> tuple[str, str | None, bool]:
    """(wire hex, DATA hex or None, whether anything was masked) with passwords as ``**``.

    ``context`` is the start of the same packet, recorded earlier: its bytes are not shown
    here, but they tell where this part's passwords are.
    """
    if context:
        wire_hex, _, masked = masked_hex(context + raw, from_host)
        return " ".join(wire_hex.split()[len(context):]), None, masked
    wire_tokens = [f"{b:02X}" for b in raw]
    wire = parse_wire(raw)
    if wire is None:
        return " ".join(wire_tokens), None, False
    data_tokens = [f"{b:02X}" for b in wire.data]
    masked = False
    if from_host:
        for start, end in adapter.secret_ranges(wire.data):
            for i in range(start, end):
                data_tokens[i] = MASK
                for at in wire.data_at[i]:
                    wire_tokens[at] = MASK
                masked = True
        if masked:
            for at in wire.crc_at:
                wire_tokens[at] = MASK
    return " ".join(wire_tokens), " ".join(data_tokens), masked


def masked_chunk_hex(chunk: bytes, from_host: bool) -> str:
    """Hex of any bytes of a stream, every FE-started piece masked as a packet would be."""
    if not from_host:
        return hex_bytes(chunk)
    pieces, start = [], 0
    for i in range(1, len(chunk) + 1):
        if i == len(chunk) or chunk[i] == adapter.STX:
            pieces.append(masked_hex(chunk[start:i], True)[0])
            start = i
    return " ".join(p for p in pieces if p)


@dataclass
class Segment:
    """One piece of a stream: a packet, a broken packet, garbage or an unfinished packet."""

    kind: str
    raw: bytes
    ts: float
    packet: adapter.Packet | None = None
    reason: str = ""
    packet_id: int | None = None
    #: Bytes of the same broken packet recorded just before (to find its passwords).
    context: bytes = b""


@dataclass
class Splitter:
    """Cuts one direction's byte stream into segments, whatever the chunking.

    A broken packet is recorded as soon as the framing gives up on it; the bytes that follow
    it up to the next start byte (the rest of that packet, as the sender meant it) become a
    garbage segment that remembers the broken start, so that masking still sees the packet.
    """

    decoder: adapter.Decoder = field(default_factory=adapter.Decoder)
    raw: bytearray = field(default_factory=bytearray)
    raw_ts: float = 0.0
    context: bytes = b""

    def feed(self, chunk: bytes, ts: float) -> list[Segment]:
        """Segments completed by ``chunk`` (received at ``ts``), in order."""
        if not chunk:
            return []
        events = self.decoder.feed(chunk)
        if any(not isinstance(ev, adapter.Packet) for ev in events):
            # Something broke in this chunk: go back to where the chunk began (a fresh decoder
            # fed the unfinished segment is in that state) and look at it byte by byte.
            self.decoder = adapter.Decoder()
            self.decoder.feed(bytes(self.raw))
            return self._feed_bytes(chunk, ts)
        return self._feed_packets(chunk, ts, events)

    def _feed_packets(self, chunk: bytes, ts: float, events: list[Any]) -> list[Segment]:
        """The usual case, a chunk of whole packets: each packet began at the last FE before its
        end, and its length on the wire is that of its encoding (escaping is unambiguous)."""
        out: list[Segment] = []
        buf = bytes(self.raw) + chunk
        old, pos = len(self.raw), 0
        for ev in events:
            start = buf.index(adapter.STX, pos)
            if start > pos:
                out.append(self._garbage(buf[pos:start], ts if start > old else self.raw_ts, pos == 0))
            end = start + adapter.wire_length(ev)
            out.append(Segment(OK, buf[start:end], ts, packet=ev, packet_id=ev.id))
            self.context = b""
            pos = end
        rest = buf[pos:]
        begins = rest.find(adapter.STX)
        if begins > 0:
            out.append(self._garbage(rest[:begins], ts if pos + begins > old else self.raw_ts, pos == 0))
            rest = rest[begins:]
        if begins >= 0:
            self.context = b""
        self.raw = bytearray(rest)
        self.raw_ts = ts
        return out

    def _garbage(self, raw: bytes, ts: float, continues: bool) -> Segment:
        context = self.context if continues else b""
        reason = "продолжение битого пакета" if context else "байты вне пакета"
        return Segment(GARBAGE, raw, ts, reason=reason, context=context)

    def _feed_bytes(self, chunk: bytes, ts: float) -> list[Segment]:
        out: list[Segment] = []
        for byte in chunk:
            events = self.decoder.feed(bytes((byte,)))
            if byte == adapter.STX:
                # A new start byte: what came before is a packet cut short or garbage.
                self._flush(out, events[0] if events else None)
                self.context = b""
            self.raw.append(byte)
            self.raw_ts = ts
            for ev in events:
                if byte == adapter.STX:
                    continue
                if isinstance(ev, adapter.Packet):
                    out.append(Segment(OK, bytes(self.raw), ts, packet=ev, packet_id=ev.id))
                    self.raw.clear()
                else:
                    self.context = bytes(self.raw)
                    self._flush(out, ev)
        return out

    def finish(self, ts: float) -> list[Segment]:
        """The stream ended: what is left is an unfinished packet or garbage."""
        out: list[Segment] = []
        self._flush(out, None)
        return out

    def _flush(self, out: list[Segment], bad: Any) -> None:
        if not self.raw:
            return
        raw = bytes(self.raw)
        self.raw.clear()
        if bad is not None:
            out.append(Segment(BAD, raw, self.raw_ts, reason=bad.reason, packet_id=bad.id))
        elif raw[0] == adapter.STX:
            pid = raw[3] if len(raw) > 3 else None
            out.append(Segment(INCOMPLETE, raw, self.raw_ts, reason="пакет не закончен", packet_id=pid))
        else:
            out.append(self._garbage(raw, self.raw_ts, True))


# --------------------------------------------------------------------------- records


def _identity(cmd: adapter.Command) -> dict[str, Any]:
    return {"cmd": adapter.command_code(cmd), "name": cmd.name, "title": cmd.title}


@dataclass
class _Asked:
    """What a host packet asked, so that the device's answer on the same ID can be read."""

    request: str
    tid: int | None


class Tracer:
    """Both directions of one client session, decoded into JSON-ready records."""

    def __init__(self, session: int, t0: float) -> None:
        self.session = session
        self.t0 = t0
        self.splitters = {HOST: Splitter(), DEVICE: Splitter()}
        self._asked: dict[int, _Asked] = {}
        self._commands: dict[int, adapter.Command | None] = {}

    def feed(self, side: str, ts: float, chunk: bytes) -> list[dict[str, Any]]:
        """Records for the packets ``chunk`` completed on ``side``."""
        return [self.record(side, seg) for seg in self.splitters[side].feed(chunk, ts)]

    def finish(self, ts: float) -> list[dict[str, Any]]:
        """Records for whatever the two streams left unfinished."""
        return [self.record(side, seg) for side, sp in self.splitters.items() for seg in sp.finish(ts)]

    def record(self, side: str, seg: Segment) -> dict[str, Any]:
        """One JSON record for a segment; decoding problems become fields, never exceptions."""
        rec: dict[str, Any] = {
            "time": iso_time(seg.ts), "t": round(seg.ts - self.t0, 6), "session": self.session,
            "from": side, "frame": seg.kind,
        }
        if seg.packet_id is not None:
            rec["id"] = seg.packet_id
        if seg.reason:
            rec["frame_error"] = seg.reason
        raw_hex, data_hex, masked = masked_hex(seg.raw, side == HOST, seg.context)
        if seg.packet is not None:
            try:
                rec.update(self._host(seg.packet) if side == HOST else self._device(seg.packet))
            except Exception as exc:  # a decoding bug must not cost the record
                log.exception("cannot decode packet %s", seg.packet.id)
                rec["decode_error"] = f"внутренняя ошибка разбора: {type(exc).__name__}"
            rec["data"] = data_hex
        rec["raw"] = raw_hex
        if masked:
            rec["masked"] = True
        return rec

    # ------------------------------------------------------------------ host → device

    @staticmethod
    def _open(data: bytes, decode: Callable[[bytes], Any]) -> tuple[dict[str, Any], Any]:
        """The task-buffer part every packet has: (record fields, message or None)."""
        if not data:
            return {"tb": "resend"}, None  # "send me packet <id> again"
        out: dict[str, Any] = {"tb_code": f"{data[0]:02X}"}
        try:
            return out, decode(data)
        except adapter.DecodeError as exc:
            out["decode_error"] = str(exc)
            return out, None

    def _host(self, packet: adapter.Packet) -> dict[str, Any]:
        out, msg = self._open(packet.data, adapter.decode_request)
        if msg is None:
            return out
        out["tb"] = adapter.Request(packet.data[0]).name.lower()
        tid = getattr(msg, "tid", None)
        if hasattr(msg, "ack_tid"):
            out["ack_tid"] = msg.ack_tid
        if hasattr(msg, "flags"):
            out["flags"] = int(msg.flags)
        if tid is not None:
            out["tid"] = tid
        task = getattr(msg, "task", None)
        if task is not None:
            cmd, described = self._task(task)
            out.update(described)
            self._commands[tid] = cmd
        elif (cmd := self._commands.get(tid)) is not None:
            out.update(_identity(cmd))  # Ack / Req: the task it is about
        self._asked[packet.id] = _Asked(out["tb"], tid)
        return out

    def _task(self, task: bytes) -> tuple[adapter.Command | None, dict[str, Any]]:
        command_bytes = task[adapter.PASSWORD_BYTES:]
        if not command_bytes:
            return None, {"decode_error": "задание короче пароля и кода команды"}
        cmd = adapter.find_command(command_bytes)
        if cmd is None:
            return None, {"cmd": f"{command_bytes[0]:02X}"}
        out = _identity(cmd)
        try:
            fields = adapter.decode_command(cmd, command_bytes)
        except adapter.DecodeError as exc:
            secret = any(adapter.is_secret(s.label) for s in adapter.request_spans(cmd))
            # A codec message may quote the bytes it choked on: never a password's.
            out["decode_error"] = "поля не разобраны" if secret else str(exc)
            return cmd, out
        out["fields"] = {k: MASKED_VALUE if adapter.is_secret(k) else adapter.json_value(v) for k, v in fields.items()}
        return cmd, out

    # ------------------------------------------------------------------ device → host

    def _device(self, packet: adapter.Packet) -> dict[str, Any]:
        out, answer = self._open(packet.data, adapter.decode_answer)
        if answer is None:
            return out
        out["tb"] = answer.status.name.lower()
        asked = self._asked.get(packet.id)
        if answer.tid is not None:
            tid: int | None = answer.tid
        else:
            tid = asked.tid if asked is not None else None
            if asked is not None:
                out["answers"] = asked.request
        if tid is not None:
            out["tid"] = tid
        about_task = answer.tid is not None or (asked is not None and asked.request in ("add", "req", "ack_add"))
        cmd = self._commands.get(tid) if about_task and tid is not None else None
        if cmd is not None:
            out.update(_identity(cmd))
        if answer.reply and adapter.carries_reply(answer.status):
            out.update(self._reply(cmd, answer.reply))
        elif answer.reply:
            out["status_data"] = hex_bytes(answer.reply)  # e.g. B4's index of the bad parameter
        return out

    def _reply(self, cmd: adapter.Command | None, reply: bytes) -> dict[str, Any]:
        out: dict[str, Any] = {}
        error = None
        if cmd is None:
            error = adapter.reply_error(reply)
        else:
            try:
                fields, error = adapter.decode_reply(cmd, reply)
            except adapter.DecodeError as exc:
                out["decode_error"] = str(exc)
                error = adapter.reply_error(reply)
            else:
                if fields is not None:
                    out["fields"] = {k: adapter.json_value(v) for k, v in fields.items()}
        if error is not None:
            code, ext = error
            out["error"] = {"code": code, "ext": ext, "text": adapter.error_text(code, ext)}
        return out
