"""Edges of the v3 packet layer (kktapp/atol/framing.py) that the property tests do not pin.

Bytes typed by hand from atol-protocol.md §1.2 (``FE LEN0 LEN1 ID DATA CRC``, LEN split 7/7,
FD EE / FD ED escapes, CRC-8 poly 0x31 init 0xFF over ID + DATA). The CRC table is checked
against the first two rows of the published MSB-first CRC-8 poly 0x31 table (the one
Sensirion's and Dallas/Maxim's application notes print) and the CRC catalogue's check value of
CRC-8/NRSC-5 ("123456789" → F7). Found by the mutation check (`make mutate`).
"""

from __future__ import annotations

import logging

import pytest

from kktapp.atol import framing
from kktapp.atol.framing import BadPacket, Decoder, Packet, crc8, encode_packet

H = bytes.fromhex


def test_crc_table_rows():
    table = framing._crc_table()
    assert len(table) == 256
    assert bytes(table[:32]) == H(
        "00 31 62 53 C4 F5 A6 97 B9 88 DB EA 7D 4C 1F 2E 43 72 21 10 87 B6 E5 D4 FA CB 98 A9 3E 0F 5C 6D")
    assert table == framing._CRC_TABLE


def test_crc_init_and_chaining():
    assert crc8(b"") == 0xFF
    assert crc8(b"", 0x00) == 0x00
    assert crc8(b"\x01", 0x00) == 0x31
    assert crc8(b"56789", crc8(b"1234")) == 0xF7


def test_escape_each_special_byte_alone():
    assert framing.escape(b"\xfe") == b"\xfd\xee"
    assert framing.escape(b"\xfd") == b"\xfd\xed"
    assert framing.escape(b"\x01\xfe\x02") == b"\x01\xfd\xee\x02"
    assert framing.escape(b"\xee\xed") == b"\xee\xed"


def test_packet_id_limits():
    assert encode_packet(0x00, H("3F")) == H("FE 01 00 00 3F 6A")
    assert encode_packet(0xFF, b"") == H("FE 00 00 FF 00")
    assert encode_packet(0x11, b"") == H("FE 00 00 11 DE")
    for bad in (-1, 0x100, 0xFE):
        with pytest.raises(ValueError, match=f"^bad packet id {bad}$"):
            encode_packet(bad, b"")


def test_longest_packet_both_ways():
    data = bytes(framing.MAX_DATA)
    raw = encode_packet(0x05, data)
    assert raw[:4] == H("FE 7F 7F 05")
    assert Decoder().feed(raw) == [Packet(0x05, data)]
    with pytest.raises(ValueError, match=r"^packet data too long: 16384 > 16383$"):
        encode_packet(1, bytes(framing.MAX_DATA + 1))


def test_length_bytes_are_read_as_seven_plus_seven_bits():
    data = bytes(range(129))  # LEN0 01, LEN1 01
    raw = encode_packet(0x21, data)
    assert raw[1:3] == H("01 01")
    assert Decoder().feed(raw) == [Packet(0x21, data)]


def test_bad_second_length_byte():
    events = Decoder().feed(H("FE 01 80") + encode_packet(5, b"ok"))
    assert events == [BadPacket(None, "bad length byte 80"), Packet(5, b"ok")]
    assert Decoder().feed(H("FE 81")) == [BadPacket(None, "bad length byte 81")]


def test_garbage_is_counted_and_never_read_as_a_packet():
    decoder = Decoder()
    # Bytes that would be an empty packet 0x01 if the decoder did not wait for FE first.
    assert decoder.feed(H("00 00 01 9D")) == []
    assert decoder.garbage == 4
    events = decoder.feed(encode_packet(0x01, b"") + H("00 00 01 9D 33"))
    assert events == [Packet(0x01, b"")]
    assert decoder.garbage == 9


def test_two_start_bytes():
    # Each FE that cuts a started packet reports it: here the second FE and the packet's own.
    events = Decoder().feed(H("FE FE") + encode_packet(0x07, b"\x01"))
    cut = BadPacket(None, "packet cut short by a new start byte")
    assert events == [cut, cut, Packet(0x07, b"\x01")]


def test_a_new_packet_forgets_the_broken_one():
    # ID 0x11 read, then cut: the next packet's broken length must not report 0x11, and an
    # escape left open by the cut packet must not swallow the next packet's first byte.
    events = Decoder().feed(H("FE 03 00 11 FD") + H("FE 80") + encode_packet(0x12, H("ED 01")))
    assert events == [BadPacket(0x11, "packet cut short by a new start byte"),
                      BadPacket(None, "bad length byte 80"), Packet(0x12, H("ED 01"))]


def test_escaped_crc_and_bad_escape_in_crc():
    raw = encode_packet(0xF0, H("A6 57 55 00 00"))
    assert raw[-2:] == H("FD EE")
    events = Decoder().feed(raw[:-1] + H("01") + encode_packet(0x02, b""))
    assert events == [BadPacket(0xF0, "bad escape FD 01"), Packet(0x02, b"")]


def test_bad_packets_are_logged_for_the_programmer(caplog):
    with caplog.at_level(logging.DEBUG, logger=framing.__name__):
        Decoder().feed(H("FE 00 00 21 00"))
    assert [r.getMessage() for r in caplog.records] == ["bad packet id=33: bad CRC"]
