"""BCD, little-endian, quantity, date and text encodings of the ATOL command layer."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kktapp.atol import codec


@pytest.mark.parametrize(("value", "width", "raw"), [
    (0, 1, b"\x00"),
    (99, 1, b"\x99"),
    (1234, 2, b"\x12\x34"),
    (1234, 5, b"\x00\x00\x00\x12\x34"),
    (30, 4, b"\x00\x00\x00\x30"),
    (9_999_999_999, 5, b"\x99\x99\x99\x99\x99"),
])
def test_bcd_vectors(value, width, raw):
    assert codec.encode_bcd(value, width) == raw
    assert codec.decode_bcd(raw) == value


@pytest.mark.parametrize(("value", "width"), [(100, 1), (10_000_000_000, 5), (-1, 2)])
def test_bcd_overflow_and_negative_are_errors(value, width):
    with pytest.raises(codec.CodecError):
        codec.encode_bcd(value, width)


def test_bcd_refuses_floats_and_bad_nibbles():
    with pytest.raises(codec.CodecError):
        codec.encode_bcd(1.5, 2)  # type: ignore[arg-type]
    with pytest.raises(codec.CodecError):
        codec.decode_bcd(b"\x1a")


@given(st.integers(min_value=1, max_value=8).flatmap(
    lambda w: st.tuples(st.just(w), st.integers(min_value=0, max_value=10 ** (2 * w) - 1))))
def test_bcd_round_trip(case):
    width, value = case
    raw = codec.encode_bcd(value, width)
    assert len(raw) == width
    assert codec.decode_bcd(raw) == value


def test_little_endian():
    assert codec.encode_le(0x12345678, 4) == b"\x78\x56\x34\x12"
    assert codec.decode_le(b"\x78\x56\x34\x12") == 0x12345678
    with pytest.raises(codec.CodecError):
        codec.encode_le(256, 1)


@pytest.mark.parametrize(("qty", "raw"), [
    (Decimal("1"), b"\x00\x00\x00\x10\x00"),
    (Decimal("0.001"), b"\x00\x00\x00\x00\x01"),
    (Decimal("2.5"), b"\x00\x00\x00\x25\x00"),
    (Decimal("12345.678"), b"\x00\x12\x34\x56\x78"),
])
def test_quantity(qty, raw):
    assert codec.encode_quantity(qty) == raw
    assert codec.decode_quantity(raw) == qty


def test_quantity_refuses_floats_and_fourth_decimal():
    with pytest.raises(codec.CodecError):
        codec.encode_quantity(0.1)  # type: ignore[arg-type]
    with pytest.raises(codec.CodecError):
        codec.encode_quantity(Decimal("1.0001"))


def test_bcd_datetime():
    moment = dt.datetime(2026, 3, 14, 9, 5, 7)
    raw = codec.encode_bcd_datetime(moment, "YMDhms")
    assert raw == b"\x26\x03\x14\x09\x05\x07"
    assert codec.decode_bcd_datetime(raw, "YMDhms") == moment
    assert codec.decode_bcd_datetime(codec.encode_bcd_datetime(moment, "YMDhm"), "YMDhm") == moment.replace(second=0)
    assert codec.decode_bcd_datetime(b"\x27\x12\x31", "YMD") == dt.date(2027, 12, 31)
    assert codec.encode_bcd_datetime(None, "YMDhm") == bytes(5)
    assert codec.decode_bcd_datetime(bytes(6), "YMDhms") is None
    with pytest.raises(codec.CodecError):
        codec.decode_bcd_datetime(b"\x26\x13\x01", "YMD")


def test_text_numero_and_dollar_are_swapped():
    assert codec.encode_text("№") == b"\x24"
    assert codec.encode_text("$") == b"\xfc"
    assert codec.decode_text(b"\x24\xfc") == "№$"


def test_text_cyrillic_layout():
    assert codec.encode_text("А") == b"\x80"
    assert codec.encode_text("п") == b"\xaf"
    assert codec.encode_text("р") == b"\xe0"
    assert codec.encode_text("я") == b"\xef"
    assert codec.encode_text("Ё") == b"\xf0"
    assert codec.encode_text("ё") == b"\xf1"
    assert codec.encode_text("Чек №5 за $1") == b"\x97\xa5\xaa \x245 \xa7\xa0 \xfc1"


def test_text_unencodable_becomes_question_mark():
    assert codec.encode_text("a\u0fb2b😀") == b"a?b?"  # Tibetan and an emoji have no plain form


def test_text_typography_is_made_plain():
    assert codec.encode_text("«Хлеб» — 1…") == codec.encode_text('"Хлеб" - 1...')


@given(st.text(alphabet=st.characters(codec=None, categories=("L", "N", "P", "Zs"))
               .filter(lambda c: c in "№$ёЁ" or c.isascii() or "\u0410" <= c <= "\u044f")))
def test_text_round_trip(text):
    assert codec.decode_text(codec.encode_text(text)) == text


def test_fixed_text_field():
    raw = codec.encode_text_field("Молоко", 10)
    assert raw == "Молоко".encode("cp866") + b"\x00" * 4
    assert codec.decode_text_field(raw) == "Молоко"
    assert codec.encode_text_field("x" * 70, 64) == b"x" * 64


@pytest.mark.parametrize(("text", "printed"), [
    ("Crème brûlée", "Creme brulee"),
    ("Скидка 10 ₽", "Скидка 10 руб."),
    ("Коробка 2×3", "Коробка 2x3"),
    ("Сыр 1½ кг", "Сыр 1 1/2 кг"),
    ("½ арбуза", "1/2 арбуза"),
    ("日本", "??"),
])
def test_text_the_code_page_lacks_is_printed_plain_not_as_question_marks(text: str, printed: str) -> None:
    assert codec.decode_text(codec.encode_text(text)) == printed


def test_text_a_code_page_carries_is_left_as_it_is() -> None:
    # cp1251 (Shtrih) has «», — and €: only what the device's own page lacks is replaced.
    assert codec.plain_text("«Кофе» — 5 €, 10 ₽", "cp1251") == "«Кофе» — 5 €, 10 руб."
