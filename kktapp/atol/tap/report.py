"""Reading a trace back: ``--show`` as a Russian table, ``--compare`` of two traces.

The compare lines two traces of the same operation up packet by packet (who sent it, the
task-buffer code, the command), then shows, for each pair, which bytes of DATA differ and in
which field. Packet IDs, TIds and CRCs are numbering, different in every run, and are not
compared; masked password bytes compare equal.
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
    """A run of differing DATA bytes inside one field."""

    start: int
    end: int
    label: str
    a: list[str]
    b: list[str]

    def __str__(self) -> str:
        where = f"байт {self.start}" if self.end - self.start == 1 else f"байты {self.start}–{self.end - 1}"
        return f"{where} ({self.label}): {' '.join(self.a) or '—'} ≠ {' '.join(self.b) or '—'}"


def _key(rec: dict[str, Any]) -> tuple[Any, ...]:
    if rec.get("frame") != "ok":
        return rec.get("from"), rec.get("frame")
    return rec.get("from"), rec.get("tb_code", rec.get("tb")), rec.get("cmd")


def _tokens(rec: dict[str, Any]) -> list[str]:
    text = rec.get("data") if rec.get("frame") == "ok" else rec.get("raw")
    return text.split() if text else []


def _numbering(rec: dict[str, Any]) -> set[int]:
    if rec.get("frame") != "ok" or not rec.get("tb_code"):
        return set()
    code = int(rec["tb_code"], 16)
    offsets = adapter.request_numbering(code) if rec.get("from") == HOST else adapter.answer_numbering(code)
    return set(offsets)


def _spans(rec: dict[str, Any], tokens: list[str]) -> list[adapter.Span]:
    if rec.get("frame") != "ok":
        return []
    data = bytes(0 if t == MASK else int(t, 16) for t in tokens)
    try:
        return adapter.packet_spans(rec.get("from") == HOST, data, rec.get("name"))
    except adapter.DecodeError:
        return []


def _label(spans: list[adapter.Span], offset: int) -> str:
    for span in reversed(spans):
        if span.covers(offset):
            return span.label
    return "пакет" if spans else "байты"


def diff_packets(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    """Where two packets' bytes differ, field by field (numbering left out)."""
    ta, tb = _tokens(a), _tokens(b)
    skip = _numbering(a) | _numbering(b)
    spans = _spans(a, ta)
    diffs: list[Difference] = []
    for i in range(max(len(ta), len(tb))):
        if i in skip:
            continue
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == y:
            continue
        label = _label(spans, i)
        last = diffs[-1] if diffs else None
        if last is not None and last.end == i and last.label == label:
            last.end = i + 1
        else:
            last = Difference(i, i + 1, label, [], [])
            diffs.append(last)
        if x is not None:
            last.a.append(x)
        if y is not None:
            last.b.append(y)
    return diffs


def _row(a: dict[str, Any] | None, b: dict[str, Any] | None, mark: str) -> str:
    rec = a or b or {}
    label = command_label(rec) or _buffer(rec)
    return (f"{(a or {}).get('seq', '-'):>5}  {(b or {}).get('seq', '-'):>5}  {SIDES.get(rec.get('from'), '?'):<8}  "
            f"{rec.get('tb_code', ''):<2}  {label:<40.40}  {mark}")


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]], write: Write, *,
            names: tuple[str, str] = ("A", "B")) -> int:
    """Line up two traces and report the differences; returns how many rows differ."""
    pa, pb = packets(a), packets(b)
    write(f"A = {names[0]} ({len(pa)} пакетов), B = {names[1]} ({len(pb)} пакетов).\n")
    write("Номера пакетов и заданий (ID, TId) и CRC не сравниваются, скрытые пароли считаются равными.\n\n")
    write(f"{'A №':>5}  {'B №':>5}  {'кто':<8}  {'бф':<2}  {'команда':<40}  итог\n")
    same = differ = only_a = only_b = 0
    matcher = difflib.SequenceMatcher(None, [_key(r) for r in pa], [_key(r) for r in pb], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for ra, rb in zip(pa[i1:i2], pb[j1:j2], strict=True):
                diffs = diff_packets(ra, rb)
                if diffs:
                    differ += 1
                    write(_row(ra, rb, "≠") + "\n")
                    for d in diffs:
                        write(f"{'':>14}{d}\n")
                else:
                    same += 1
                    write(_row(ra, rb, "=") + "\n")
            continue
        for ra in pa[i1:i2]:
            only_a += 1
            write(_row(ra, None, "только в A") + "\n")
        for rb in pb[j1:j2]:
            only_b += 1
            write(_row(None, rb, "только в B") + "\n")
    write(f"\nИтого: совпало {same}, различается {differ}, только в A {only_a}, только в B {only_b}.\n")
    return differ + only_a + only_b
