"""The tap's only window on the protocol definitions (framing, task buffer, command table).

Everything the tap knows about ATOL comes through here from :mod:`..framing`,
:mod:`..taskbuf` and :mod:`..commands`, so when those modules change their model (reply heads,
new commands, task-buffer rules) the trace follows without edits elsewhere in the tap: the
registry is asked for a command by its bytes, and the command itself decodes its fields.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ...errors import DeviceError
from .. import commands, errors, framing, masking, taskbuf

STX = framing.STX
ESC = framing.ESC
#: Unescaped stand-ins for FE/FD after ESC (framing's escape table, inverted).
UNESCAPE = {framing.escape(bytes((b,)))[1]: b for b in (framing.STX, framing.ESC)}
Decoder = framing.Decoder
Packet = framing.Packet
BadPacket = framing.BadPacket
Request = taskbuf.Request
Status = taskbuf.Status
PASSWORD_BYTES = taskbuf.PASSWORD_BYTES
Command = commands.Command
#: Errors a malformed message raises while the project's own definitions parse it.
DecodeError = (ValueError, KeyError, IndexError, TypeError)


@dataclass(frozen=True)
class Span:
    """A named byte range of a message: ``end`` None means "to the end"."""

    label: str
    start: int
    end: int | None

    def covers(self, offset: int) -> bool:
        """``offset`` lies inside the span."""
        return offset >= self.start and (self.end is None or offset < self.end)


def wire_length(packet: Packet) -> int:
    """Bytes a packet takes on the wire (its encoding is the only one the framing accepts)."""
    return len(framing.encode_packet(packet.id, packet.data))


# --------------------------------------------------------------------------- task buffer


def decode_request(data: bytes) -> taskbuf.Message:
    """A host packet's DATA as a task-buffer message (taskbuf.TaskBufError if it is none)."""
    return taskbuf.decode_request(data)


def decode_answer(data: bytes) -> taskbuf.Answer:
    """A device packet's DATA as a task-buffer answer (taskbuf.TaskBufError if it is none)."""
    return taskbuf.decode_answer(data)


def is_final(code: int) -> bool:
    """A status byte that ends its task (done, failed, stopped)."""
    try:
        return Status(code) in taskbuf.FINAL
    except ValueError:
        return False


def carries_reply(status: Status) -> bool:
    """The answer's bytes after the status (and TId) are the command's reply."""
    return status in taskbuf.WITH_REPLY


task_start = masking.task_start


# --------------------------------------------------------------------------- commands


def find_command(command_bytes: bytes) -> Command | None:
    """The command these bytes (after the access password) belong to, None when unknown."""
    try:
        return commands.lookup(command_bytes)
    except DecodeError:
        return None


def command_code(cmd: Command) -> str:
    """The command's code as sent, in hex: ``92``, ``A4 30``."""
    return cmd.prefix.hex(" ").upper()


def _spans(fields: tuple[Any, ...], start: int) -> list[Span]:
    return [Span(*placed) for placed in masking.field_layout(fields, start)]


def request_spans(cmd: Command) -> list[Span]:
    """Where each request field lies in the command bytes."""
    return [Span("код команды", 0, len(cmd.prefix)), *_spans(cmd.request, len(cmd.prefix))]


def reply_spans(cmd: Command) -> list[Span]:
    """Where each reply field lies in a successful reply."""
    head = getattr(cmd, "reply_head", b"")
    spans = [Span("заголовок ответа", 0, len(head))] if head else []
    return spans + _spans(cmd.reply, len(head))


is_secret = masking.is_secret


def decode_command(cmd: Command, command_bytes: bytes) -> dict[str, Any]:
    """Request fields, by the command's own layout (raises on a malformed request)."""
    return refine_fields(cmd.decode_request(command_bytes))


def refine_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """An FFD tag's value bytes read as the tag's type (text, number, date) where the command
    layer knows how; the bytes stay as they are otherwise."""
    decode_value = getattr(commands, "decode_attribute_value", None)
    tag, value = fields.get("tag"), fields.get("value")
    if decode_value is not None and isinstance(tag, int) and isinstance(value, (bytes, bytearray)):
        try:
            return {**fields, "value": decode_value(tag, bytes(value))}
        except DecodeError:
            pass
    return fields


def decode_reply(cmd: Command, reply: bytes) -> tuple[dict[str, Any] | None, tuple[int, int] | None]:
    """(fields, None) for a good reply, (None, (err, ext)) for a device error; raises if neither."""
    try:
        return cmd.decode_reply(reply), None
    except DeviceError as exc:
        return None, (int(exc.code), int(getattr(exc, "ext", 0) or 0))


def reply_error(reply: bytes) -> tuple[int, int] | None:
    """(err, ext) when a reply of an unknown command has the generic error form."""
    return commands.reply_error(reply)


def error_text(code: int, ext: int = 0) -> str:
    """The device error's Russian text."""
    return errors.error_text(code, ext)


# --------------------------------------------------------------------------- secrets


secret_ranges = masking.secret_ranges


# --------------------------------------------------------------------------- JSON


def json_value(value: Any) -> Any:
    """A decoded field value as JSON: bytes in hex, decimals and dates as text."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (int, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex(" ").upper()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


# --------------------------------------------------------------------------- layout of a whole packet


def command_by_name(name: str | None) -> Command | None:
    """The registry's command of this name (as a trace records it), None when unknown."""
    return commands.COMMANDS.get(name) if name else None


def packet_spans(from_host: bool, data: bytes, name: str | None = None) -> list[Span]:
    """Named byte ranges of a packet's DATA (best effort; masked bytes may be given as zeros).

    ``name`` is the command a device answer belongs to (the host side finds it in the bytes).
    """
    if not data:
        return []
    if from_host:
        start = task_start(data)
        if start is None:
            return [Span("запрос буфера", 0, None)]
        cmd_start = start + PASSWORD_BYTES
        spans = [Span("заголовок задания", 0, start), Span("пароль доступа", start, cmd_start)]
        cmd = find_command(data[cmd_start:])
        if cmd is None:
            return spans + [Span("команда", cmd_start, None)]
        return spans + [Span(s.label, cmd_start + s.start, None if s.end is None else cmd_start + s.end)
                        for s in request_spans(cmd)]
    try:
        answer = decode_answer(data)
    except DecodeError:
        return [Span("ответ", 0, None)]
    reply_start = len(data) - len(answer.reply)
    spans = [Span("статус", 0, reply_start)]
    cmd = command_by_name(name)
    head = getattr(cmd, "reply_head", None)
    if cmd is None or head is None or not answer.reply.startswith(head):
        return spans + [Span("ответ команды", reply_start, None)]
    return spans + [Span(s.label, reply_start + s.start, None if s.end is None else reply_start + s.end)
                    for s in reply_spans(cmd)]
