"""Edges of the ATOL field encodings that the vector tests in test_atol_codec.py leave open.

Written against the mutation check (`make mutate`): each case pins one boundary, one refusal
or one error text that a one-token change of kktapp/atol/codec.py would otherwise get past.
Error texts are pinned whole because they reach users: the command layer puts them after
the field name in the error a 1C programmer reads («end_position.price: …»). BCD is
big-endian two digits a byte (atol-protocol.md §2.1), integers of A4 replies little-endian
(atol-real-device.md §2, [C A,K,Z]).
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from decimal import Decimal

import pytest

from kktapp.atol import codec


def error_text(func, *args) -> str:
    """The exact text of the CodecError that ``func(*args)`` raises."""
    with pytest.raises(codec.CodecError) as info:
        func(*args)
    return str(info.value)


# --------------------------------------------------------------------------- BCD


def test_bcd_refusals_say_what_was_wrong():
    assert error_text(codec.encode_bcd, 1.5, 2) == "BCD needs an int, got 1.5"
    assert error_text(codec.encode_bcd, True, 1) == "BCD needs an int, got True"
    assert error_text(codec.encode_bcd, "12", 1) == "BCD needs an int, got '12'"
    assert error_text(codec.encode_bcd, -1, 2) == "BCD cannot hold a negative number: -1"
    assert error_text(codec.encode_bcd, 100, 1) == "100 does not fit in 1 BCD bytes"


def test_bcd_widest_value_of_each_width_fits():
    assert codec.encode_bcd(9999, 2) == b"\x99\x99"
    assert codec.encode_bcd(10 ** 13, 7) == b"\x10\x00\x00\x00\x00\x00\x00"
    assert codec.encode_bcd(5, 3) == b"\x00\x00\x05"


def test_bcd_decode_checks_each_nibble():
    assert error_text(codec.decode_bcd, b"\xa0") == "not a BCD byte: A0"
    assert error_text(codec.decode_bcd, b"\x0a") == "not a BCD byte: 0A"
    assert error_text(codec.decode_bcd, b"\x12\x9f") == "not a BCD byte: 9F"
    assert codec.decode_bcd(b"\x99") == 99
    assert codec.decode_bcd(b"\x01\x00") == 100
    assert codec.decode_bcd(b"") == 0


# --------------------------------------------------------------------------- little-endian


def test_le_is_unsigned_both_ways():
    assert codec.encode_le(0xFF, 1) == b"\xff"
    assert codec.encode_le(0x8001, 2) == b"\x01\x80"
    assert codec.decode_le(b"\xff") == 255
    assert codec.decode_le(b"\x01\x80") == 0x8001
    assert codec.decode_le(b"") == 0


def test_le_refusals():
    assert error_text(codec.encode_le, -1, 1) == "-1 does not fit in 1 unsigned bytes"
    assert error_text(codec.encode_le, 0x10000, 2) == "65536 does not fit in 2 unsigned bytes"
    assert error_text(codec.encode_le, False, 1) == "integer field needs an int, got False"
    assert error_text(codec.encode_le, "1", 1) == "integer field needs an int, got '1'"


# --------------------------------------------------------------------------- quantity


def test_quantity_takes_ints_refuses_bools_and_keeps_three_decimals():
    assert codec.encode_quantity(3) == b"\x00\x00\x00\x30\x00"
    assert error_text(codec.encode_quantity, True) == "quantity must be Decimal or int, got True"
    assert error_text(codec.encode_quantity, 0.5) == "quantity must be Decimal or int, got 0.5"
    assert error_text(codec.encode_quantity, Decimal("0.0005")) == "quantity 0.0005 has more than three decimals"
    assert error_text(codec.encode_quantity, Decimal(10 ** 7)) == "10000000000 does not fit in 5 BCD bytes"
    assert codec.encode_quantity(Decimal("9999999.999")) == b"\x99\x99\x99\x99\x99"
    assert str(codec.decode_quantity(b"\x00\x00\x00\x10\x00")) == "1.000"
    assert str(codec.decode_quantity(b"\x00\x00\x00\x00\x05")) == "0.005"


# --------------------------------------------------------------------------- date and time


def test_no_date_is_zeros_of_the_field_width_both_codings():
    assert codec.encode_bcd_datetime(None, "DMY") == b"\x00\x00\x00"
    assert codec.encode_bin_datetime(None, "YMDhm") == bytes(5)
    assert codec.decode_bin_datetime(bytes(3), "YMD") is None


def test_midnight_is_a_date_not_no_date():
    # Only ALL zeros mean "no date": 00:00:00 of a real day keeps its day.
    assert codec.decode_bcd_datetime(b"\x26\x03\x14\x00\x00\x00", "YMDhms") == dt.datetime(2026, 3, 14)


def test_bcd_and_binary_date_layouts():
    moment = dt.datetime(2026, 11, 30, 23, 59, 58)
    # [C Z,K] register 0x20 answers DMYhms in BCD; [C A,K,Z,U] A4 replies YMDhm in binary.
    assert codec.encode_bcd_datetime(moment, "DMYhms") == b"\x30\x11\x26\x23\x59\x58"
    assert codec.decode_bcd_datetime(b"\x30\x11\x26\x23\x59\x58", "DMYhms") == moment
    assert codec.encode_bin_datetime(moment, "YMDhm") == bytes((26, 11, 30, 23, 59))
    assert codec.decode_bin_datetime(bytes((26, 11, 30, 23, 59)), "YMDhm") == moment.replace(second=0)
    assert codec.decode_bin_datetime(bytes((26, 11, 30)), "YMD") == dt.date(2026, 11, 30)
    assert codec.encode_bin_datetime(dt.date(2031, 1, 2), "YMD") == bytes((31, 1, 2))
    # A date part alone still is a date: Y/M/D subsets, not only the full "YMD".
    assert codec.decode_bin_datetime(bytes((26, 11, 30)), "DMY") == dt.date(2030, 11, 26)
    assert codec.decode_bin_datetime(bytes((27, 1, 9, 0)), "YMDh") == dt.datetime(2027, 1, 9, 0)


def test_two_digit_year_is_this_century():
    assert codec.encode_bcd_datetime(dt.date(2099, 12, 31), "YMD") == b"\x99\x12\x31"
    assert codec.decode_bcd_datetime(b"\x00\x01\x01", "YMD") == dt.date(2000, 1, 1)
    assert codec.encode_bin_datetime(dt.date(2000, 1, 1), "YMD") == bytes((0, 1, 1))


def test_date_refusals():
    assert error_text(codec.decode_bcd_datetime, b"\x26\x03", "YMD") == "date field needs 3 bytes, got 2"
    assert error_text(codec.decode_bin_datetime, b"\x26\x03\x14\x01", "YMD") == "date field needs 3 bytes, got 4"
    assert error_text(codec.decode_bin_datetime, bytes((26, 2, 30)), "YMD") == "not a valid date: 1a 02 1e"
    assert error_text(codec.decode_bcd_datetime, b"\x26\x01\x01\x24\x00", "YMDhm") == (
        "not a valid date: 26 01 01 24 00")
    assert error_text(codec.encode_bcd_datetime, dt.date(2026, 1, 2), "YMDh") == (
        "datetime.date(2026, 1, 2) has no time of day for part 'h'")
    assert error_text(codec.encode_bin_datetime, dt.date(2026, 1, 2), "YMDm") == (
        "datetime.date(2026, 1, 2) has no time of day for part 'm'")


# --------------------------------------------------------------------------- text


def test_text_field_cuts_and_pads_exactly_to_width():
    assert codec.encode_text_field("", 3) == b"\x00\x00\x00"
    assert codec.encode_text_field("abc", 3) == b"abc"
    assert codec.encode_text_field("abcd", 3) == b"abc"
    assert codec.encode_text_field("№", 2) == b"\x24\x00"
    assert codec.decode_text_field(b"ab\x00cd\x00ef") == "ab"
    assert codec.decode_text_field(b"\x24\xfc") == "№$"
    assert codec.decode_text_field(b"") == ""


def test_text_decodes_every_byte_without_error():
    # CP866 maps all 256 bytes; the device never sends a byte we cannot show.
    text = codec.decode_text(bytes(range(256)))
    assert len(text) == 256 and "\ufffd" not in text
    assert codec.decode_text(b"\x8c\xae\xab\xae\xaa\xae") == "Молоко"


def test_a_date_field_without_a_day_is_refused_cleanly():
    # A layout without Y/M/D would make day 0: a CodecError, not a KeyError from the decoder.
    assert error_text(codec.decode_bcd_datetime, b"\x12\x34", "hm") == "not a valid date: 12 34"


def test_bcd_of_an_int_enum_is_its_number():
    class Code(enum.IntEnum):
        TWELVE = 12

    assert codec.encode_bcd(Code.TWELVE, 2) == b"\x00\x12"
    assert error_text(codec.encode_bcd, Code.TWELVE, 0) == "12 does not fit in 0 BCD bytes"


def test_bcd_decode_names_the_first_bad_byte_after_good_nines():
    # The nibble checks are "above 9": a 9 before the bad byte is a digit, not the culprit.
    assert error_text(codec.decode_bcd, b"\x99\xa0") == "not a BCD byte: A0"
    assert error_text(codec.decode_bcd, b"\x09\x0a") == "not a BCD byte: 0A"
    assert codec.decode_bcd(b"\x00\x00\x00\x00\x00\x00\x01") == 1
    assert codec.decode_bcd(bytearray(b"\x12\x34")) == 1234


def test_bcd_date_parts_are_checked_one_by_one():
    assert error_text(codec.decode_bcd_datetime, b"\x26\x1a\x01", "YMD") == "not a BCD byte: 1A"
    assert codec.decode_bcd_datetime(b"\x99\x12\x31", "YMD") == dt.date(2099, 12, 31)


def test_changed_text_is_logged_once_and_unchanged_text_never(caplog: pytest.LogCaptureFixture):
    codec._note_changed.cache_clear()
    with caplog.at_level(logging.INFO, logger=codec.__name__):
        assert codec.encode_text("Молоко 2,5%?") == "Молоко 2,5%?".encode("cp866")
        assert caplog.messages == []  # a question mark of its own is no replacement
        assert codec.encode_text("«Сыр»") == b'"\x91\xeb\xe0"'
        assert codec.encode_text("«Сыр»") == b'"\x91\xeb\xe0"'
        assert codec.encode_text("中") == b"?"
    assert caplog.messages == [
        "текст для ККТ изменён (в её кодовой странице нет этих символов): '«Сыр»' → '\"Сыр\"'",
        "текст для ККТ изменён (в её кодовой странице нет этих символов): '中' → '?'",
    ]


@pytest.mark.parametrize("encoding", ["cp866", "cp1251"])
@pytest.mark.parametrize("text", ["Молоко 2,5%", "Сыр\u00a0«Рокфор»", "Кофе 1½ кг", "Crème brûlée", "10 ₽", "中", ""])
def test_encode_plain_is_plain_text_encoded_once(text: str, encoding: str):
    # The single-encode fast path must give the bytes plain_text + encode gave, the no-break
    # space included (both code pages have one, and a printer's is not ours to trust).
    assert codec.encode_plain(text, encoding) == codec.plain_text(text, encoding).encode(encoding, errors="replace")
    assert b"\xa0" not in codec.encode_plain("a\u00a0b", "cp1251")
    assert codec.encode_plain("a\u00a0b", "cp866") == b"a b"
