"""Shtrih-M framing vectors: v1 LRC frames, the handshake bytes, 0xFF filler, v2 CRC frames.

Every vector is written out by hand from a source (a device log in a public issue, or the
layout in shtrih-protocol.md) and is never produced by our own encoder first.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kktapp.shtrih import framing
from kktapp.shtrih.framing import ACK, ENQ, NAK, BadFrame, Control, Decoder, Frame, V2Decoder, V2Frame


@pytest.mark.parametrize("frame, payload", [
    # javapos_shtrih #33, a real log: 0x89 subtotal, password 1 (LRC 0x8D recomputed in the doc).
    ("02 05 89 01 00 00 00 8D", "89 01 00 00 00"),
    # javapos_shtrih #68, a real log: 0x10 short status, password 1.
    ("02 05 10 01 00 00 00 14", "10 01 00 00 00"),
    # fr_drv_ng #97, a real opos log: 0x10 with password 28.
    ("02 05 10 1C 00 00 00 09", "10 1C 00 00 00"),
    # shtrih-protocol.md §1.1: 0x10 with password 30 (computed there, no device log).
    ("02 05 10 1E 00 00 00 0B", "10 1E 00 00 00"),
    # javapos_shtrih #68: the device's answer to 0x2F, operator 1.
    ("02 03 2F 00 01 2D", "2F 00 01"),
    # javapos_shtrih #58/#59: the device's answer to FF46.
    ("02 03 FF 46 00 BA", "FF 46 00"),
])
def test_v1_frames_from_logs(frame: str, payload: str) -> None:
    raw, body = bytes.fromhex(frame), bytes.fromhex(payload)
    assert framing.encode_frame(body) == raw
    assert Decoder().feed(raw) == [Frame(body)]
    assert framing.lrc(raw[1:-1]) == raw[-1]


def test_filler_before_nak_is_skipped() -> None:
    # javapos #58/#59 and fr_drv_ng #97 (opos): ENQ answered "FF" then "15" on TCP.
    dec = Decoder()
    assert dec.feed(bytes.fromhex("FF 15")) == [Control(NAK)]
    assert dec.skipped == 1


def test_filler_and_noise_between_frames_and_any_chunking() -> None:
    raw = bytes.fromhex("FF FF 06 FF 02 03 2F 00 01 2D FF 15")
    want = [Control(ACK), Frame(bytes.fromhex("2F 00 01")), Control(NAK)]
    assert Decoder().feed(raw) == want
    dec = Decoder()
    got = []
    for b in raw:
        got += dec.feed(bytes((b,)))
    assert got == want


def test_filler_inside_a_frame_is_data() -> None:
    # FF46 carries FF bytes (the amount marker): inside a frame LEN decides, nothing is skipped.
    raw = bytes.fromhex("02 03 FF 46 00 BA")
    assert Decoder().feed(raw) == [Frame(bytes.fromhex("FF 46 00"))]


def test_bad_lrc_is_reported() -> None:
    events = Decoder().feed(bytes.fromhex("02 03 2F 00 01 2C"))
    assert len(events) == 1 and isinstance(events[0], BadFrame)


def test_control_bytes() -> None:
    assert (ENQ, ACK, NAK) == (0x05, 0x06, 0x15)
    assert Decoder().feed(bytes((ENQ,))) == [Control(ENQ)]


def test_payload_limit() -> None:
    framing.encode_frame(bytes(255))
    with pytest.raises(ValueError):
        framing.encode_frame(bytes(256))
    with pytest.raises(ValueError):
        framing.encode_frame(b"")


@given(st.binary(min_size=1, max_size=255), st.lists(st.integers(1, 7), max_size=40))
def test_v1_roundtrip_any_chunking(payload: bytes, cuts: list[int]) -> None:
    raw = b"\xff" + framing.encode_frame(payload) + b"\xff"
    dec = Decoder()
    got: list = []
    pos = 0
    for cut in cuts:
        got += dec.feed(raw[pos:pos + cut])
        pos += cut
    got += dec.feed(raw[pos:])
    assert got == [Frame(payload)]


# ------------------------------------------------------------------------------ protocol v2


def test_crc16_ccitt_false_check_value() -> None:
    assert framing.crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("frame, number, payload", [
    # fr_drv_ng #141 (in the doc, CRC recomputed): 0x2D table structure, password 30, table 2.
    ("8F 08 00 21 00 2D 1E 00 00 00 02 32 07", 0x21, "2D 1E 00 00 00 02"),
    # fr_drv_ng #141: FF45 answer (change 0, FD 82, fiscal sign 0x3E0BBFF2, no date).
    ("8F 12 00 25 00 FF 45 00 00 00 00 00 00 52 00 00 00 F2 BF 0B 3E 90 6B", 0x25,
     "FF 45 00 00 00 00 00 00 52 00 00 00 F2 BF 0B 3E"),
    # fr_drv_ng #141: 0x10 request with password 1 and its answer.
    ("8F 07 00 26 00 10 01 00 00 00 E4 14", 0x26, "10 01 00 00 00"),
    ("8F 13 00 26 00 10 00 01 90 00 02 00 00 33 48 00 00 00 FF FF FF 00 78 C2", 0x26,
     "10 00 01 90 00 02 00 00 33 48 00 00 00 FF FF FF 00"),
    # fr_drv_ng #72: 0x11 request with password 30.
    ("8F 07 00 03 00 11 1E 00 00 00 AD 66", 3, "11 1E 00 00 00"),
    # fr_drv_ng #109: 0xFC request (no password).
    ("8F 03 00 04 00 FC 8D 0D", 4, "FC"),
])
def test_v2_frames_from_logs(frame: str, number: int, payload: str) -> None:
    raw, body = bytes.fromhex(frame), bytes.fromhex(payload)
    assert framing.encode_v2(number, body) == raw
    assert V2Decoder().feed(raw) == [V2Frame(number, body)]


def test_v2_stuffing() -> None:
    # §1.3: 0x8F inside travels as 9F 81, 0x9F as 9F 83.
    raw = framing.encode_v2(0x8F, bytes((0x9F,)))
    assert raw[0] == 0x8F and 0x8F not in raw[1:]
    assert raw[1:].startswith(bytes.fromhex("03 00 9F 81 00 9F 83"))
    assert V2Decoder().feed(raw) == [V2Frame(0x8F, bytes((0x9F,)))]


def test_v2_bad_crc() -> None:
    raw = bytearray.fromhex("8F 07 00 03 00 11 1E 00 00 00 AD 67")
    assert isinstance(V2Decoder().feed(bytes(raw))[0], BadFrame)


def test_v2_sync_frame_is_empty() -> None:
    raw = framing.encode_v2(0, b"")
    assert raw[:5] == bytes.fromhex("8F 02 00 00 00")
    assert V2Decoder().feed(raw) == [V2Frame(0, b"")]
