"""Where the passwords lie in a host packet: one definition for the link's DEBUG hex dumps and
the wire tap.

The access password opens every task body (taskbuf), and a command may carry a password field
of its own (56 "enter mode"): both are found from the definitions that encode them — the task
buffer's header length and the command table's field layout — so a new command with a password
field is masked in the log and the trace without an edit here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import commands, taskbuf


def task_start(data: bytes) -> int | None:
    """Offset of the task body (access password, command) in a host request's DATA, if any."""
    if not data:
        return None
    if data[0] == taskbuf.Request.ADD:
        return len(taskbuf.encode_request(taskbuf.Add(0, b"")))
    if data[0] == taskbuf.Request.ACK_ADD:
        return len(taskbuf.encode_request(taskbuf.AckAdd(0, 0, b"")))
    return None


def field_layout(fields: Iterable[Any], start: int) -> list[tuple[str, int, int | None]]:
    """(name, start, end) of each field with a fixed place; ``end`` None: to the end. Nothing
    after a field of variable size has a fixed place."""
    out: list[tuple[str, int, int | None]] = []
    pos: int | None = start
    for f in fields:
        if pos is None:
            break
        size = f.kind.size
        end = None if size is None else pos + size
        out.append((f.name, pos, end))
        pos = end
    return out


def is_secret(field_name: str) -> bool:
    """A field that holds a password (never logged, never shown)."""
    return "password" in field_name.lower()


def secret_ranges(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of passwords in a host packet's DATA (a truncated packet too): the access
    password of the task and any command field named as a password."""
    start = task_start(data)
    if start is None:
        return []
    ranges = [(start, start + taskbuf.PASSWORD_BYTES)]
    cmd_start = start + taskbuf.PASSWORD_BYTES
    cmd = commands.lookup(data[cmd_start:])
    if cmd is not None:
        for name, a, b in field_layout(cmd.request, len(cmd.prefix)):
            if is_secret(name):
                ranges.append((cmd_start + a, len(data) if b is None else cmd_start + b))
    return [(a, min(b, len(data))) for a, b in ranges if a < len(data)]


def mask(data: bytes) -> bytes:
    """``data`` with every password byte replaced by ``*``."""
    ranges = secret_ranges(data)
    if not ranges:
        return data
    out = bytearray(data)
    for a, b in ranges:
        out[a:b] = b"*" * (b - a)
    return bytes(out)
