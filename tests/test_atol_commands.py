"""The command table, the task buffer messages and the device error table."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kktapp.atol import codec, commands, model, taskbuf
from kktapp.atol.commands import COMMANDS, COMMANDS_LIST
from kktapp.atol.errors import MESSAGES, ErrorCode, device_error, error_text
from kktapp.domain import PaymentType, SettlementType, TextLine
from kktapp.errors import DeviceError


def strategy(kind: commands.Kind) -> st.SearchStrategy:
    """Values a field kind can carry."""
    if isinstance(kind, commands.U8):
        return st.integers(0, 0xFF)
    if isinstance(kind, (commands.LE, commands.BE)):
        return st.integers(0, 256 ** kind.size - 1)
    if isinstance(kind, commands.BCD):
        return st.integers(0, 10 ** (2 * kind.size) - 1)
    if isinstance(kind, commands.BcdDigits):
        # Decoded at full width: a serial keeps its leading zeros.
        return st.integers(0, 10 ** (2 * kind.size) - 1).map(lambda n: str(n).zfill(2 * kind.size))
    if isinstance(kind, commands.Quantity):
        return st.integers(0, 10 ** 10 - 1).map(lambda n: Decimal(n) / 1000)
    if isinstance(kind, commands.Text):
        text = st.text(alphabet="абвгдеёжзАБВЁЯя№$ abc123.,-", max_size=kind.size or 80)
        return text.map(lambda s: s.rstrip("\x00")) if kind.size else text
    if isinstance(kind, commands.Ascii):
        return st.text(alphabet="0123456789ABC", max_size=kind.size)
    if isinstance(kind, commands.BcdDateTime):
        when = st.datetimes(min_value=dt.datetime(2000, 1, 2), max_value=dt.datetime(2099, 12, 31))
        if kind.parts in ("YMD", "DMY"):
            return st.one_of(st.none(), when.map(lambda d: d.date()))
        return st.one_of(st.none(), when.map(lambda d: d.replace(microsecond=0, second=d.second if "s" in kind.parts
                                                                        else 0)))
    if isinstance(kind, (commands.Raw, commands.LenBytes)):
        return st.binary(min_size=kind.size or 0, max_size=kind.size or 40)
    raise AssertionError(kind)


def fields_strategy(fields):
    return st.fixed_dictionaries({f.name: strategy(f.kind) for f in fields})


@pytest.mark.parametrize("cmd", COMMANDS_LIST, ids=lambda c: c.name)
@given(data=st.data())
def test_request_round_trip(cmd, data):
    params = data.draw(fields_strategy(cmd.request))
    # Registers with a layout of their own (18 shift state, 12 non-resettable totals, 22 serial)
    # read through the generic 91 are, by design, their sub-coded commands.
    registers = {c.sub for c in COMMANDS_LIST if c.code == 0x91 and c.sub is not None}
    assert {model.REGISTER_SHIFT_STATE, model.REGISTER_SERIAL, model.REGISTER_LAST_SALE} <= registers
    assume(not (cmd.name == "read_register" and params["register"] in registers))
    raw = cmd.encode(**params)
    assert raw.startswith(cmd.prefix)
    parsed_cmd, parsed = commands.parse_request(raw)
    assert parsed_cmd is cmd
    assert parsed == params


@pytest.mark.parametrize("cmd", COMMANDS_LIST, ids=lambda c: c.name)
@given(data=st.data())
def test_reply_round_trip(cmd, data):
    values = data.draw(fields_strategy(cmd.reply))
    assert cmd.decode_reply(cmd.encode_reply(**values)) == values


# 45 is left out: in this model it cannot fail (its reply head 55 looks like an error reply).
@pytest.mark.parametrize("cmd", [c for c in COMMANDS_LIST if c.name != "short_status"], ids=lambda c: c.name)
def test_error_reply_raises_device_error(cmd):
    with pytest.raises(DeviceError) as info:
        cmd.decode_reply(commands.encode_error(ErrorCode.NO_PAPER, 2), step="позиция 3: «Молоко»")
    err = info.value
    assert err.code == 0x67 and err.ext == 2 and err.command == cmd.code
    assert err.device_message == "Нет бумаги"
    assert "позиция 3: «Молоко»" in err.message


def test_registry_names_codes_and_subcodes():
    assert len(COMMANDS) == len(COMMANDS_LIST)
    assert commands.get("close_shift").code == 0x5A
    assert commands.lookup(b"\xa4\x30") is COMMANDS["fn_status"]
    assert commands.lookup(b"\x91\x12\x00\x00") is COMMANDS["shift_state"]
    assert commands.lookup(b"\x91\x03\x00\x00") is COMMANDS["read_register"]
    assert commands.lookup(b"\x92\x12\x01") is COMMANDS["open_receipt"]
    assert commands.lookup(b"\x01") is None
    with pytest.raises(KeyError):
        commands.parse_request(b"\x01\x02")
    for name in ("status", "short_status", "device_type", "enter_mode", "leave_mode", "open_shift",
                 "close_shift", "x_report", "open_receipt", "register_position", "receipt_discount",
                 "payment", "close_receipt", "cancel_receipt", "cash_in", "cash_out", "cash_in_drawer",
                 "print_string", "cut", "reprint_last", "read_register", "shift_state", "fn_shift",
                 "ofd_status", "fn_status", "fn_serial", "fn_validity", "fn_version", "document_open",
                 "document_read", "begin_position", "end_position", "print_field", "last_sale", "last_fd",
                 "write_attribute", "tech_reset", "init_tables", "general_clearing"):
        assert name in COMMANDS


def test_status_reply_offsets():
    reply = COMMANDS["status"].encode_reply(flags=0x4B, mode=0x41, receipt_state=1,
                                            datetime=dt.datetime(2026, 5, 1, 12, 0, 0))
    assert reply[0] == 0x44 and reply[9] == 0x4B and reply[17] == 0x41 and reply[22] == 1
    assert len(reply) == 30
    assert commands.split_mode(0x41) == (1, 4)


def test_request_errors():
    with pytest.raises(TypeError):
        COMMANDS["payment"].encode(amount=1)  # payment_type missing
    with pytest.raises(TypeError):
        COMMANDS["payment"].encode(payment_type=1, amount=1, bogus=2)
    with pytest.raises(codec.CodecError):
        COMMANDS["payment"].encode(payment_type=1, amount=10 ** 10)
    with pytest.raises(codec.CodecError):
        COMMANDS["payment"].decode_request(bytes.fromhex("99 00 01 00"))
    with pytest.raises(codec.CodecError):
        COMMANDS["payment"].decode_reply(b"\x12\x34")


def test_replies_tolerate_extra_bytes():
    reply = COMMANDS["fn_shift"].encode_reply(state=1, shift_number=5, receipt_number=7) + b"\x99"
    assert COMMANDS["fn_shift"].decode_reply(reply) == {"state": 1, "shift_number": 5, "receipt_number": 7}


def test_domain_mappings_cover_every_enum():
    assert set(commands.RECEIPT_TYPES) == set(SettlementType)
    assert set(commands.PAYMENT_TYPES) == set(PaymentType)
    assert commands.RECEIPT_TYPES[SettlementType.BUY] == 4
    assert set(commands.TAG1054_BY_RECEIPT_TYPE) == set(commands.RECEIPT_TYPES.values())


@pytest.mark.parametrize("line", [
    TextLine("x"), TextLine("x", double_width=True), TextLine("x", double_height=True, align="center"),
])
def test_print_field_keeps_height_and_text(line):
    # Double width has no value in any source and is printed normal (model.py, 87).
    back = commands.text_line(commands.print_field_params(line))
    assert (back.text, back.double_width, back.double_height) == ("x", False, line.double_height)


def test_correction_basis_stlv():
    # [C] 1174 = TLV(1178, UnixTime 4 LE) + TLV(1179, text), tag(2 LE) len(2 LE) each.
    raw = commands.correction_basis(dt.date(2026, 2, 3), "12")
    assert raw == bytes.fromhex("9A 04 04 00 80 3A 81 69  9B 04 02 00 31 32")
    assert commands.decode_attribute_value(model.TAG_CORRECTION_BASIS, raw) == {"1178": dt.date(2026, 2, 3),
                                                                                "1179": "12"}
    assert commands.correction_basis(dt.date(2026, 2, 3)) == bytes.fromhex("9A 04 04 00 80 3A 81 69")


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=6))
def test_tlv_records_read_back_what_tlv_writes(records):
    data = b"".join(commands.tlv(tag, value) for tag, value in records)
    assert list(commands.tlv_records(data)) == records == list(commands.tlv_records(data, whole=True))


def test_tlv_records_cut_off_or_left_over():
    data = commands.tlv(1008, b"a@b.c") + commands.tlv(1187, b"site")
    # A document read in parts: the record cut off at the end is dropped, with what follows it.
    assert list(commands.tlv_records(data[:-1])) == [(1008, b"a@b.c")]
    assert list(commands.tlv_records(data + b"\x01\x02")) == [(1008, b"a@b.c"), (1187, b"site")]
    # Written to the device: the records must fill the data exactly.
    with pytest.raises(codec.CodecError, match="TLV 1187 does not fit"):
        list(commands.tlv_records(data[:-1], whole=True))
    with pytest.raises(codec.CodecError, match="2 bytes after the last TLV"):
        list(commands.tlv_records(data + b"\x01\x02", whole=True))
    # An STLV names each tag once; the document data keeps the last.
    twice = data + commands.tlv(1008, b"x")
    assert commands.parse_tlv(twice)[1008] == b"x"
    with pytest.raises(codec.CodecError, match="TLV 1008 repeats"):
        commands.parse_tlv(twice, strict=True)


def test_attribute_values():
    assert commands.attribute_value(model.TAG_PAYMENT_METHOD, 4) == b"\x04"
    assert commands.attribute_value(model.TAG_CUSTOMER_CONTACT, "+79990001122") == b"+79990001122"
    assert commands.attribute_value(model.TAG_CORRECTION_ORDER, "№1") == b"\x241"
    day = dt.date(2026, 2, 3)
    raw = commands.attribute_value(model.TAG_CORRECTION_DATE, day)
    assert len(raw) == 4 and commands.decode_attribute_value(model.TAG_CORRECTION_DATE, raw) == day
    assert commands.decode_attribute_value(model.TAG_UNIT, b"\x0b") == 11
    assert commands.decode_attribute_value(model.TAG_CASHIER_NAME, codec.encode_text("Иванов")) == "Иванов"


# --------------------------------------------------------------------------- task buffer

tids = st.integers(0, model.ID_MAX)
flag_values = st.sampled_from(list(taskbuf.Flags)) | st.integers(0, 7).map(taskbuf.Flags)
messages = st.one_of(
    st.builds(taskbuf.Add, tids, st.binary(min_size=3, max_size=20), flag_values),
    st.builds(taskbuf.Ack, tids), st.builds(taskbuf.Req, tids), st.just(taskbuf.Abort()),
    st.builds(taskbuf.AckAdd, tids, tids, st.binary(min_size=3, max_size=20), flag_values),
)


@given(messages)
def test_taskbuf_request_round_trip(msg):
    assert taskbuf.decode_request(taskbuf.encode_request(msg)) == msg


def test_taskbuf_exact_bytes():
    add = taskbuf.Add(tid=0x10, task=b"\x00\x00\x3f", flags=taskbuf.Flags.NEED_RESULT | taskbuf.Flags.WAIT_ASYNC_DATA)
    assert taskbuf.encode_request(add) == bytes.fromhex("C1 05 10 00 00 3F")
    assert taskbuf.encode_request(taskbuf.Abort()) == b"\xc4"
    assert taskbuf.encode_request(taskbuf.AckAdd(1, 2, b"\x00\x00\x3f")) == bytes.fromhex("C5 01 00 02 00 00 3F")


@given(st.sampled_from(list(taskbuf.Status)), st.binary(max_size=20), tids)
def test_taskbuf_answer_round_trip(status, reply, tid):
    if status in taskbuf.WITH_TID:
        answer = taskbuf.decode_answer(taskbuf.encode_answer(status, reply, tid))
        assert (answer.status, answer.tid, answer.reply) == (status, tid, reply)
    else:
        answer = taskbuf.decode_answer(taskbuf.encode_answer(status, reply))
        assert (answer.status, answer.tid, answer.reply) == (status, None, reply)


def test_taskbuf_async_vector():
    answer = taskbuf.decode_answer(bytes.fromhex("A6 57 55 00 00"))
    assert answer == taskbuf.Answer(taskbuf.Status.ASYNC_RESULT, b"\x55\x00\x00", 0x57)
    assert answer.final


@pytest.mark.parametrize("raw", [b"", b"\xc1\x00", b"\xc2", b"\xc4\x00", b"\x10"])
def test_taskbuf_bad_requests(raw):
    with pytest.raises(taskbuf.TaskBufError):
        taskbuf.decode_request(raw)


def test_task_body_password():
    assert taskbuf.encode_task("0000", b"\x3f") == b"\x00\x00\x3f"
    assert taskbuf.encode_task(1234, b"\x3f") == b"\x12\x34\x3f"
    assert taskbuf.decode_task(b"\x12\x34\x3f\x01") == (1234, b"\x3f\x01")


# --------------------------------------------------------------------------- errors


def test_error_table():
    assert error_text(0x67) == "Нет бумаги"
    assert error_text(0x88) == "Смена превысила 24 часа"
    assert error_text(0x8C) == "Неверный пароль"
    assert error_text(0x66) == "Команда не выполняется в этом режиме ККТ"
    assert error_text(model.SHIFT_CLOSED_ERROR).startswith("Смена закрыта")
    assert error_text(0xF6, 1) == "Слишком большой чек: Неверная версия ФФД"
    assert "0x01" in error_text(0x01)
    assert set(MESSAGES) == set(ErrorCode)
    err = device_error(0x72, step="оплата", command=0x99)
    assert isinstance(err, DeviceError) and err.code == 0x72 and err.step == "оплата"
    assert err.to_dict()["step"] == "оплата"
