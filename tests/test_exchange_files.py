"""The Кассир 5 file formats without devices: goods file reading, report file merging, settings."""

from __future__ import annotations

import datetime as dt
import errno
from decimal import Decimal

import pytest

from kktapp.domain import Payment, PaymentType, Position, Receipt, SettlementType, VatRate
from kktapp.exchange.catalogue import Catalogue
from kktapp.exchange.db import ExchangeDb
from kktapp.exchange.goods import GoodsFileError, parse_goods_file
from kktapp.exchange.report import CashDoc, SaleDoc, build_block, merged_content
from kktapp.exchange.settings import load_settings
from kktapp.exchange.status import os_error_text


def spr(*lines: str, newline: str = "\r\n", marker: str = "#") -> bytes:
    return newline.join(["##@@&&", marker, *lines]).encode("cp1251") + newline.encode()


GOODS = "101;4600000000017;Молоко;Молоко 1л;89.90;1.000;0;0;0;0;0;;0;0;0;0;1"


# --------------------------------------------------------------------------- goods file


def test_goods_lines_groups_and_barcodes():
    parsed = parse_goods_file(spr(
        "$$$CLR",
        "5;;Весовые;Весовые;;;0;0;0;0;0;;0;0;0;0;0",
        "102;2000000001020;Сыр «Российский»;Сыр;650.00;15.250;0;1;0;0;0;СР-1;0;0;0;5;1",
        "#102;2000000001037;Сыр «Российский»;Сыр;650.00;;;;;1",
        # Newer readers' 25-field line: the extra fields are ignored.
        "103;;Хлеб;Хлеб;45,00;1.000;0;0;0;0;0;;0;0;0;0;1;0;0;0;0;0;0;0;0",
        "^1;скидка;10",
    ))
    assert parsed.pending and parsed.replace and parsed.command == "$$$CLR"
    group, cheese, bread = parsed.goods
    assert group.is_group and group.code == "5" and group.price == 0
    assert (cheese.code, cheese.price, cheese.weighted, cheese.parent) == ("102", 65000, True, "5")
    assert cheese.article == "СР-1"
    assert cheese.name == "Сыр «Российский»" and cheese.receipt_name == "Сыр"
    assert bread.price == 4500
    assert [(b.code, b.barcode, b.line) for b in parsed.barcodes] == [("102", "2000000001037", 6)]
    assert parsed.skipped == 1


def test_barcode_lines_as_1c_writes_them():
    # 1C: "# " + code;barcode;TrimAll(full name);TrimAll(name);price;;;;;Factor: the names keep ";"
    # and run past 100 characters, the factor is in 1C's default number format.
    long = "Ж" * 150
    parsed = parse_goods_file(spr(
        "$$$CLR", GOODS,
        "# 101;4600000000024;Молоко; 3,2% «Весёлый»;Молоко;89.90;;;;;1",
        "# 101;4600000000031;Молоко;Молоко;89.90;;;;;1\u00a0000",
        "# 101;4600000000048;Молоко;Молоко;89.90;;;;;0,5",
        f"# 101;4600000000055;{long};{long};89.90;;;;;1",
        "#101;4600000000062;Молоко упаковка;Молоко 6 шт;519.00;;;;;6",
    ))
    assert [(b.code, b.barcode, b.coefficient, b.price, b.name) for b in parsed.barcodes] == [
        ("101", "4600000000024", Decimal(1), 8990, ""),  # names not split: the goods item's are used
        ("101", "4600000000031", Decimal(1000), 8990, "Молоко"),
        ("101", "4600000000048", Decimal("0.5"), 8990, "Молоко"),
        ("101", "4600000000055", Decimal(1), 8990, ""),
        ("101", "4600000000062", Decimal(6), 51900, "Молоко 6 шт"),
    ]
    with pytest.raises(GoodsFileError, match="коэффициент «шесть»"):
        parse_goods_file(spr("$$$CLR", GOODS, "# 101;4600000000024;Молоко;Молоко;89.90;;;;;шесть"))


def test_add_command_and_options():
    assert parse_goods_file(spr("$$$ADD", GOODS)).replace is False
    assert parse_goods_file(spr("$$$CLR{NO_TOV}{USR}", GOODS)).replace is False
    # The command is not always on line 3 (a Django generator writes it last).
    assert parse_goods_file(spr(GOODS, "$$$CLR")).replace is True
    assert parse_goods_file(spr(GOODS, newline="\n")).goods[0].code == "101"


def test_loaded_file_is_not_read():
    assert parse_goods_file(spr("$$$CLR", "garbage", marker="@")).pending is False


@pytest.mark.parametrize(("line", "where", "text"), [
    ("101;;Молоко;Молоко;89.90;1;0;0;0;0;0;;0;0;0;0", 4, "16 полей"),
    ("101;;Молоко;Молоко;89.90;1;0;0;0;0;0;;0;0;0;0;2", 4, "поле 17"),
    ("0;;Молоко;Молоко;89.90;1;0;0;0;0;0;;0;0;0;0;1", 4, "код товара «0»"),
    ("101;;;;89.90;1;0;0;0;0;0;;0;0;0;0;1", 4, "нет наименования"),
    ("101;;Молоко;Молоко;89,901;1;0;0;0;0;0;;0;0;0;0;1", 4, "больше двух знаков"),
    ("101;;Молоко;Молоко;1;1;0;2;0;0;0;;0;0;0;0;1", 4, "весовой"),
    ("#101", 4, "нужны код товара и штрихкод"),
    ("$$$DELETEALLWARES", 4, "Frontol"),
    ("Привет", 4, "непонятная строка"),
])
def test_malformed_line_names_line_and_problem(line, where, text):
    with pytest.raises(GoodsFileError) as err:
        parse_goods_file(spr("$$$CLR", line))
    assert err.value.line == where and text in err.value.message


def test_empty_price_is_zero_not_a_bad_file():
    # 1C writes the price with Format(Price, "ND=15; NFD=2; NDS=.; NG=0"), which gives "" for 0:
    # a goods item without a price in 1C must not keep the whole catalogue out.
    parsed = parse_goods_file(spr("$$$CLR", GOODS, "555;;Пакет бесплатный;Пакет;;;0;0;0;0;0;;0;0;0;0;1"))
    assert [(g.code, g.price) for g in parsed.goods] == [("101", 8990), ("555", 0)]


def test_bad_header_and_encoding():
    with pytest.raises(GoodsFileError, match="строка 1"):
        parse_goods_file(b"hello\r\n#\r\n")
    with pytest.raises(GoodsFileError, match="строка 2"):
        parse_goods_file(b"##@@&&\r\nX\r\n")
    with pytest.raises(GoodsFileError, match="строка 3: байт 0x98"):
        parse_goods_file(b"##@@&&\r\n#\r\n\x98\r\n")


#: Real goods names in windows-1251: capitals, ё/Ё, №, «», digits, short and long words.
CP1251_NAMES = (
    "Молоко «Весёлый молочник» 3,2% 1 л", "Сыр «Российский» весовой", "Хлеб «Бородинский» №1", "Кефир 1%",
    "ВЕСЁЛЫЙ МОЛОЧНИК", "СЁМГА", "Ёрш", "ЁЖ", "Яйцо С0 №10", "Чай чёрный", "Мука в/с", "Сахар-песок",
    "Гречка ядрица", "ЯБЛОКИ", "Щука", "Э", "Ю", "Ы", "Пакет-майка", "Колбаса «Докторская» ГОСТ",
)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_utf8_goods_file_is_refused_naming_the_encoding(bom):
    data = bom + spr("$$$CLR", GOODS).decode("cp1251").encode("utf-8")
    with pytest.raises(GoodsFileError) as err:
        parse_goods_file(data)
    assert "UTF-8" in err.value.message and "windows-1251" in err.value.message and "ANSI" in err.value.message
    assert ("BOM" in err.value.message) == bool(bom)


def test_cp1251_russian_text_is_never_taken_for_utf8():
    for name in CP1251_NAMES:
        raw = name.encode("cp1251")
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")  # each name alone is already invalid UTF-8
    lines = [f"{100 + i};;{name};{name[:20]};1.00;1.000;0;0;0;0;0;;0;0;0;0;1" for i, name in enumerate(CP1251_NAMES)]
    parsed = parse_goods_file(spr("$$$CLR", *lines))
    assert [g.name for g in parsed.goods] == list(CP1251_NAMES)
    # Latin-only UTF-8 is plain ASCII: nothing to tell apart, read as it is.
    assert parse_goods_file(spr("$$$CLR", "101;;Milk;Milk;1.00;1;0;0;0;0;0;;0;0;0;0;1")).goods[0].name == "Milk"


def test_catalogue_load_is_all_or_nothing(tmp_path):
    catalogue = Catalogue(ExchangeDb(str(tmp_path / "x.sqlite3")))
    catalogue.load("A", parse_goods_file(spr("$$$CLR", GOODS)), "Pos1.spr")
    with pytest.raises(GoodsFileError) as err:
        catalogue.load("A", parse_goods_file(spr(
            "$$$ADD", "103;;Хлеб;Хлеб;45.00;1.000;0;0;0;0;0;;0;0;0;0;1", "#777;2000000000001")), "Pos1.spr")
    assert err.value.line == 5
    assert catalogue.get("A", "103") is None and catalogue.get("A", "101") is not None
    assert catalogue.sale_item("A", barcode="4600000000017").code == "101"
    assert catalogue.sale_item("B", code="101") is None


# --------------------------------------------------------------------------- report file


def _receipt(kind: SettlementType = SettlementType.SELL) -> Receipt:
    pos = Position(name="Хлеб", price=4500, quantity=Decimal(1), amount=4500, vat=VatRate.VAT10)
    return Receipt(type=kind, positions=(pos,), payments=(Payment(PaymentType.CASH, 5000),))


def _block(shift: int, first: int = 0):
    when = dt.datetime(2026, 3, 2, 10, 15, 0)
    return build_block(kkm=3, shift=shift, docs=[SaleDoc(when, 1, _receipt(), ("103",)), CashDoc(when, -1000)],
                       first_txn=first, fallback_code="999999")


def test_block_lines():
    block = _block(7)
    assert block.lines == [
        "#", "3", "7",
        "1;02.03.2026;10:15:00;11;3;1;1;103;0;45.00;1.000;45.00",
        "2;02.03.2026;10:15:00;40;3;1;1;1;;;;45.00",  # 50.00 paid, 5.00 change: 45.00 stayed
        "3;02.03.2026;10:15:00;55;3;1;1;;;;;45.00",
        "4;02.03.2026;10:15:00;51;3;0;1;;;;;10.00",
        "5;02.03.2026;10:15:00;61;3;0;1;;;;;7",
        "6;02.03.2026;10:15:00;63;3;0;1;;;;;45.00",
    ]
    assert block.totals.to_dict() == {"sales": 4500, "returns": 0, "receipts": 1, "payments": {"cash": 4500},
                                      "cash_in": 0, "cash_out": 1000}


def test_create_append_replace():
    first, how = merged_content(None, _block(1))
    assert how == "created" and first.startswith(b"#\r\n3\r\n1\r\n") and first.endswith(b"\r\n")
    second, how = merged_content(first, _block(2, 6))
    assert how == "appended" and second.startswith(first) and second.count(b"\r\n#\r\n") == 1
    # A trailing blank line from another writer would end 1C's reading: it is dropped.
    again, _ = merged_content(first + b"\r\n", _block(2, 6))
    assert again == second
    loaded = b"@" + second[1:]
    third, how = merged_content(loaded, _block(3, 12))
    assert how == "replaced" and third.startswith(b"#\r\n3\r\n3\r\n") and b"@" not in third


# --------------------------------------------------------------------------- settings


def test_settings_main_register_and_vat():
    settings = load_settings({"DEVICES": [
        {"number": 1, "url": "x", "store": "A", "goods_file": "/e/Pos1.spr", "report_file": "/e/Pos1.rep"},
        {"number": 2, "url": "y", "store": "A", "goods_file": "/e/Pos2.spr"},
        {"number": 3, "url": "z", "store": "B", "report_file": "/e/Pos3.rep"},
        {"number": 4, "url": "w"},
    ], "EXCHANGE_STORE_VAT": {"B": "vat10"}})
    assert sorted(settings.registers) == [1, 2, 3]
    assert settings.stores["A"].main is None and "нет основной кассы" in settings.stores["A"].warning
    assert settings.stores["B"].main.number == 3
    assert settings.stores["B"].vat_rate() is VatRate.VAT10
    assert settings.stores["A"].vat_rate(dt.date(2026, 5, 1)) is VatRate.VAT22
    assert settings.include_1c_receipts is False and settings.fallback_code == "999999"


@pytest.mark.parametrize(("devices", "extra", "text"), [
    ([{"number": 1, "store": "A", "main": True}, {"number": 2, "store": "A", "main": True}], {}, "несколько основных"),
    ([{"number": 1, "report_file": "/e/x"}, {"number": 2, "report_file": "/e/x"}], {}, "уже указан"),
    ([{"number": 1, "store": "A"}], {"EXCHANGE_STORE_VAT": {"Б": "10"}}, "не указан ни у одной кассы"),
    ([{"number": 1, "store": "A"}], {"EXCHANGE_STORE_VAT": {"A": "15"}}, "неизвестная ставка"),
    ([{"number": 1, "store": "A"}], {"EXCHANGE_FALLBACK_CODE": "X1"}, "EXCHANGE_FALLBACK_CODE"),
])
def test_settings_that_cannot_work(devices, extra, text):
    with pytest.raises(ValueError, match=text):
        load_settings({"DEVICES": [{"url": "u", **d} for d in devices], **extra})


# --------------------------------------------------------------------------- the ledger over a journal


def test_new_fn_starts_shift_numbers_again_and_loses_nothing(tmp_path):
    from kktapp.domain import FiscalResult
    from kktapp.exchange.ledger import Ledger
    from kktapp.journal import Journal, receipt_to_json

    path = str(tmp_path / "journal.sqlite3")
    journal = Journal(path)
    ledger = Ledger(ExchangeDb(path + ".x"), path)
    ledger.scan(1)  # the exchange is switched on with an empty journal
    fd = iter(range(1, 100))

    def done(kind: str, fn: str, shift: int, total: int = 4500) -> None:
        payload = {"receipt": receipt_to_json(_receipt())} if kind == "receipt" else {"params": {}}
        job, _ = journal.accept(device=1, kind=kind, key=None, fingerprint=str(next(fd)), payload=payload)
        result = FiscalResult(fiscal_document_number=next(fd), fiscal_sign="1", receipt_number=1,
                              shift_number=shift, datetime=dt.datetime(2026, 3, 2, 10, 0), total=total, fn_number=fn)
        journal.finish(job.id, "done", result=result.to_dict())

    done("receipt", "FN-A", 7)
    done("close_shift", "FN-A", 7, 0)
    done("receipt", "FN-A", 8)
    ledger.scan(1)
    assert ledger.owed(1) == [("FN-A", 7)]
    ledger.finish(1, "FN-A", 7, {}, 3)
    # The FN is replaced: shift numbers start at 1 again, the old FN's last shift is closed.
    done("receipt", "FN-B", 1, 9900)
    ledger.scan(1)
    assert ledger.owed(1) == [("FN-A", 8)]
    done("close_shift", "FN-B", 1, 0)
    ledger.scan(1)
    assert ledger.owed(1) == [("FN-A", 8), ("FN-B", 1)]
    docs = ledger.shift_docs(1, "FN-B", 1)
    assert docs.fn_sales == 9900 and len(docs.docs) == 1
    assert ledger.exported(1, 7, "FN-A") and not ledger.exported(1, 1)
    ledger.close()
    journal.close()


# --------------------------------------------------------------------------- what the operator reads


def test_os_errors_read_in_russian_with_the_system_words_kept():
    denied = PermissionError(errno.EACCES, "Permission denied", "/srv/exchange/Pos1.rep")
    assert os_error_text(denied, writing=True) == "нет прав на запись (Permission denied): /srv/exchange/Pos1.rep"
    assert os_error_text(denied).startswith("нет прав на чтение (Permission denied)")
    full = OSError(errno.ENOSPC, "No space left on device")
    assert os_error_text(full, writing=True) == "нет места на диске (No space left on device)"
    assert os_error_text(OSError(errno.ENOTDIR, "Not a directory", "/a/b")).startswith("часть пути — не папка")
    # An error without a number keeps its own words.
    assert os_error_text(OSError("power cut")) == "power cut"
