"""Byte-exact request/answer transcripts of every Shtrih-M command the driver sends.

Bytes are hand-written here, never produced by our command table first. Two kinds of source:

* LOG — bytes a real device or vendor driver exchanged, quoted from a public issue;
* LAYOUT — bytes written out by hand from the field table of shtrih-protocol.md (whose own
  sources are named there) where no log shows the command.

Each transcript checks both directions: the driver's encoding of the request and its
decoding of the answer; the emulator's decoding of the request and encoding of the answer.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from kktapp.errors import DeviceError
from kktapp.shtrih import commands, model
from kktapp.shtrih.commands import CodecError

H = bytes.fromhex
PWD30 = "1E 00 00 00"

# name, password, params, request payload, answer payload, some answer fields, source
TRANSCRIPTS = [
    ("short_status", 1, {}, "10 01 00 00 00",
     "10 00 01 90 00 08 00 00 00 00 00 00 00 FF FF FF 00",
     {"operator": 1, "flags": 0x0090, "mode": 8, "submode": 0},
     "LOG javapos_shtrih #68 (one byte beyond the 14 known: tolerated)"),
    ("short_status", 28, {}, "10 1C 00 00 00",
     "10 00 1C 90 02 02 00 00 9D D7 D3 01 00 A0 02 00",
     {"operator": 28, "flags": 0x0290, "mode": 2, "submode": 0},
     "LOG fr_drv_ng #97 (opos), the 14-byte form"),
    ("full_status", 30, {}, "11 1E 00 00 00",
     "11 00 1E 43 32 64 86 1C 03 13 01 0A 00 90 00 02 00 80 4E 41 00 00 01 01 10 02 08 13 0E 03 06 00 "
     "E8 93 04 00 00 00 00 00 00 00 D2 58 01 CD 01 00 00 00",
     {"operator": 30, "fw_version": "C2", "fw_build": 0x8664, "fw_date": dt.date(2019, 3, 28),
      "document_number": 10, "flags": 0x0090, "mode": 2, "submode": 0, "date": dt.date(2019, 8, 2),
      "time": dt.time(14, 3, 6), "serial": 0x0493E8, "last_shift": 0, "inn": 7734384850},
     "LOG fr_drv_ng #72 (ШТРИХ-СМАРТПОС-Ф over v2, 2 bytes beyond the 46 known)"),
    ("device_type", None, {}, "FC",
     "FC 00 00 00 02 00 2D 00 50 4F 53 43 45 4E 54 45 52 20 42 41 4E 4B 2D 30 31 D4",
     {"type": 0, "protocol": 2, "model": 45, "name": "POSCENTER BANK-01Ф"},
     "LOG fr_drv_ng #109"),
    ("print_string_font", 1, {"flags": 2, "font": 1, "text": ""}, "2F 01 00 00 00 02 01" + " 00" * 40,
     "2F 00 01", {"operator": 1}, "LOG javapos_shtrih #68 (answer); LAYOUT §4.2 request"),
    ("operation", 30,
     {"operation_type": 1, "quantity": Decimal(3), "price": 1333, "amount": 4000, "tax_amount": model.AUTO_SUM,
      "tax": 1, "department": 0, "payment_method": 4, "payment_object": 1, "name": "Позиция 1"},
     "FF 46 1E 00 00 00 01 C0 C6 2D 00 00 00 35 05 00 00 00 A0 0F 00 00 00 FF FF FF FF FF 01 00 04 01 "
     "CF EE E7 E8 F6 E8 FF 20 31" + " 00" * 31,
     "FF 46 00", {}, "LOG javapos_shtrih #58 and #59 (both directions)"),
    ("close_receipt_ext", 30, {"payment1": 10000},
     "FF 45 " + PWD30 + " 10 27 00 00 00" + " 00" * 75 + " 00" + " 00" * 30 + " 00",
     "FF 45 00 00 00 00 00 00 52 00 00 00 F2 BF 0B 3E",
     {"change": 0, "fd_number": 82, "fiscal_sign": 0x3E0BBFF2, "datetime": None},
     "LOG javapos_shtrih #58 (request head, LEN 0x76 = 118) and fr_drv_ng #141 (13-byte answer)"),
    ("close_receipt_ext", 30, {"payment2": 55000, "taxation": 1},
     "FF 45 " + PWD30 + " 00 00 00 00 00 D8 D6 00 00 00" + " 00" * 70 + " 00" + " 00" * 30 + " 01",
     "FF 45 00 00 00 00 00 00 53 00 00 00 01 02 03 04 1A 0B 1E 0E 05",
     {"fd_number": 83, "fiscal_sign": 0x04030201, "datetime": dt.datetime(2026, 11, 30, 14, 5)},
     "LAYOUT §4.5 (18-byte answer with YY MM DD HH MM)"),
    ("subtotal", 1, {}, "89 01 00 00 00", "89 00 01 10 27 00 00 00", {"subtotal": 10000},
     "LOG javapos_shtrih #33 (request); LAYOUT §4.4 answer"),
    ("print_string", 30, {"text": "Привет"}, "17 " + PWD30 + " 02 CF F0 E8 E2 E5 F2" + " 00" * 34,
     "17 00 1E", {"operator": 30}, "LAYOUT §4.2 (flags 02 receipt roll, text NUL-padded to 40)"),
    ("cut", 30, {"cut_type": 0}, "25 " + PWD30 + " 00", "25 00 1E", {"operator": 30}, "LAYOUT §4.2"),
    ("continue_print", 30, {}, "B0 " + PWD30, "B0 00 1E", {"operator": 30}, "LAYOUT §4.2"),
    ("open_drawer", 30, {"drawer": 0}, "28 " + PWD30 + " 00", "28 00 1E", {"operator": 30},
     "LAYOUT pyshtrih open_drawer (drawer number)"),
    ("repeat_document", 30, {}, "8C " + PWD30, "8C 00 1E", {"operator": 30}, "LAYOUT pyshtrih repeat"),
    ("open_shift", 30, {}, "E0 " + PWD30, "E0 00 1E", {"operator": 30}, "LAYOUT §4.3"),
    ("open_shift", 30, {}, "E0 " + PWD30, "E0 00", {"operator": 0}, "LAYOUT §4.3, pyshtrih (error only)"),
    ("begin_open_shift", 30, {}, "FF 41 " + PWD30, "FF 41 00", {}, "LAYOUT §4.3 (opos OpenFiscalDay)"),
    ("x_report", 30, {}, "40 " + PWD30, "40 00 1E", {"operator": 30}, "LAYOUT §4.3"),
    ("z_report", 30, {}, "41 " + PWD30, "41 00 1E", {"operator": 30}, "LAYOUT §4.3"),
    ("begin_close_shift", 30, {}, "FF 42 " + PWD30, "FF 42 00", {}, "LAYOUT §4.3 (opos BeginZReport)"),
    ("begin_settlement_report", 30, {}, "FF 37 " + PWD30, "FF 37 00", {},
     "LAYOUT javapos FSStartCalcReport (sysadmin password, answer the error only)"),
    ("settlement_report", 30, {}, "FF 38 " + PWD30, "FF 38 00 2B 00 00 00 04 03 02 01 02 00 00 00 1A 0B 1E",
     {"fd_number": 43, "fiscal_sign": 0x01020304, "unsent": 2, "first_unsent_date": dt.date(2026, 11, 30)},
     "LAYOUT opos/javapos FSPrintCalcReport, pyshtrih 0xFF38 (FD 4, FS 4, count 4, YY MM DD)"),
    ("cash_in", 30, {"amount": 150000}, "50 " + PWD30 + " F0 49 02 00 00", "50 00 1E 07 00",
     {"operator": 30, "document_number": 7}, "LAYOUT §4.3"),
    ("cash_out", 30, {"amount": 1}, "51 " + PWD30 + " 01 00 00 00 00", "51 00 1E 08 00",
     {"document_number": 8}, "LAYOUT §4.3"),
    ("open_receipt", 30, {"receipt_type": 2}, "8D " + PWD30 + " 02", "8D 00 1E", {"operator": 30}, "LAYOUT §4.4"),
    ("sale", 30, {"quantity": Decimal("1.5"), "price": 10000, "department": 1, "tax1": 1, "text": "Хлеб"},
     "80 " + PWD30 + " DC 05 00 00 00 10 27 00 00 00 01 01 00 00 00 D5 EB E5 E1" + " 00" * 36,
     "80 00 1E", {"operator": 30}, "LAYOUT §4.4 (qty × 1000 in 5 bytes)"),
    ("close_receipt", 30, {"cash": 20000},
     "85 " + PWD30 + " 20 4E 00 00 00" + " 00" * 15 + " 00 00" + " 00" * 4 + " 00" * 40,
     "85 00 1E 10 27 00 00 00", {"change": 10000}, "LAYOUT §4.4"),
    ("cancel_receipt", 30, {}, "88 " + PWD30, "88 00 1E", {"operator": 30}, "LAYOUT §4.4"),
    ("write_tlv", 30, {"tlv": H("FD 03 05 00 C8 E2 E0 ED EE")}, "FF 0C " + PWD30 + " FD 03 05 00 C8 E2 E0 ED EE",
     "FF 0C 00", {}, "LAYOUT §4.6 (tag 1021 «Ивано», cp1251)"),
    ("write_tlv_operation", 30, {"tlv": H("3C 08 01 00 0B")}, "FF 4D " + PWD30 + " 3C 08 01 00 0B",
     "FF 4D 00", {}, "LAYOUT §4.5 (tag 2108 = 11 kg)"),
    ("fn_status", 30, {}, "FF 01 " + PWD30,
     "FF 01 00 03 00 00 01 00 1A 0B 1E 0E 05 39 39 39 39 30 30 30 30 30 30 31 32 33 34 35 36 2A 00 00 00",
     {"phase": 3, "shift_open": 1, "datetime": dt.datetime(2026, 11, 30, 14, 5),
      "fn_number": "9999000000123456", "last_fd_number": 42}, "LAYOUT §4.6 (FD at payload 29..32, e-kiosk)"),
    ("fn_expiry", 30, {}, "FF 03 " + PWD30, "FF 03 00 1C 05 1E 1D 01",
     {"valid_until": dt.date(2028, 5, 30), "registrations_left": 29, "registrations_done": 1}, "LAYOUT §4.6"),
    ("fn_shift", 30, {}, "FF 40 " + PWD30, "FF 40 00 01 05 00 0C 00",
     {"shift_open": 1, "shift_number": 5, "receipt_number": 12}, "LAYOUT §4.6"),
    ("ofd_status", 30, {}, "FF 39 " + PWD30, "FF 39 00 01 00 02 00 28 00 00 00 1A 0B 1E 0D 00",
     {"unsent": 2, "first_unsent_number": 40, "first_unsent_at": dt.datetime(2026, 11, 30, 13, 0)}, "LAYOUT §4.6"),
    ("find_document", 30, {"fd_number": 42}, "FF 0A " + PWD30 + " 2A 00 00 00",
     "FF 0A 00 03 01 1A 0B 1E 0E 05 2A 00 00 00 01 02 03 04 01 10 27 00 00 00",
     {"doc_type": 3, "ticket": 1}, "LAYOUT §4.6 (type 3 receipt)"),
    ("money_register", 30, {"register": 241}, "1A " + PWD30 + " F1", "1A 00 1E 10 27 00 00 00 00",
     {"value": 10000}, "LAYOUT pyshtrih request_monetary_register"),
    ("fn_cancel_document", 30, {}, "FF 08 " + PWD30, "FF 08 00", {}, "LAYOUT §4.6"),
]


@pytest.mark.parametrize("name, password, params, wire_request, answer, fields, source", TRANSCRIPTS,
                         ids=[f"{t[0]}-{i}" for i, t in enumerate(TRANSCRIPTS)])
def test_transcript(name: str, password: int | None, params: dict, wire_request: str, answer: str, fields: dict,
                    source: str) -> None:
    cmd = commands.get(name)
    req, ans = H(wire_request), H(answer)
    # The driver's side.
    assert cmd.encode(password, **params) == req, source
    got = cmd.decode_reply(ans)
    for key, value in fields.items():
        assert got[key] == value, (key, source)
    # The emulator's side: it parses the same request back.
    parsed_cmd, parsed_password, parsed = commands.parse_request(req)
    assert parsed_cmd is cmd and parsed_password == password
    for key, value in params.items():
        assert parsed[key] == value, (key, source)


def test_every_command_has_a_transcript() -> None:
    assert {t[0] for t in TRANSCRIPTS} == set(commands.COMMANDS) - {"buy", "sale_return", "buy_return"}


def test_find_document_receipt_data() -> None:
    # §4.6 type 3: date/time(5), FD(4), FS(4), operation type(1), amount(5).
    data = H("1A 0B 1E 0E 05 2A 00 00 00 01 02 03 04 01 10 27 00 00 00")
    doc = commands.decode_document(3, data)
    assert doc == {"datetime": dt.datetime(2026, 11, 30, 14, 5), "fd_number": 42, "fiscal_sign": 0x04030201,
                   "operation_type": 1, "total": 10000}
    # Types 2 and 5 (shift documents): date/time, FD, FS, shift number(2).
    shift = commands.decode_document(5, H("1A 0B 1E 0E 05 2B 00 00 00 01 02 03 04 05 00"))
    assert shift["shift_number"] == 5 and shift["fd_number"] == 43
    # Type 21 (settlement-state report, opos DecodeDocType21): date/time, FD, FS, unconfirmed
    # count (2 as opos's code reads it), the first one's date/time.
    report = commands.decode_document(21, H("1A 0B 1E 0E 05 2C 00 00 00 01 02 03 04 02 00 1A 0B 1D 09 00"))
    assert report == {"datetime": dt.datetime(2026, 11, 30, 14, 5), "fd_number": 44, "fiscal_sign": 0x04030201,
                      "unsent": 2, "first_unsent_at": dt.datetime(2026, 11, 29, 9, 0)}


@pytest.mark.parametrize("answer, code", [
    ("10 4F", 0x4F),  # wrong password
    ("FF 46 37", 0x37),  # FF46 not supported: the classic fallback's trigger (javapos)
    ("FF 37", 0x37),  # opos SendCommand: byte 2 is not our sub-code → it is the error
    ("FF 45 6B", 0x6B),
])
def test_error_answers(answer: str, code: int) -> None:
    name = {"10": "short_status", "FF": "operation"}[answer[:2]]
    if answer.startswith("FF 45"):
        name = "close_receipt_ext"
    with pytest.raises(DeviceError) as err:
        commands.get(name).decode_reply(H(answer))
    assert err.value.code == code
    assert err.value.message  # Russian text for the cashier


def test_error_texts_cover_fn_range() -> None:
    from kktapp.shtrih.errors import MESSAGES, error_text

    for code in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x10, 0x11, 0x12, 0x14, 0x15,
                 0x16, 0x17, 0x20, 0x30):
        assert code in MESSAGES
    assert "24" in error_text(0x16) and "ФН" in error_text(0x16)
    assert "ОФД" in error_text(0x15)
    assert error_text(0xEE).startswith("Ошибка ККТ")


def test_answer_for_another_command_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        commands.get("short_status").decode_reply(H("11 00 1E"))


def test_tax_codes_2026() -> None:
    from kktapp.domain import VatRate

    # shtrih-protocol.md §5: rows 1-6 as bits [C], 7-10 0x81.. [S], 22 % 0xCB/0xCC [S].
    assert [model.TAX_CODES[r] for r in (VatRate.VAT20, VatRate.VAT10, VatRate.VAT0, VatRate.NONE,
                                         VatRate.VAT120, VatRate.VAT110)] == [1, 2, 4, 8, 0x10, 0x20]
    assert [model.TAX_CODES[r] for r in (VatRate.VAT5, VatRate.VAT7, VatRate.VAT105, VatRate.VAT107)] == [
        0x81, 0x82, 0x84, 0x88]
    assert (model.TAX_CODES[VatRate.VAT22], model.TAX_CODES[VatRate.VAT122]) == (0xCB, 0xCC)
    assert set(model.TAX_CODES) == set(VatRate)


def test_tlv_encoding() -> None:
    # Tag 1008 (LE 0x03F0), length 5, cp1251 text.
    assert commands.tlv(1008, "a@b.c") == H("F0 03 05 00 61 40 62 2E 63")
    # Tag 1187 (LE 0x04A3), cp1251 text; [U] 1125 (LE 0x0465) one byte 01 (kktapp/atol/model.py).
    assert commands.tlv(1187, "сайт.рф") == H("A3 04 07 00 F1 E0 E9 F2 2E F0 F4")
    assert commands.tlv(1125, 1) == H("65 04 01 00 01")
    assert commands.parse_tlv(H("65 04 01 00 01")) == [(1125, 1)]
    # Tag 1178 is UnixTime: 2026-01-15 00:00 UTC = 0x69682E00.
    assert commands.tlv(1178, dt.date(2026, 1, 15)) == H("9A 04 04 00 00 2E 68 69")
    assert commands.parse_tlv(H("9A 04 04 00 00 2E 68 69")) == [(1178, dt.date(2026, 1, 15))]
    # What the device is sent must be whole records: a cut one or a stray byte is refused.
    for broken in (H("65 04 01 00"), H("65 04 01 00 01 00")):
        with pytest.raises(commands.CodecError):
            commands.parse_tlv(broken)


def test_limits_fit_the_commands() -> None:
    lim = commands.LIMITS
    op = commands.get("operation")
    # The largest values encode; one more does not (or would be the FF..FF marker).
    op.encode(30, operation_type=1, quantity=lim.max_quantity, price=lim.max_price, amount=lim.max_position_sum,
              tax=1, name="я" * lim.name_bytes)
    with pytest.raises(CodecError):
        op.encode(30, operation_type=1, quantity=1, price=1, tax=1, name="я" * (lim.name_bytes + 1))
    assert lim.max_price + 1 == model.AUTO_SUM
    payload = commands.get("print_string").encode(30, text="x" * lim.text_line_bytes)
    assert len(payload) == 255
