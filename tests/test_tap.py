"""The wire tap without sockets: stream decoding, masking, --show and --compare."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kktapp.atol import commands, taskbuf
from kktapp.atol.framing import encode_packet
from kktapp.atol.tap import __main__ as cli
from kktapp.atol.tap import compare, load, show
from kktapp.atol.tap.decode import DEVICE, HOST, Tracer, masked_hex

ACCESS = 4321  # not the factory 0000: its digits must never show up
MODE_PASSWORD = 98765432


def add(tid: int, command: bytes, password: int = ACCESS, flags: taskbuf.Flags = taskbuf.Flags.NONE) -> bytes:
    return taskbuf.encode_request(taskbuf.Add(tid, taskbuf.encode_task(password, command), flags))


def answer(status: taskbuf.Status, reply: bytes = b"", tid: int | None = None) -> bytes:
    return taskbuf.encode_answer(status, reply, tid)


def run(*steps: tuple[str, bytes]) -> list[dict]:
    """Feed (side, wire bytes) steps to one tracer; all records, the stream ends after the last."""
    tracer = Tracer(1, 1000.0)
    records = []
    for n, (side, raw) in enumerate(steps):
        records += tracer.feed(side, 1000.0 + n / 1000, raw)
    return records + tracer.finish(1001.0)


def render(records: list[dict]) -> str:
    out = io.StringIO()
    show(records, out.write, raw=True)
    return out.getvalue() + "\n".join(json.dumps(r, ensure_ascii=False) for r in records)


OPEN = commands.get("open_receipt").encode(receipt_type=1)
ENTER = commands.get("enter_mode").encode(mode=1, password=MODE_PASSWORD)
PAYMENT = commands.get("payment").encode(payment_type=1, amount=10_000)


# --------------------------------------------------------------------------- decoding


def test_task_and_its_answers_are_decoded_by_the_command_table():
    ok = commands.get("payment").encode_reply(remainder=0, change=1010)
    records = run(
        (HOST, encode_packet(5, add(7, PAYMENT, flags=taskbuf.Flags.NEED_RESULT))),
        (DEVICE, encode_packet(5, answer(taskbuf.Status.IN_PROGRESS))),
        (DEVICE, encode_packet(0xF0, answer(taskbuf.Status.ASYNC_RESULT, ok, tid=7))),
    )
    request, pending, result = records
    assert request["from"] == HOST and request["frame"] == "ok" and request["id"] == 5
    assert (request["tb"], request["tb_code"], request["tid"], request["flags"]) == ("add", "C1", 7, 1)
    assert (request["cmd"], request["name"], request["title"]) == ("99", "payment", "оплата")
    assert request["fields"] == {"flags": 0, "payment_type": 1, "amount": 10_000}
    assert pending["tb"] == "in_progress" and pending["tid"] == 7 and pending["name"] == "payment"
    assert result["id"] == 0xF0 and result["tb"] == "async_result" and result["tid"] == 7
    assert result["fields"] == {"remainder": 0, "change": 1010}
    assert result["raw"] == encode_packet(0xF0, answer(taskbuf.Status.ASYNC_RESULT, ok, tid=7)).hex(" ").upper()
    assert all(r["session"] == 1 and r["time"].startswith("1970-01-01T00:16:40") for r in records)


def test_ack_and_req_name_the_task_they_are_about():
    records = run(
        (HOST, encode_packet(1, add(4, OPEN, flags=taskbuf.Flags.NEED_RESULT))),
        (DEVICE, encode_packet(1, answer(taskbuf.Status.PENDING))),
        (HOST, encode_packet(2, taskbuf.encode_request(taskbuf.Req(4)))),
        (DEVICE, encode_packet(2, answer(taskbuf.Status.RESULT, commands.get("open_receipt").encode_reply()))),
        (HOST, encode_packet(3, taskbuf.encode_request(taskbuf.Ack(4)))),
        (DEVICE, encode_packet(3, answer(taskbuf.Status.RESULT))),
    )
    assert [(r["from"], r["tb"], r["tid"], r.get("name")) for r in records] == [
        (HOST, "add", 4, "open_receipt"), (DEVICE, "pending", 4, "open_receipt"),
        (HOST, "req", 4, "open_receipt"), (DEVICE, "result", 4, "open_receipt"),
        (HOST, "ack", 4, "open_receipt"), (DEVICE, "result", 4, None),
    ]
    assert [r.get("answers") for r in records if r["from"] == DEVICE] == ["add", "req", "ack"]


def test_refusal_bytes_are_not_read_as_a_command_reply():
    records = run(
        (HOST, encode_packet(1, add(1, OPEN))),
        (DEVICE, encode_packet(1, answer(taskbuf.Status.ILLEGAL_VALUE) + b"\x01")),  # B4 + index (TId)
    )
    refusal = records[1]
    assert refusal["tb"] == "illegal_value" and refusal["status_data"] == "01"
    assert "decode_error" not in refusal and "fields" not in refusal
    assert "байты после статуса: 01" in render(records)


def test_device_error_is_named_in_russian():
    records = run(
        (HOST, encode_packet(1, add(1, OPEN))),
        (DEVICE, encode_packet(1, answer(taskbuf.Status.ERROR, commands.encode_error(0x9B)))),
    )
    assert records[1]["error"] == {"code": 0x9B, "ext": 0, "text": "Чек открыт — операция невозможна"}
    assert "ошибка 0x9b/0: Чек открыт" in render(records)


def test_unknown_command_and_bad_task_buffer_code_are_kept_raw():
    code = next(c for c in range(0x20, 0x100) if commands.lookup(bytes((c, 0))) is None)
    unknown = add(2, bytes((code, 0x00, 0x01, 0x02)))
    records = run(
        (HOST, encode_packet(1, unknown)),
        (DEVICE, encode_packet(1, answer(taskbuf.Status.RESULT, b"\x55\x00\x00"))),
        (HOST, encode_packet(2, b"\x99\x01")),
    )
    assert records[0]["cmd"] == f"{code:02X}" and "name" not in records[0]
    assert records[0]["data"].endswith(f"{code:02X} 00 01 02")
    assert records[1]["tb"] == "result" and "error" not in records[1]
    assert records[2]["tb_code"] == "99" and records[2]["decode_error"] and records[2]["raw"]
    text = render(records)
    assert f"{code:02X} неизвестная команда" in text and "команда не описана" in text


def test_corrupt_frame_is_recorded_raw_and_the_next_packet_decodes():
    good = encode_packet(3, add(3, OPEN))
    broken = bytearray(encode_packet(4, add(4, OPEN)))
    broken[-1] ^= 0x55  # CRC
    after = encode_packet(5, taskbuf.encode_request(taskbuf.Abort()))
    records = run((HOST, good + bytes(broken) + b"\x01\x02" + after))
    assert [r["frame"] for r in records] == ["ok", "bad", "garbage", "ok"]
    assert records[1]["frame_error"] == "bad CRC" and records[1]["id"] == 4
    assert records[1]["raw"] == masked_hex(bytes(broken), from_host=True)[0]
    assert records[2]["raw"] == "01 02"
    assert records[3]["tb"] == "abort"
    assert "битый пакет" in render(records)


def test_packet_cut_by_the_end_of_the_connection_is_incomplete():
    raw = encode_packet(9, add(9, PAYMENT))
    records = run((HOST, raw[:7]))
    assert [r["frame"] for r in records] == ["incomplete"] and records[0]["id"] == 9
    assert "обрыв посреди пакета" in render(records)


def test_resend_requests_both_ways():
    records = run((HOST, encode_packet(6, b"")), (DEVICE, encode_packet(6, b"")))
    assert [r["tb"] for r in records] == ["resend", "resend"]


# --------------------------------------------------------------------------- passwords


def _secret_texts() -> list[str]:
    access = taskbuf.encode_task(ACCESS, b"")
    mode = ENTER[2:6]
    return [str(ACCESS), access.hex(" ").upper(), access.hex(" "), access.hex(),
            str(MODE_PASSWORD), mode.hex(" ").upper(), mode.hex(" "), mode.hex()]


def test_passwords_never_appear_in_the_trace_or_the_table():
    corrupt = bytearray(encode_packet(3, add(3, ENTER)))
    corrupt[-1] ^= 0xFF
    bad_len = bytearray(encode_packet(4, add(4, ENTER)))
    bad_len[1] = 0x80  # broken length: the rest looks like garbage to the framing
    ack_add = taskbuf.encode_request(taskbuf.AckAdd(1, 5, taskbuf.encode_task(ACCESS, ENTER)))
    records = run(
        (HOST, encode_packet(1, add(1, ENTER))),
        (HOST, encode_packet(2, ack_add)),
        (HOST, bytes(corrupt)),
        (HOST, bytes(bad_len)),
        (HOST, encode_packet(5, add(5, ENTER))[:9]),  # cut off mid-password
    )
    # ok, ok, bad CRC, bad length + the rest of that packet as garbage, incomplete
    assert [r["frame"] for r in records] == ["ok", "ok", "bad", "bad", "garbage", "incomplete"]
    text = render(records)
    for secret in _secret_texts():
        assert secret not in text, secret
    first = records[0]
    assert first["fields"] == {"mode": 1, "password": "****"} and first["masked"]
    # C1 flags tid | access password | 56 mode | mode password
    assert first["data"].split()[3:5] == ["**", "**"] and first["data"].split()[7:11] == ["**"] * 4
    assert first["raw"].split()[-1] == "**", "the CRC would give the password away"
    assert [bool(r.get("masked")) for r in records] == [True, True, True, False, True, True]


def test_password_bytes_are_masked_where_escaping_moved_them():
    # A TId of 0xFD is escaped on the wire: the password bytes after it sit one byte later.
    raw = encode_packet(1, add(0xFD, ENTER))
    wire, data, masked = masked_hex(raw, from_host=True)
    assert masked and "FD ED" in wire
    assert wire.split()[8:10] == ["**", "**"]


# --------------------------------------------------------------------------- stream chunking


def _frames() -> st.SearchStrategy[bytes]:
    packet = st.builds(encode_packet, st.integers(0, 0xF0).filter(lambda i: i != 0xFE), st.binary(max_size=40))
    corrupted = st.builds(lambda p, i: p[:i] + bytes((p[i] ^ 0x01,)) + p[i + 1:] if len(p) > i else p,
                          packet, st.integers(4, 6))
    garbage = st.binary(min_size=1, max_size=6)
    return st.one_of(packet, packet, corrupted, garbage)


@settings(max_examples=300, deadline=None)
@given(st.lists(_frames(), max_size=12), st.data())
def test_any_chunking_gives_the_same_records_and_every_byte(frames, data):
    stream = b"".join(frames)
    whole = Tracer(1, 0.0)
    expected = whole.feed(DEVICE, 0.0, stream) + whole.finish(0.0)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    tracer = Tracer(1, 0.0)
    got, start = [], 0
    for cut in [*cuts, len(stream)]:
        got += tracer.feed(DEVICE, 0.0, stream[start:cut])
        start = cut
    got += tracer.finish(0.0)
    assert got == expected
    assert b"".join(bytes.fromhex(r["raw"]) for r in got) == stream, "a byte was dropped from the trace"
    one_by_one = Tracer(1, 0.0)
    singles = [r for i in range(len(stream)) for r in one_by_one.feed(DEVICE, 0.0, stream[i:i + 1])]
    assert singles + one_by_one.finish(0.0) == expected


# --------------------------------------------------------------------------- --show / --compare


def _sale(price: int, first_tid: int = 0, first_id: int = 0) -> list[dict]:
    position = commands.get("register_position").encode(name="Молоко", price=price, quantity=1, tax=1)
    close = commands.get("close_receipt").encode(payment_type=1, amount=price)
    steps = []
    for n, command in enumerate((OPEN, position, close)):
        pid, tid = first_id + n, first_tid + n
        steps.append((HOST, encode_packet(pid, add(tid, command, password=0, flags=taskbuf.Flags.NEED_RESULT))))
        done = commands.lookup(command).encode_reply()
        steps.append((DEVICE, encode_packet(pid, answer(taskbuf.Status.RESULT, done))))
    records = run(*steps)
    for seq, rec in enumerate(records, 1):
        rec["seq"] = seq
    return records


def _write(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_compare_ignores_numbering_and_finds_a_one_byte_difference(tmp_path):
    a = _sale(8990)
    same_but_renumbered = _sale(8990, first_tid=0x40, first_id=0x21)
    out = io.StringIO()
    assert compare(a, same_but_renumbered, out.write) == 0
    assert "совпало 6, различается 0" in out.getvalue()

    b = _sale(8991)  # one BCD byte of the price (and of the close sum) differs
    out = io.StringIO()
    assert compare(a, b, out.write) == 2
    text = out.getvalue()
    assert "≠" in text and "различается 2" in text
    assert "(price): 90 ≠ 91" in text and "(amount): 90 ≠ 91" in text

    pa, pb = _write(tmp_path / "a.jsonl", a), _write(tmp_path / "b.jsonl", b)
    out = io.StringIO()
    assert cli.main(["--compare", pa, pb], out=out) == 1
    assert "(price): 90 ≠ 91" in out.getvalue()
    assert cli.main(["--compare", pa, pa], out=io.StringIO()) == 0


def test_compare_lines_an_answer_up_with_the_same_answer_given_later():
    done = commands.get("open_receipt").encode_reply()
    request = (HOST, encode_packet(1, add(1, OPEN, flags=taskbuf.Flags.NEED_RESULT)))
    at_once = run(request, (DEVICE, encode_packet(1, answer(taskbuf.Status.RESULT, done))))
    later = run(request, (DEVICE, encode_packet(1, answer(taskbuf.Status.PENDING))),
                (DEVICE, encode_packet(0xF0, answer(taskbuf.Status.ASYNC_RESULT, done, tid=1))))
    out = io.StringIO()
    assert compare(at_once, later, out.write) == 2
    text = out.getvalue()
    assert "буфер заданий (код): A3 ≠ A6" in text, text
    assert text.count("только в B") == 2 and "A1 в очереди" in text  # the row and the summary


def test_compare_pairs_an_answer_the_device_sent_in_another_order():
    """Two Adds in one write: whether task 1's result or task 2's Add answer comes first is up to
    when the device got the bytes. The same answers in another order are no difference."""
    position = commands.get("register_position").encode(name="Молоко", price=100, quantity=1, tax=1)
    opened = commands.get("open_receipt").encode_reply()
    registered = commands.get("register_position").encode_reply()
    both = encode_packet(1, add(1, OPEN, flags=taskbuf.Flags.NEED_RESULT)) + encode_packet(2, add(2, position))
    pending = (DEVICE, encode_packet(1, answer(taskbuf.Status.PENDING)))
    second = (DEVICE, encode_packet(2, answer(taskbuf.Status.RESULT, registered)))
    result = (DEVICE, encode_packet(0xF0, answer(taskbuf.Status.ASYNC_RESULT, opened, tid=1)))
    a = run((HOST, both), pending, second, result)
    b = run((HOST, both), pending, result, second)
    out = io.StringIO()
    assert compare(a, b, out.write) == 0, out.getvalue()
    text = out.getvalue()
    assert "только в A 0, только в B 0." in text and "в другом порядке (↕): 1." in text, text
    assert text.count(" ↕\n") == 1

    # A packet that is really missing is still reported, moved or not.
    c = run((HOST, both), pending, result)
    out = io.StringIO()
    assert compare(a, c, out.write) == 1
    assert "только в A 1, только в B 0." in out.getvalue()


def test_compare_shows_packets_only_one_trace_has():
    a = _sale(100)
    b = [r for r in a if r.get("name") != "register_position"]
    out = io.StringIO()
    assert compare(a, b, out.write) == 2
    assert out.getvalue().count("только в A\n") == 2


def test_show_cli_prints_a_russian_table(tmp_path):
    path = _write(tmp_path / "t.jsonl", _sale(8990) + [{"seq": 7, "time": "x", "event": "refused",
                                                        "client": "127.0.0.1:1", "detail": "Касса занята"}])
    out = io.StringIO()
    assert cli.main(["--show", path], out=out) == 0
    text = out.getvalue()
    assert "ПК → ККТ" in text and "ККТ → ПК" in text
    assert "92 открытие чека" in text and "E6 регистрация позиции" in text and "4A закрытие чека" in text
    assert "отклонён клиент 127.0.0.1:1: Касса занята" in text


def test_bad_trace_file_is_a_clear_error(tmp_path, caplog):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"seq": 1}\nnot json\n', encoding="utf-8")
    assert cli.main(["--show", str(path)], out=io.StringIO()) == 2
    assert "строка 2: не JSON" in caplog.text
    with pytest.raises(ValueError, match="не могу прочитать"):
        load(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:5555", ("127.0.0.1", 5555)), ("192.168.1.50", ("192.168.1.50", 5555)),
    ("[::1]:7000", ("::1", 7000)), ("kkt.local:0", ("kkt.local", 0)),
])
def test_addresses(text, expected):
    assert cli.address(text) == expected


def test_unwritable_trace_or_busy_port_is_a_clear_error(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    assert cli.main(["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--out", str(blocker / "t.jsonl")]) == 2
    assert "не могу открыть файл записи" in caplog.text
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert cli.main(["--listen", f"127.0.0.1:{port}", "--to", "127.0.0.1:9", "--out",
                         str(tmp_path / "t.jsonl")]) == 2
    assert f"не могу слушать 127.0.0.1:{port}" in caplog.text


def test_listen_needs_a_device_and_a_file(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--listen", "127.0.0.1:0"])
    assert "нужны --to" in capsys.readouterr().err
