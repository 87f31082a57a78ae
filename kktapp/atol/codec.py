"""Field encodings of the ATOL command layer: BCD, little-endian integers, the device text codec.

Money is integer kopecks and quantities are :class:`~decimal.Decimal`; nothing here ever
touches a float. BCD is big-endian, two digits a byte (atol-protocol.md §2.1). The text codec
is CP866 with two characters swapped: the device prints '№' for 0x24 and '$' for 0xFC.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import unicodedata
from collections.abc import Callable
from decimal import Decimal

log = logging.getLogger(__name__)

#: Quantity on the wire: Decimal × 1000 as 5-byte BCD.
QUANTITY_SCALE = 1000
QUANTITY_BYTES = 5


class CodecError(ValueError):
    """A value does not fit its field, or the bytes are not a valid encoding."""


# --------------------------------------------------------------------------- BCD


def encode_bcd(value: int, width: int) -> bytes:
    """Non-negative integer as ``width`` bytes of big-endian BCD; overflow is an error."""
    if type(value) is not int:  # a bool, an IntEnum, or no integer at all
        if isinstance(value, bool) or not isinstance(value, int):
            raise CodecError(f"BCD needs an int, got {value!r}")
        value = int(value)  # an IntEnum's str() is its name on Python 3.10
    if value < 0:
        raise CodecError(f"BCD cannot hold a negative number: {value}")
    # BCD shows the decimal digits as hex digits: read the decimal text as hex, and those are the bytes.
    digits = str(value)
    if len(digits) > 2 * width:
        raise CodecError(f"{value} does not fit in {width} BCD bytes")
    return int(digits, 16).to_bytes(width, "big")


def decode_bcd(data: bytes) -> int:
    """Big-endian BCD bytes to an integer; a nibble above 9 is an error."""
    # The inverse trick: the hex text of BCD bytes is the decimal number, unless a nibble is A–F.
    digits = data.hex()
    if digits.isdigit():
        return int(digits)
    for byte in data:
        if byte >> 4 > 9 or byte & 0x0F > 9:
            raise CodecError(f"not a BCD byte: {byte:02X}")
    return 0  # no bytes at all


def _bcd_byte(byte: int) -> int:
    """One BCD byte (a date part) to its number."""
    if byte not in _BCD_BYTE:
        raise CodecError(f"not a BCD byte: {byte:02X}")
    return _BCD_BYTE[byte]


#: BCD byte → its number, 0x00..0x99.
_BCD_BYTE = {(n // 10) << 4 | n % 10: n for n in range(100)}


# --------------------------------------------------------------------------- little-endian


def encode_le(value: int, width: int) -> bytes:
    """Unsigned little-endian integer of ``width`` bytes."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"integer field needs an int, got {value!r}")
    try:
        return value.to_bytes(width, "little", signed=False)
    except OverflowError:
        raise CodecError(f"{value} does not fit in {width} unsigned bytes") from None


def decode_le(data: bytes) -> int:
    """Unsigned little-endian integer."""
    return int.from_bytes(data, "little", signed=False)


# --------------------------------------------------------------------------- quantity


def encode_quantity(quantity: Decimal) -> bytes:
    """Quantity with at most three decimals as 5-byte BCD of quantity × 1000."""
    if not isinstance(quantity, (Decimal, int)) or isinstance(quantity, bool):
        # Floats are refused on purpose: 0.1 kg must not become 0.09999 kg.
        raise CodecError(f"quantity must be Decimal or int, got {quantity!r}")
    scaled = Decimal(quantity) * QUANTITY_SCALE
    if scaled != scaled.to_integral_value():
        raise CodecError(f"quantity {quantity} has more than three decimals")
    return encode_bcd(int(scaled), QUANTITY_BYTES)


def decode_quantity(data: bytes) -> Decimal:
    """5-byte BCD back to a Decimal quantity with three decimals."""
    return (Decimal(decode_bcd(data)) / QUANTITY_SCALE).quantize(Decimal("0.001"))


# --------------------------------------------------------------------------- date and time


def encode_bcd_datetime(value: dt.datetime | dt.date | None, parts: str) -> bytes:
    """Date/time as one BCD byte per part (``Y`` two-digit year, ``M``, ``D``, ``h``, ``m``, ``s``).

    ``None`` is all zeros: the device's way of saying "no date" (e.g. a closed shift).
    """
    if value is None:
        return bytes(len(parts))
    return b"".join(encode_bcd(n, 1) for n in _parts(value, parts))


def decode_bcd_datetime(data: bytes, parts: str) -> dt.datetime | dt.date | None:
    """Inverse of :func:`encode_bcd_datetime`: a date when only Y/M/D are given, else a datetime."""
    return _build_datetime(data, parts, _bcd_byte)


def _build_datetime(data: bytes, parts: str, number: Callable[[int], int]) -> dt.datetime | dt.date | None:
    """One byte per part, read by ``number``; all zeros is None."""
    if len(data) != len(parts):
        raise CodecError(f"date field needs {len(parts)} bytes, got {len(data)}")
    if not any(data):
        return None
    values = dict.fromkeys("YMDhms", 0)
    for part, byte in zip(parts, data, strict=True):
        values[part] = number(byte)
    try:
        if set(parts) <= set("YMD"):
            return dt.date(2000 + values["Y"], values["M"], values["D"])
        return dt.datetime(2000 + values["Y"], values["M"], values["D"], values["h"], values["m"], values["s"])
    except ValueError as exc:
        raise CodecError(f"not a valid date: {data.hex(' ')}") from exc


def _parts(value: dt.datetime | dt.date, parts: str) -> list[int]:
    out = []
    for part in parts:
        if part in "YMD":
            out.append({"Y": value.year % 100, "M": value.month, "D": value.day}[part])
        else:
            if not isinstance(value, dt.datetime):
                raise CodecError(f"{value!r} has no time of day for part {part!r}")
            out.append({"h": value.hour, "m": value.minute, "s": value.second}[part])
    return out


def encode_bin_datetime(value: dt.datetime | dt.date | None, parts: str) -> bytes:
    """Date/time as one BINARY byte per part (FN replies, A4 xx); None is all zeros."""
    if value is None:
        return bytes(len(parts))
    return bytes(_parts(value, parts))


def decode_bin_datetime(data: bytes, parts: str) -> dt.datetime | dt.date | None:
    """Inverse of :func:`encode_bin_datetime`."""
    return _build_datetime(data, parts, int)


# --------------------------------------------------------------------------- text

# CP866 already puts А–п at 0x80–0xAF, р–я at 0xE0–0xEF, Ё/ё at 0xF0/0xF1 and '№' at 0xFC;
# the device swaps the last one with '$' (0x24), so '№' prints from 0x24 and '$' from 0xFC.
_SWAP = bytes.maketrans(b"\x24\xfc", b"\xfc\x24")
# Typography that CP866 lacks but Russian item names are full of: print the plain equivalent
# rather than '?'.
_PLAIN = str.maketrans({
    "«": '"', "»": '"', "„": '"', "“": '"', "”": '"', "‘": "'", "’": "'",
    "—": "-", "–": "-", "\u2212": "-", "\u00a0": " ", "…": "...",
    # Signs a shop writes into names and lines, which neither CP866 nor cp1251 has whole.
    "₽": "руб.", "€": "EUR", "×": "x", "\u2044": "/",
})


def plain_text(text: str, encoding: str) -> str:
    """``text`` as the device's code page can carry it: each character the code page lacks
    becomes its plain equivalent (quotes, dashes, ₽), an accented letter loses its accent
    (é → e), a vulgar fraction is spelt out (1½ → 1 1/2); what is still unknown stays for the
    encoder to turn into '?'. Text the code page carries whole comes back as it is, but for the
    no-break space: both code pages have one (CP866 at 0xFF), and a printer's is not ours to trust."""
    text = text.replace("\u00a0", " ")
    try:
        text.encode(encoding)
        return text
    except UnicodeEncodeError:
        pass
    out: list[str] = []
    for ch in text:
        plain = _plain_char(ch, encoding)
        if "/" in plain and plain != ch and out and out[-1][-1:].isdigit() and unicodedata.numeric(ch, None):
            plain = " " + plain  # 1½ is one and a half, not eleven halves
        out.append(plain)
    return "".join(out)


def _plain_char(ch: str, encoding: str) -> str:
    try:
        ch.encode(encoding)
        return ch
    except UnicodeEncodeError:
        pass
    mapped = ch.translate(_PLAIN)
    if mapped != ch:
        return mapped
    decomposed = unicodedata.normalize("NFKD", ch)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_PLAIN)
    try:
        kept.encode(encoding)
    except UnicodeEncodeError:
        return ch
    return kept or ch


def encode_plain(text: str, encoding: str) -> bytes:
    """``text`` in ``encoding`` as :func:`plain_text` makes it, anything still unknown → '?'.

    Encodes once when the text fits the code page as it is (nearly every name and line), instead
    of plain_text's strict probe followed by the encode."""
    if "\u00a0" not in text:
        try:
            return text.encode(encoding)
        except UnicodeEncodeError:
            pass
    return plain_text(text, encoding).encode(encoding, errors="replace")


def encode_text(text: str) -> bytes:
    """Text in the device code page (:func:`plain_text`), anything else unknown → '?'."""
    data = encode_plain(text, "cp866")
    printed = data.decode("cp866")  # one byte a character: what the device will print
    if printed != text:
        _note_changed(text, printed)
    return data.translate(_SWAP)


@functools.lru_cache(maxsize=1024)
def _note_changed(text: str, printed: str) -> None:
    # What prints differs from what the caller sent: say so (once per text, a receipt encodes a
    # name more than once), or «» → "" looks like a bug of ours.
    log.info("текст для ККТ изменён (в её кодовой странице нет этих символов): %r → %r", text, printed)


def decode_text(data: bytes) -> str:
    """Device code page to text."""
    return data.translate(_SWAP).decode("cp866", errors="replace")


def encode_text_field(text: str, width: int) -> bytes:
    """Fixed-width text field: cut to ``width`` bytes, zero-padded on the right."""
    return encode_text(text)[:width].ljust(width, b"\x00")


def decode_text_field(data: bytes) -> str:
    """Fixed-width text field: everything up to the first zero byte."""
    return decode_text(data.split(b"\x00", 1)[0])
