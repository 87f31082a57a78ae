"""Protocol v3 packets: vectors, escaping, and the stream decoder under any chunking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kktapp.atol.framing import BadPacket, Decoder, Packet, crc8, encode_packet

ids = st.integers(min_value=0, max_value=0xF0)
datas = st.binary(max_size=300)
# Data biased towards the special bytes so escaping is exercised on every run.
special_datas = st.lists(st.sampled_from([0xFE, 0xFD, 0xEE, 0xED, 0x00, 0x55]), max_size=40).map(bytes)
packets = st.lists(st.tuples(ids, st.one_of(datas, special_datas)), min_size=1, max_size=6)


def test_crc_check_value():
    assert crc8(b"123456789") == 0xF7


def test_vector_empty_packet():
    assert encode_packet(0x01, b"") == bytes.fromhex("FE 00 00 01 9D")


def test_vector_async_packet_with_escaped_crc():
    raw = bytes.fromhex("FE 05 00 F0 A6 57 55 00 00 FD EE")
    assert encode_packet(0xF0, bytes.fromhex("A6 57 55 00 00")) == raw
    assert Decoder().feed(raw) == [Packet(0xF0, bytes.fromhex("A6 57 55 00 00"))]


def test_length_is_split_seven_seven():
    raw = encode_packet(7, bytes(300))
    assert raw[1] == 300 & 0x7F and raw[2] == 300 >> 7


def test_data_escaping():
    raw = encode_packet(3, b"\xfe\xfd\x01")
    assert raw[4:8] == b"\xfd\xee\xfd\xed"
    assert b"\xfe" not in raw[1:]
    assert Decoder().feed(raw) == [Packet(3, b"\xfe\xfd\x01")]


def test_bad_packet_ids_refused():
    with pytest.raises(ValueError):
        encode_packet(0xFE, b"")
    with pytest.raises(ValueError):
        encode_packet(1, bytes(0x4000))


@given(ids, st.one_of(datas, special_datas))
def test_round_trip(pid, data):
    raw = encode_packet(pid, data)
    assert raw.count(0xFE) == 1  # only the start byte: everything inside is escaped
    assert Decoder().feed(raw) == [Packet(pid, data)]


@given(packets, st.data())
def test_any_chunking_of_a_stream(pkts, draw):
    stream = b"".join(encode_packet(pid, data) for pid, data in pkts)
    cuts = sorted(draw.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20)))
    decoder = Decoder()
    events = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        events += decoder.feed(stream[prev:cut])
        prev = cut
    assert events == [Packet(pid, data) for pid, data in pkts]


@given(packets, st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\xfe", b"")), min_size=7, max_size=7))
def test_garbage_before_and_between_packets_without_start_byte(pkts, garbage):
    stream = b"".join(g + encode_packet(pid, data) for (pid, data), g in zip(pkts, garbage, strict=False))
    events = Decoder().feed(stream + garbage[-1])
    assert events == [Packet(pid, data) for pid, data in pkts]


@given(packets, st.lists(st.binary(max_size=30), min_size=7, max_size=7))
def test_any_garbage_never_hides_a_good_packet(pkts, garbage):
    # Garbage with FE may make bogus events, but every real packet still comes out, in order.
    stream = b"".join(g + encode_packet(pid, data) for (pid, data), g in zip(pkts, garbage, strict=False))
    good = [e for e in Decoder().feed(stream) if isinstance(e, Packet)]
    expected = [Packet(pid, data) for pid, data in pkts]
    it = iter(good)
    assert all(any(e == want for e in it) for want in expected)


def test_bad_crc_reports_the_packet_id_and_resynchronises():
    bad = bytearray(encode_packet(0x11, b"\x01\x02"))
    bad[-1] ^= 0x01
    events = Decoder().feed(bytes(bad) + encode_packet(0x12, b"\x03"))
    assert events == [BadPacket(0x11, "bad CRC"), Packet(0x12, b"\x03")]


def test_bad_escape_reports_the_packet_id():
    raw = bytes.fromhex("FE 02 00 21 FD 01 00 00")
    events = Decoder().feed(raw + encode_packet(0x22, b""))
    assert events[0] == BadPacket(0x21, "bad escape FD 01")
    assert events[-1] == Packet(0x22, b"")


def test_bad_length_byte():
    events = Decoder().feed(bytes.fromhex("FE 80") + encode_packet(5, b"ok"))
    assert isinstance(events[0], BadPacket) and events[0].id is None
    assert events[-1] == Packet(5, b"ok")


def test_truncated_packet_is_reported_when_the_next_starts():
    full = encode_packet(0x30, b"abcdef")
    events = Decoder().feed(full[:6] + encode_packet(0x31, b"x"))
    assert events == [BadPacket(0x30, "packet cut short by a new start byte"), Packet(0x31, b"x")]


def test_empty_packet_is_a_packet():
    assert Decoder().feed(encode_packet(0x44, b"")) == [Packet(0x44, b"")]
