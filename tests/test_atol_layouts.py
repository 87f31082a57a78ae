"""The generic machinery of kktapp/atol/commands.py, checked with hand-typed bytes.

The golden transcripts (test_atol_transcripts.py) pin each command's layout; this file pins
what encodes and decodes every layout: the field kinds, the 91/A4 command factories, reply
heads and error replies, lookup by code, and the domain helpers (87 print lines, E8 values).
Sources as in /work/shared/docs/atol-real-device.md: Z, C, K, A, U ([U] = this project's
model, kktapp/atol/model.py). Error texts are pinned whole where a user reads them: a
DeviceError names the failing step by the command's Russian title (the cashier sees
«… (шаг: закрытие чека)»), a CodecError names command and field for the 1C programmer.
Found by the mutation check (`make mutate`).
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest

from kktapp.atol import codec, commands, model
from kktapp.atol.commands import (
    BCD,
    BE,
    LE,
    U8,
    Ascii,
    BcdDateTime,
    BcdDigits,
    BinDateTime,
    Command,
    Field,
    LenBytes,
    Quantity,
    Raw,
    Text,
)
from kktapp.domain import TextLine
from kktapp.errors import DeviceError

H = bytes.fromhex


def codec_error(func, *args, **kwargs) -> str:
    """The exact text of the CodecError that ``func`` raises."""
    with pytest.raises(codec.CodecError) as info:
        func(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- field kinds


def test_integer_kinds():
    assert U8().encode(0xFF) == H("FF") and U8().decode(H("80")) == 0x80
    assert codec_error(U8().encode, 0x100) == "256 does not fit in 1 unsigned bytes"
    assert LE(2).size == 2 and LE(2).encode(0x1234) == H("34 12") and LE(3).decode(H("01 02 03")) == 0x030201
    # [S K] register 0x37: command and extended code big-endian.
    assert BE(2).size == 2 and BE(2).encode(0x4A) == H("00 4A") and BE(2).decode(H("12 34")) == 0x1234
    assert BCD(3).size == 3 and BCD(3).encode(12) == H("00 00 12") and BCD(2).decode(H("12 34")) == 1234
    assert (U8.default, LE.default, BE.default, BCD.default) == (0, 0, 0, 0)


def test_serial_digits_keep_leading_zeros():
    kind = BcdDigits(4)
    assert kind.size == 4 and kind.default == ""
    assert kind.encode("00123456") == H("00 12 34 56")
    assert kind.encode("") == H("00 00 00 00")
    assert kind.decode(H("00 12 34 56")) == "00123456"
    assert BcdDigits(2).decode(H("00 01")) == "0001"
    assert codec_error(kind.encode, "12a4") == "'12a4' is not a string of digits"
    assert codec_error(kind.encode, "١٢") == "'١٢' is not a string of digits"  # digits, not ASCII
    assert codec_error(kind.encode, "123456789") == "123456789 does not fit in 4 BCD bytes"


def test_quantity_and_text_kinds():
    assert Quantity.size == 5 and Quantity.default == Decimal(1)
    assert Quantity().encode(Decimal("1.5")) == H("00 00 00 15 00")
    assert Quantity().decode(H("00 00 00 15 00")) == Decimal("1.5")
    assert Text().size is None and Text(4).size == 4 and Text.default == ""
    assert Text().encode("№1") == H("24 31")
    assert Text(4).encode("№1") == H("24 31 00 00")
    assert Text().decode(H("24 00 31")) == "№\x001"  # rest of the message: zeros kept
    assert Text(3).decode(H("24 00 31")) == "№"  # fixed field: up to the first zero


def test_ascii_kind():
    kind = Ascii(16)
    assert kind.size == 16 and kind.default == ""
    assert kind.encode("9999106201273705") == b"9999106201273705"
    assert Ascii(4).encode("12") == b"12\x00\x00"
    assert Ascii(4).encode("Ф1") == b"?1\x00\x00"
    assert codec_error(Ascii(4).encode, "12345") == "'12345' longer than 4 characters"
    assert Ascii(6).decode(b" 12 \x00ab") == "12"
    assert Ascii(3).decode(b"\xff12") == "\ufffd12"
    assert Ascii(3).decode("Ф1".encode()) == "\ufffd\ufffd1"  # ASCII, even where the bytes are UTF-8


def test_date_kinds():
    when = dt.datetime(2026, 11, 30, 12, 34, 56)
    assert BcdDateTime("DMYhms").size == 6 and BcdDateTime("DMYhms").parts == "DMYhms"
    assert BcdDateTime("DMYhm").encode(when) == H("30 11 26 12 34")
    assert BcdDateTime("YMDhms").decode(H("26 11 30 12 34 56")) == when
    assert BinDateTime("YMD").size == 3
    assert BinDateTime("YMDhm").encode(when) == bytes((26, 11, 30, 12, 34))
    assert BinDateTime("YMDhm").decode(bytes((26, 11, 30, 12, 34))) == when.replace(second=0)
    assert BcdDateTime("YMD").default is None and BinDateTime("YMD").decode(bytes(3)) is None


def test_raw_and_length_prefixed_kinds():
    assert Raw(3).size == 3 and Raw(3).default == H("00 00 00")
    assert Raw().size is None and Raw().default == b""
    assert Raw(2).encode(bytearray(b"ab")) == b"ab" and type(Raw(2).encode(bytearray(b"ab"))) is bytes
    assert Raw().encode(b"any length") == b"any length"
    assert codec_error(Raw(2).encode, b"abc") == "need 2 bytes, got 3"
    assert Raw().decode(bytearray(b"\x01")) == b"\x01" and type(Raw().decode(bytearray(b"\x01"))) is bytes
    # [C C,K] E8: len(2 LE) value.
    assert LenBytes.size is None and LenBytes.default == b""
    assert LenBytes().encode(b"abc") == H("03 00 61 62 63")
    assert LenBytes().encode(bytes(0x102))[:2] == H("02 01")
    assert LenBytes().decode(H("03 00 61 62 63")) == b"abc"
    assert LenBytes().decode(H("00 00")) == b""
    for bad in (H("03 00 61 62"), H("01"), b"", H("00 01 61")):
        assert codec_error(LenBytes().decode, bad) == "length prefix does not match the value"


# --------------------------------------------------------------------------- fields and commands

TOY = Command(0x77, "toy", "игрушечная команда", request=(
    Field("a", U8()), Field("b", BCD(2), 5), Field("rest", Text(), "")),
    reply=(Field("x", U8(), 0), Field("y", LE(2), 0)))
TOY_SUB = Command(0xA4, "toy_sub", "игрушка с подкодом", sub=0x99, reply_head=H("55 00"),
                  reply=(Field("x", U8(), 0),))


def test_field_helpers():
    required = commands._f("p", U8())
    assert required.required and required.name == "p"
    assert commands._f("p", U8(), 3).default == 3 and not commands._f("p", U8(), 3).required
    assert commands._opt("p", BCD(2)).default == 0 and not commands._opt("p", Raw(2)).required
    assert commands._opt("p", Raw(2)).default == H("00 00")
    money = commands._money("price")
    assert money.name == "price" and money.required and money.kind.size == commands.POSITION_MONEY_BYTES
    assert isinstance(money.kind, BCD)
    assert commands._bcd_max(1) == 99 and commands._bcd_max(5) == 9_999_999_999


def test_register_and_fn_factories():
    reg = commands._register("r", "чтение", 0x33, (Field("v", U8(), 0),))
    # [C A,K,Z] 91 reg p1 p2 → 55 err value
    assert (reg.code, reg.sub, reg.name, reg.title, reg.reply_head) == (0x91, 0x33, "r", "чтение", H("55 00"))
    assert reg.timeout == model.TIMEOUTS[0x91] and reg.mode is None and reg.wants_result
    assert reg.encode() == H("91 33 00 00") and reg.encode(p1=1, p2=2) == H("91 33 01 02")
    assert reg.decode_reply(H("55 00 07")) == {"v": 7}
    fn = commands._fn("f", "запрос ФН", 0x45, (Field("v", LE(2), 0),), request=(Field("fd", LE(4)),))
    # [C A,K,Z,U] A4 sub … → 55 err data
    assert (fn.code, fn.sub, fn.name, fn.title, fn.reply_head) == (0xA4, 0x45, "f", "запрос ФН", H("55 00"))
    assert fn.timeout == model.DEFAULT_TIMEOUT and fn.mode is None
    assert fn.encode(fd=5) == H("A4 45 05 00 00 00")
    assert fn.decode_reply(H("55 00 01 02")) == {"v": 0x0201}
    assert commands._fn("g", "т", 0x30, ()).request == ()


def test_encode_fills_defaults_and_names_bad_fields():
    assert TOY.prefix == H("77") and TOY_SUB.prefix == H("A4 99")
    assert TOY.encode(a=1) == H("77 01 00 05")
    assert TOY.encode(a=1, b=12, rest="ab") == H("77 01 00 12 61 62")
    assert TOY_SUB.encode() == H("A4 99")
    with pytest.raises(TypeError, match=r"^toy: unknown fields \['c', 'z'\]$"):
        TOY.encode(a=1, z=2, c=3)
    with pytest.raises(TypeError, match="^toy: field 'a' is required$"):
        TOY.encode(b=1)
    assert codec_error(TOY.encode, a=1, b=10000) == "toy.b: 10000 does not fit in 2 BCD bytes"
    assert codec_error(TOY.encode, a="x") == "toy.a: invalid literal for int() with base 10: 'x'"
    with pytest.raises(codec.CodecError) as info:
        TOY.encode(a=300)
    assert isinstance(info.value.__cause__, codec.CodecError)
    assert codec_error(TOY.encode_reply, y=0x10000) == "toy reply.y: 65536 does not fit in 2 unsigned bytes"


def test_decode_request_is_strict():
    assert TOY.decode_request(H("77 01 00 05")) == {"a": 1, "b": 5, "rest": ""}
    assert TOY.decode_request(H("77 01 00 05 61")) == {"a": 1, "b": 5, "rest": "a"}
    assert codec_error(TOY.decode_request, H("78 01 00 05")) == "toy: request does not start with 77"
    assert codec_error(TOY_SUB.decode_request, H("A4 98")) == "toy_sub: request does not start with a499"
    assert codec_error(TOY.decode_request, H("77 01 00")) == "toy: message too short for field 'b'"
    assert codec_error(TOY_SUB.decode_request, H("A4 99 00")) == "toy_sub: 1 bytes too many"
    assert codec_error(TOY_SUB.decode_request, H("A4 99 00 00")) == "toy_sub: 2 bytes too many"
    assert codec_error(commands.get("cash_in").decode_request, H("49 00 00 00 00 10 00 AA")) == (
        "cash_in: 1 bytes too many")
    bad = Command(0x01, "bad", "плохая", request=(Field("v", Raw()), Field("w", U8())))
    with pytest.raises(AssertionError, match="^bad: variable field v must be last$"):
        bad.decode_request(H("01 02 03"))


def test_reply_heads_and_extra_bytes():
    assert TOY.encode_reply(x=1, y=0x0203) == H("55 00 00 01 03 02")
    assert TOY.decode_reply(H("55 00 00 01 03 02")) == {"x": 1, "y": 0x0203}
    # Later firmware may append fields: the reply is read leniently.
    assert TOY.decode_reply(H("55 00 00 01 03 02 FF FF")) == {"x": 1, "y": 0x0203}
    assert codec_error(TOY.decode_reply, H("55 00 00 01 03")) == "toy reply: message too short for field 'y'"
    assert TOY_SUB.decode_reply(H("55 00 09")) == {"x": 9}
    assert codec_error(TOY.decode_reply, H("44 01 02 03 04 05 06 07 08 09")) == (
        "toy: unexpected reply 44 01 02 03 04 05 06 07")
    assert codec_error(TOY.decode_reply, H("55")) == "toy: unexpected reply 55"
    assert codec_error(TOY.decode_reply, b"") == "toy: unexpected reply "
    # 55 00 is a data head, not an error, even where the plain head 55 00 00 is expected.
    assert codec_error(TOY.decode_reply, H("55 00 01")) == "toy: unexpected reply 55 00 01"


def test_error_reply_names_the_step_code_and_extended_code():
    close = commands.get("close_receipt")
    with pytest.raises(DeviceError) as info:
        close.decode_reply(H("55 7E 05"))
    err = info.value
    assert (err.code, err.ext, err.command, err.step) == (0x7E, 5, 0x4A, "закрытие чека")
    assert str(err).endswith(" (шаг: закрытие чека)")
    with pytest.raises(DeviceError) as info:
        close.decode_reply(H("55 7E"), step="позиция 3")
    assert (info.value.code, info.value.ext, info.value.step) == (0x7E, 0, "позиция 3")


def test_cashier_sees_the_steps_by_their_russian_names():
    # The titles are what a cashier reads after «шаг:» when a step of a receipt fails.
    titles = {name: commands.get(name).title for name in (
        "open_shift", "close_shift", "open_receipt", "end_position", "payment", "close_receipt",
        "cancel_receipt", "cash_in", "cash_out")}
    assert titles == {
        "open_shift": "открытие смены", "close_shift": "закрытие смены (Z-отчёт)",
        "open_receipt": "открытие чека", "end_position": "регистрация позиции", "payment": "оплата",
        "close_receipt": "закрытие чека", "cancel_receipt": "отмена чека",
        "cash_in": "внесение наличных", "cash_out": "выплата наличных"}


def test_error_replies_of_any_command():
    assert commands.encode_error(0x7E) == H("55 7E 00")
    assert commands.encode_error(0x01) == H("55 01 00")
    assert commands.encode_error(0xFF, 0x12) == H("55 FF 12")
    for bad in (0, 0x100, -1):
        with pytest.raises(ValueError, match=f"^bad error code {bad}$"):
            commands.encode_error(bad)
    assert commands.reply_error(H("55 7E 05")) == (0x7E, 5)
    assert commands.reply_error(H("55 01")) == (1, 0)
    assert commands.reply_error(H("55 00 00")) is None
    assert commands.reply_error(H("55")) is None
    assert commands.reply_error(H("44 01 02")) is None


# --------------------------------------------------------------------------- lookup


def test_lookup_prefers_sub_codes():
    assert commands.lookup(b"") is None
    assert commands.lookup(H("3F")).name == "status"
    assert commands.lookup(H("A4 30")).name == "fn_status"
    assert commands.lookup(H("A4")) is None  # A4 only exists with a sub-code
    assert commands.lookup(H("91 33")).name == "last_sale"
    assert commands.lookup(H("91 99 00 00")).name == "read_register"
    assert commands.lookup(H("9D 91")).name == "firmware_build"
    assert commands.lookup(H("01 02")) is None


def test_parse_request_and_describe():
    cmd, params = commands.parse_request(H("49 00 00 00 00 10 00"))
    assert cmd.name == "cash_in" and params == {"flags": 0, "amount": 1000}
    with pytest.raises(KeyError) as info:
        commands.parse_request(H("01 02 03"))
    assert info.value.args == ("unknown command 01 02",)
    assert commands.describe(H("00 30 3F")) == "status (запрос состояния)"
    assert commands.describe(H("00 30 01 02")) == "команда 01"
    assert commands.describe(H("00 30 ab")) == "команда AB"
    assert commands.describe(H("00 30")) == "команда ?"
    assert commands.describe(b"") == "команда ?"


def test_firmware_build_is_the_last_two_bcd_bytes():
    # [S K] 9D 91: internal firmware number in the reply's last two bytes, BCD.
    assert commands.firmware_build(H("12 70 00")) == 7000
    assert commands.firmware_build(H("12 34")) == 1234
    assert commands.firmware_build(H("34")) == 0
    assert commands.firmware_build(b"") == 0


def test_split_mode():
    # [C C,Z] 45: mode in the low nibble, sub-mode in the high one (0x23 = Z report printing).
    assert commands.split_mode(0x23) == (3, 2)
    assert commands.split_mode(0xF1) == (1, 15)


# --------------------------------------------------------------------------- domain helpers


def test_print_field_params_size_and_alignment():
    # [S C] 87: multiplier 0 normal, 1 double height (FiscalDevice.addPrintString); [U] double
    # width printed normal; alignment with spaces on a 48-character line.
    assert commands.print_field_params(TextLine("Итог")) == {"multipliers": 0, "text": "Итог"}
    assert commands.print_field_params(TextLine("ab", align="center")) == {
        "multipliers": 0, "text": " " * 23 + "ab"}
    assert commands.print_field_params(TextLine("ab", align="right")) == {"multipliers": 0, "text": " " * 46 + "ab"}
    assert commands.print_field_params(TextLine("ab", align="right", double_width=True)) == {
        "multipliers": 0, "text": " " * 46 + "ab"}
    assert commands.print_field_params(TextLine("abc", align="center", double_height=True)) == {
        "multipliers": 1, "text": " " * 22 + "abc"}
    assert commands.print_field_params(TextLine("x", align="left", double_width=True, double_height=True)) == {
        "multipliers": 1, "text": "x"}


def test_text_line_reads_back_sizes():
    assert commands.text_line({"multipliers": 1, "text": "  ab  "}) == TextLine("ab", double_height=True)
    assert commands.text_line({"multipliers": 0, "text": "ab"}) == TextLine("ab")
    assert commands.text_line({"text": "x"}) == TextLine("x")


def test_attribute_values():
    # [U] tag 1178 (correction date) as UnixTime, 4 LE, at midnight UTC.
    assert commands.attribute_value(model.TAG_CORRECTION_DATE, dt.date(2026, 11, 30)) == H("80 BC 0C 6B")
    assert codec_error(commands.attribute_value, model.TAG_CORRECTION_DATE, "30.11.2026") == (
        f"tag {model.TAG_CORRECTION_DATE} needs a date")
    assert commands.attribute_value(model.TAG_PAYMENT_METHOD, "4") == H("04")
    assert commands.attribute_value(1021, 7) == H("07")
    assert commands.attribute_value(1021, "Иванов") == codec.encode_text("Иванов")
    assert commands.attribute_value(1021, "12") == b"12"
    assert commands.decode_attribute_value(model.TAG_CORRECTION_DATE, H("80 BC 0C 6B")) == dt.date(2026, 11, 30)
    assert commands.decode_attribute_value(model.TAG_CORRECTION_DATE, H("31 32 33")) == "123"
    assert commands.decode_attribute_value(model.TAG_PAYMENT_METHOD, H("04")) == 4
    assert commands.decode_attribute_value(model.TAG_PAYMENT_METHOD, H("34 34")) == "44"
    assert commands.decode_attribute_value(1021, H("24")) == "№"


def test_correction_date_is_utc_midnight_whatever_the_server_zone(monkeypatch):
    # A server kept in local time (here UTC-5, no zone files needed) must still send midnight UTC.
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    try:
        assert commands.attribute_value(model.TAG_CORRECTION_DATE, dt.date(2026, 11, 30)) == H("80 BC 0C 6B")
        assert commands.decode_attribute_value(model.TAG_CORRECTION_DATE, H("80 BC 0C 6B")) == dt.date(2026, 11, 30)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_name_limits_by_layout():
    # [C Z,C] E6 name field 64 bytes; [C Z,C,K] EB name up to 128 bytes, cut not padded.
    assert commands.name_fits_position("я" * 64) and not commands.name_fits_position("я" * 65)
    assert commands.position_name("я" * 128) == "я" * 128
    assert commands.position_name("я" * 129) == "я" * 128
    assert commands.position_name("😀" * 130) == "?" * 128
    # A sign the code page lacks is spelt out before the cut (codec.plain_text): € → EUR.
    assert commands.position_name("€" * 130) == ("EUR" * 43)[:128]
    # A name that fits is passed as given (its typography is made plain by the text codec later).
    assert commands.position_name("«Хлеб»") == "«Хлеб»"
    assert commands.position_name("«" + "я" * 127) == "«" + "я" * 127


def test_a_command_built_now_keeps_its_prefix_and_field_names():
    # What a Command computes once when it is made (prefix, the names of its fields both ways),
    # checked on commands made here, at test time.
    plain = Command(0x4A, "close", "закрытие", request=(Field("flags", U8(), 0), Field("sum", BCD(5))),
                    reply=(Field("change", BCD(5), 0),))
    sub = Command(0x91, "reg", "регистр", sub=0x13)
    assert plain.prefix == H("4A") and sub.prefix == H("91 13")
    assert plain.encode(sum=12345) == H("4A 00 00 00 01 23 45")
    assert sub.encode() == H("91 13")
    with pytest.raises(TypeError, match=r"^close: unknown fields \['change'\]$"):
        plain.encode(sum=1, change=2)
    with pytest.raises(TypeError, match=r"^close reply: unknown fields \['sum'\]$"):
        plain.encode_reply(sum=1)
    assert plain.encode_reply() == H("55 00 00 00 00 00 00 00")
    assert plain.encode_reply(change=99) == H("55 00 00 00 00 00 00 99")
    assert plain.decode_request(H("4A 01 00 00 00 00 07")) == {"flags": 1, "sum": 7}


def test_u8_takes_each_byte_value_and_nothing_else():
    u8 = U8()
    assert [u8.encode(n) for n in (0, 1, 0x7F, 0xFE, 0xFF)] == [H("00"), H("01"), H("7F"), H("FE"), H("FF")]
    assert u8.encode(True) == H("01") and u8.encode(model.Mode.REGISTRATION) == bytes((model.Mode.REGISTRATION,))
    assert codec_error(u8.encode, 256) == "256 does not fit in 1 unsigned bytes"
    assert codec_error(u8.encode, -1) == "-1 does not fit in 1 unsigned bytes"
