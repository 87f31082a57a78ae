"""Reading a trace back: ``--show`` as a Russian table, ``--compare`` of two traces.

The compare lines two traces of the same operation up packet by packet, each direction on its
own (host packets by task-buffer code and command, device answers by the command they answer),
then shows, for each pair, a differing status or task flags and which bytes of the command or
its reply differ, in which field. Packet IDs, TIds and CRCs are numbering, different in every
run, and are not compared; masked password bytes compare equal.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import adapter
from .decode import HOST, MASK

Write = Callable[[str], Any]

SIDES = {HOST: "ПК → ККТ", "device": "ККТ → ПК"}
TB_NAMES = {
    "add": "задание", "ack": "подтверждение", "req": "запрос задания", "abort": "сброс буфера",
    "ack_add": "подтв. + задание", "resend": "повторить пакет",
    "pending": "в очереди", "in_progress": "выполняется", "result": "выполнено", "error": "ошибка",
    "stopped": "остановлено", "async_result": "выполнено (позже)", "async_error": "ошибка (позже)",
    "waiting": "ожидание", "overflow": "буфер полон", "already_exists": "TId уже занят",
    "not_found": "нет задания", "illegal_value": "неверный параметр",
}
FRAMES = {
    "bad": "битый пакет", "garbage": "байты вне пакета", "incomplete": "обрыв посреди пакета",
    "undecoded": "не разобрано",
}
#: Widest "подробности" cell in --show; --raw shows every byte anyway.
DETAIL_WIDTH = 110


class TraceError(ValueError):
    """A trace file that cannot be read."""


def load(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a trace file, in order."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TraceError(f"{path}, строка {n}: не JSON ({exc.msg})") from None
                if not isinstance(rec, dict):
                    raise TraceError(f"{path}, строка {n}: ожидался объект JSON")
                records.append(rec)
    except OSError as exc:
        raise TraceError(f"не могу прочитать {path}: {exc.strerror or exc}") from None
    return records


def packets(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records about bytes on the wire (not relay events)."""
    return [r for r in records if "frame" in r]


# --------------------------------------------------------------------------- --show


def _hex_id(value: Any) -> str:
    return f"{value:02X}" if isinstance(value, int) else ""


def _buffer(rec: dict[str, Any]) -> str:
    if rec.get("frame", "ok") != "ok":
        return FRAMES.get(rec["frame"], rec["frame"])
    name = TB_NAMES.get(rec.get("tb", ""), rec.get("tb", ""))
    return f"{rec.get('tb_code', '')} {name}".strip()


def command_label(rec: dict[str, Any]) -> str:
    """``92 открытие чека``, or the bare code of a command the project does not know."""
    if rec.get("cmd") is None:
        return ""
    title = rec.get("title") or "неизвестная команда"
    return f"{rec['cmd']} {title}"


def _value(value: Any) -> str:
    if isinstance(value, str):
        return f"«{value}»"
    return json.dumps(value, ensure_ascii=False)


def details(rec: dict[str, Any]) -> str:
    """The decoded content of a packet in one line."""
    parts = []
    if rec.get("frame_error") and rec.get("frame") != "ok":
        parts.append(rec["frame_error"])
    if "error" in rec:
        err = rec["error"]
        parts.append(f"ошибка {err['code']:#04x}/{err['ext']}: {err['text']}")
    if "status_data" in rec:
        parts.append(f"байты после статуса: {rec['status_data']}")
    if "fields" in rec:
        parts.append(", ".join(f"{k}={_value(v)}" for k, v in rec["fields"].items()))
    if rec.get("decode_error"):
        parts.append(f"не разобрано: {rec['decode_error']}")
    if rec.get("tb") == "add" and rec.get("cmd") and rec.get("name") is None and "decode_error" not in rec:
        parts.append("команда не описана в проекте, см. байты")
    text = "; ".join(p for p in parts if p)
    return text if len(text) <= DETAIL_WIDTH else text[:DETAIL_WIDTH - 1] + "…"


def _event_line(rec: dict[str, Any]) -> str:
    event = rec.get("event")
    if event == "connect":
        return f"— сеанс {rec.get('session')}: клиент {rec.get('client')} подключён к ККТ {rec.get('device')}"
    if event == "disconnect":
        who = "клиент" if rec.get("closed_by") == HOST else "ККТ"
        return (f"— сеанс {rec.get('session')} окончен: соединение закрыл(а) {who}; байт от клиента "
                f"{rec.get('bytes_from_host')}, от ККТ {rec.get('bytes_from_device')}")
    if event == "refused":
        return f"— отклонён клиент {rec.get('client')}: {rec.get('detail', '')}"
    if event == "device_unreachable":
        return f"— клиент {rec.get('client')} отключён: {rec.get('detail', '')}"
    return f"— {event}: {json.dumps(rec, ensure_ascii=False)}"


def show(records: list[dict[str, Any]], write: Write, *, raw: bool = False) -> None:
    """Print the trace as a table: one row per packet, relay events between them."""
    header = (f"{'№':>5}  {'время, с':>9}  {'кто':<8}  {'пак':<3}  {'буфер':<24}  {'TId':<3}  "
              f"{'команда':<38}  подробности")
    write(header + "\n")
    write("-" * len(header) + "\n")
    for rec in records:
        if "frame" not in rec:
            write(_event_line(rec) + "\n")
            continue
        row = (f"{rec.get('seq', ''):>5}  {rec.get('t', 0):>+9.3f}  {SIDES.get(rec.get('from'), '?'):<8}  "
               f"{_hex_id(rec.get('id')):<3}  {_buffer(rec):<24.24}  {_hex_id(rec.get('tid')):<3}  "
               f"{command_label(rec):<38.38}  {details(rec)}")
        write(row.rstrip() + "\n")
        if raw:
            write(f"{'':>7}байты: {rec.get('raw', '')}\n")
    n = len(packets(records))
    bad = sum(1 for r in packets(records) if r.get("frame") != "ok")
    write(f"\nПакетов: {n}, из них не разобрано кадров: {bad}.\n")


# --------------------------------------------------------------------------- --compare


@dataclass
class Difference:
    """A run of differing bytes inside one field (offsets count from the command code or from
    the first byte of the command's reply), or a differing task-buffer status or flags."""

    start: int
    end: int
    label: str
    a: list[str]
    b: list[str]

    def __str__(self) -> str:
        if self.start < 0:
            where = "буфер заданий"
        elif self.end - self.start == 1:
            where = f"байт {self.start}"
        else:
            where = f"байты {self.start}–{self.end - 1}"
        return f"{where} ({self.label}): {' '.join(self.a) or '—'} ≠ {' '.join(self.b) or '—'}"


def _key(rec: dict[str, Any]) -> tuple[Any, ...]:
    if rec.get("frame") != "ok":
        return (rec.get("frame"),)
    if rec.get("from") == HOST:
        return rec.get("tb_code", rec.get("tb")), rec.get("cmd")
    # A device answer lines up with the same command's answer of the same kind (final or
    # not), whatever its status: one run may answer A3 at once where another says A1 and
    # pushes A6 later; the status itself is compared below.
    code = rec.get("tb_code")
    final = code is not None and adapter.is_final(int(code, 16))
    return (rec.get("cmd"), final) if rec.get("cmd") else (code or rec.get("tb"),)


def _split(rec: dict[str, Any]) -> tuple[list[str], list[adapter.Span]]:
    """The command part of a packet (command bytes, or the reply after the status) and the
    spans of its fields, counted from its first byte. Broken frames: all their bytes."""
    if rec.get("frame") != "ok":
        return (rec.get("raw") or "").split(), []
    tokens = (rec.get("data") or "").split()
    data = bytes(0 if t == MASK else int(t, 16) for t in tokens)
    try:
        spans = adapter.packet_spans(rec.get("from") == HOST, data, rec.get("name"))
    except adapter.DecodeError:
        spans = []
    start = next((s.end for s in spans if s.label in ("пароль доступа", "статус") and s.end is not None), None)
    if start is None:
        # Ack / Req / Abort / resend: code and TId only, and the code is compared as such.
        return ([], []) if rec.get("from") == HOST else (tokens, spans)
    body = [adapter.Span(s.label, s.start - start, None if s.end is None else s.end - start)
            for s in spans if s.start >= start]
    return tokens[start:], body


def _label(spans: list[adapter.Span], offset: int) -> str:
    for span in reversed(spans):
        if span.covers(offset):
            return span.label
    return "пакет" if spans else "байты"


def diff_packets(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    """Where two packets differ: status / flags, then the command's bytes field by field.
    Packet IDs, TIds and CRCs are numbering and are not compared."""
    diffs: list[Difference] = []
    for key, label in (("tb_code", "код"), ("flags", "флаги")):
        if a.get(key) != b.get(key):
            diffs.append(Difference(-1, -1, label, [str(a.get(key, "—"))], [str(b.get(key, "—"))]))
    ta, spans = _split(a)
    tb, _ = _split(b)
    for i in range(max(len(ta), len(tb))):
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == y:
            continue
        label = _label(spans, i)
        last = diffs[-1] if diffs else None
        if last is None or last.end != i or last.label != label:
            last = Difference(i, i, label, [], [])
            diffs.append(last)
        last.end = i + 1
        if x is not None:
            last.a.append(x)
        if y is not None:
            last.b.append(y)
    return diffs


def _row(a: dict[str, Any] | None, b: dict[str, Any] | None, mark: str) -> str:
    rec = a or b or {}
    label = command_label(rec) or _buffer(rec)
    return (f"{(a or {}).get('seq', '-'):>5}  {(b or {}).get('seq', '-'):>5}  "
            f"{_buffer(rec):<24.24}  {label:<40.40}  {mark}")


@dataclass
class _Tally:
    same: int = 0
    differ: int = 0
    only_a: int = 0
    only_b: int = 0
    #: Pairs found in another place in the other run (counted in same/differ as well).
    moved: int = 0


def _pair(ra: dict[str, Any], rb: dict[str, Any], tally: _Tally, write: Write, moved: bool = False) -> None:
    diffs = diff_packets(ra, rb)
    note = " ↕" if moved else ""
    tally.moved += moved
    if not diffs:
        tally.same += 1
        write(_row(ra, rb, "=" + note) + "\n")
        return
    tally.differ += 1
    write(_row(ra, rb, "≠" + note) + "\n")
    for d in diffs:
        write(f"{'':>14}{d}\n")


def _compare_side(pa: list[dict[str, Any]], pb: list[dict[str, Any]], tally: _Tally, write: Write) -> None:
    matcher = difflib.SequenceMatcher(None, [_key(r) for r in pa], [_key(r) for r in pb], autojunk=False)
    rows: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            rows += zip(pa[i1:i2], pb[j1:j2], strict=True)
        else:
            rows += [(ra, None) for ra in pa[i1:i2]] + [(None, rb) for rb in pb[j1:j2]]
    # The same packet in another place: the device sends an Add's answer and an earlier task's
    # result in the order the host's bytes reached it, which is timing, not what was said.
    # It is paired with its like (shown where run A has it, marked ↕), not reported as missing.
    later: dict[tuple[Any, ...], list[int]] = {}
    for index, (ra, rb) in enumerate(rows):
        if ra is None and rb is not None:
            later.setdefault(_key(rb), []).append(index)
    moved: set[int] = set()
    for index, (ra, rb) in enumerate(rows):
        if rb is None and ra is not None and later.get(_key(ra)):
            other = later[_key(ra)].pop(0)
            rows[index] = (ra, rows[other][1])
            moved.add(index)
            rows[other] = (None, None)
    for index, (ra, rb) in enumerate(rows):
        if ra is not None and rb is not None:
            _pair(ra, rb, tally, write, moved=index in moved)
        elif ra is not None:
            tally.only_a += 1
            write(_row(ra, None, "только в A") + "\n")
        elif rb is not None:
            tally.only_b += 1
            write(_row(None, rb, "только в B") + "\n")


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]], write: Write, *,
            names: tuple[str, str] = ("A", "B")) -> int:
    """Line up two traces and report the differences; returns how many rows differ.

    Each direction is lined up on its own: how the two streams interleave depends on timing,
    not on what was said.
    """
    pa, pb = packets(a), packets(b)
    write(f"A = {names[0]} ({len(pa)} пакетов), B = {names[1]} ({len(pb)} пакетов).\n")
    write("Номера пакетов и заданий (ID, TId) и CRC не сравниваются, скрытые пароли считаются равными;\n"
          "байты считаются от кода команды (в ответе — от первого байта ответа команды).\n")
    tally = _Tally()
    for side in (HOST, "device"):
        write(f"\n{SIDES[side]}\n{'A №':>5}  {'B №':>5}  {'буфер':<24}  {'команда':<40}  итог\n")
        _compare_side([r for r in pa if r.get("from") == side], [r for r in pb if r.get("from") == side],
                      tally, write)
    write(f"\nИтого: совпало {tally.same}, различается {tally.differ}, только в A {tally.only_a}, "
          f"только в B {tally.only_b}. Пакетов в другом порядке (↕): {tally.moved}.\n")
    return tally.differ + tally.only_a + tally.only_b
