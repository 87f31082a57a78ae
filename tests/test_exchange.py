"""File exchange with 1C ("Штрих-М: Кассир 5"): goods files in, report files out, with emulated registers.

Files are shaped as 1C's "ККМ Offline" Кассир module writes them (file-exchange.md §2.2): ANSI
(windows-1251), CRLF, ``##@@&&`` / ``#`` header, ``$$$CLR`` or ``$$$ADD``, 17-field goods and
group lines, ``#``-lines with extra barcodes. Report files are read back by :class:`Report1C`,
a reader written here from 1C's own ImportReport (file-exchange.md §0 source 1), not with the
writer's code.

Two stores: "Ленина" with registers 1 (main) and 2, "Мира" with register 3 alone (its main by
the seed's rule).
"""

from __future__ import annotations

import builtins
import datetime as dt
import errno
import json
import os
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
import webtest
from fakes import eventually

from kktapp import create_app
from kktapp.atol.emulator import Emulator
from kktapp.exchange import EXTENSION
from kktapp.exchange.ledger import Ledger
from kktapp.exchange.loading import GoodsLoader
from kktapp.web.schemas import GoodsListSchema

STORE_A = "Магазин на Ленина"
STORE_B = "Магазин на Мира"
API = "/api/v1"

# --------------------------------------------------------------------------- 1C's files


def spr(*lines: str, newline: str = "\r\n") -> bytes:
    """A goods file as 1C writes it: the header, then the lines, ANSI, CRLF after every line."""
    return newline.join(["##@@&&", "#", *lines]).encode("cp1251") + newline.encode()


#: Full export ($$$CLR) for store A: a group, piece goods with two extra barcodes (one a pack of
#: six), a weighed cheese, bread; names with «», №, ё (all in windows-1251).
GOODS_A = spr(
    "$$$CLR",
    "1;;Молочные продукты;Молочные продукты;;;0;0;0;0;0;;0;0;0;0;0",
    "101;4600000000017;Молоко «Весёлый молочник» 3,2% 1 л;Молоко 3,2% 1л;89.90;120.000;0;0;0;0;0;МЛК-1;0;0;0;1;1",
    "#101;4600000000024;Молоко «Весёлый молочник» 3,2% 1 л;Молоко 3,2% 1л;89.90;;;;;1",
    "#101;4600000000031;Молоко 3,2% упаковка 6 шт;Молоко 6 шт;519.00;;;;;6",
    "102;2000000001020;Сыр «Российский» весовой;Сыр Российский;650.00;15.250;0;1;0;0;0;;0;0;0;1;1",
    "103;;Хлеб «Бородинский» №1;Хлеб Бородинский;45.00;30.000;0;0;0;0;0;;0;0;0;0;1",
)
#: What 1C wrote for register 2 (not the main one): never loaded, removed.
GOODS_A2 = spr("$$$CLR", "101;4600000000017;Молоко;Молоко;1.00;1.000;0;0;0;0;0;;0;0;0;0;1")
GOODS_B = spr(
    "$$$CLR",
    "201;4601111111111;Кофе зерновой 250 г;Кофе 250г;399.00;10.000;0;0;0;0;0;;0;0;0;0;1",
)


def marker(path: Path) -> str:
    """Line 2 of a goods file: # not loaded, @ loaded."""
    return path.read_bytes().split(b"\n")[1].rstrip(b"\r").decode()


# --------------------------------------------------------------------------- 1C's reader


@dataclass
class Receipt1C:
    """One receipt of the file: its positions as 1C's "Отчет отдела" loads them, its payments."""

    kkm: int
    number: int
    positions: list[dict] = field(default_factory=list)
    payments: list[tuple[str, Decimal]] = field(default_factory=list)
    closed: Decimal | None = None

    @property
    def net(self) -> Decimal:
        """What 1C takes for the receipt: the sum of its positions after 1C applied 15/35 lines."""
        return sum((p["amount"] for p in self.positions), Decimal(0))


@dataclass
class Block1C:
    header: tuple[str, str, str]
    receipts: list[Receipt1C] = field(default_factory=list)
    cash_in: Decimal = Decimal(0)
    cash_out: Decimal = Decimal(0)
    types: list[int] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)


def _round_1c(value: Decimal) -> Decimal:
    """1C's Round(x, 2): half away from zero."""
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class Report1C:
    """The report file read as 1C's BPO "ККМ Offline" Кассир module's ImportReport reads it.

    Written here from that module's text (file-exchange.md §0 source 1), not from the writer:
    3-line block headers (a mid-file ``#`` skips itself and two lines), 12 fields per line.
    1C keeps ONE array of positions for the whole file (types 11, 13 add to it) and matches the
    adjusting types in that array, whatever block they come from:

    - 15/17 (position discount): the LAST position with the same code, section and receipt
      number (fields 8, 9, 6); the absolute value of field 12 comes off its amount (is added
      to a negative one);
    - 35 (receipt discount by sum, field 11): every position with the same receipt number; each
      but "the last" takes Round(amount / 100 × percent, 2), and "the last" is the position
      whose index in the WHOLE array equals the count of matching positions minus one (1C's
      test ``Product.IndexInArray = Products.Count() - 1``), which gets what is left.
    """

    def __init__(self, data: bytes) -> None:
        assert b"\r\n" in data and data.count(b"\n") == data.count(b"\r\n"), "CRLF line ends"
        lines = data.decode("cp1251").split("\r\n")
        assert lines[-1] == "" and "" not in lines[:-1], "no empty line inside (1C stops reading there)"
        lines = lines[:-1]
        self.blocks: list[Block1C] = []
        #: 1C's array of positions (its "Receipts") over the whole file, in file order.
        self.loaded: list[dict] = []
        i = 0
        while i < len(lines):
            assert lines[i] in ("#", "@"), f"line {i + 1}: a block starts with # or @, got {lines[i]!r}"
            block = Block1C(header=(lines[i], lines[i + 1], lines[i + 2]))
            self.blocks.append(block)
            i += 3
            receipts: dict[tuple[int, int], Receipt1C] = {}
            while i < len(lines) and lines[i] not in ("#", "@"):
                self._transaction(block, receipts, lines[i].split(";"))
                i += 1

    def _transaction(self, block: Block1C, receipts: dict, f: list[str]) -> None:
        assert len(f) == 12, f
        kind, kkm, doc = int(f[3]), int(f[4]), int(f[5])
        block.types.append(kind)
        block.numbers.append(int(f[0]))
        assert len(f[1]) == 10 and f[1][2] == f[1][5] == "." and len(f[2]) == 8 and f[2][2] == ":"
        if kind in (50, 51):
            amount = Decimal(f[11])
            if kind == 50:
                block.cash_in += amount
            else:
                block.cash_out += amount
            return
        if kind in (61, 62, 63, 60):
            return  # reports: skipped by 1C's reader
        receipt = receipts.get((kkm, doc))
        if receipt is None:
            receipt = receipts[(kkm, doc)] = Receipt1C(kkm, doc)
            block.receipts.append(receipt)
        if kind in (11, 13):
            position = {"code": f[7], "section": f[8], "price": Decimal(f[9]), "quantity": Decimal(f[10]),
                        "amount": Decimal(f[11]), "receipt": doc}
            self.loaded.append(position)
            receipt.positions.append(position)
        elif kind == 15:
            Decimal(f[10])  # 1C converts field 11 too: a non-number there fails the whole load
            key = (int(f[7]), int(f[8]), doc)
            found = [p for p in self.loaded if (int(p["code"]), int(p["section"]), p["receipt"]) == key]
            assert found, f"1C: «Ошибка итоговой скидки на позицию» for {f}"
            off = abs(Decimal(f[11]))
            found[-1]["amount"] += -off if found[-1]["amount"] > 0 else off
        elif kind == 35:
            self._receipt_discount(doc, abs(Decimal(f[10])))
        elif kind == 40:
            receipt.payments.append((f[7], Decimal(f[11])))
        elif kind == 55:
            receipt.closed = Decimal(f[11])
        else:
            raise AssertionError(f"unexpected transaction type {kind}")

    def _receipt_discount(self, doc: int, discount: Decimal) -> None:
        matching = [(i, p) for i, p in enumerate(self.loaded) if p["receipt"] == doc]
        percent = discount / sum(p["amount"] for _, p in matching) * 100
        for index, position in matching:
            if index == len(matching) - 1:
                share = discount
            else:
                share = _round_1c(position["amount"] / 100 * percent)
                discount -= share
            position["amount"] -= share

    def totals(self, block: Block1C) -> tuple[Decimal, Decimal]:
        """(sales, returns) of a block as positive roubles."""
        sales = sum((r.net for r in block.receipts if r.net > 0), Decimal(0))
        returns = -sum((r.net for r in block.receipts if r.net < 0), Decimal(0))
        return sales, returns


def read_report(path: Path) -> Report1C:
    report = Report1C(path.read_bytes())
    for block in report.blocks:
        for r in block.receipts:
            # What 1C adds up equals the receipt total and the payments.
            assert r.closed == r.net == sum((a for _, a in r.payments), Decimal(0)), r
    return report


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def emulator3(request: pytest.FixtureRequest) -> Emulator:
    """The other store's register."""
    emu = Emulator(serial="00106201270003")
    emu.start("127.0.0.1", 0)
    request.addfinalizer(emu.stop)
    return emu


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "exchange"
    path.mkdir()
    return path


@pytest.fixture
def exchange_config(app_config: dict[str, Any], emulator: Emulator, emulator2: Emulator, emulator3: Emulator,
                    folder: Path) -> dict[str, Any]:
    app_config.update(
        DEVICES=[
            {"number": n, "name": f"Касса {n}", "url": emu.url, "store": store, "main": main,
             "goods_file": str(folder / f"Pos{n}.spr"), "report_file": str(folder / f"Pos{n}.rep")}
            for n, emu, store, main in ((1, emulator, STORE_A, True), (2, emulator2, STORE_A, False),
                                        (3, emulator3, STORE_B, False))
        ],
        EXCHANGE_POLL_SECONDS=0.1,
        EXCHANGE_SETTLE_SECONDS=0,
        EXCHANGE_STORE_VAT={STORE_B: "10"},
    )
    return app_config


@pytest.fixture
def xapp(exchange_config: dict[str, Any], request: pytest.FixtureRequest):
    app = request.getfixturevalue("app")
    yield app
    exchange = app.extensions.get(EXTENSION)
    if exchange is not None:
        exchange.stop()


@pytest.fixture
def client(xapp) -> webtest.TestApp:
    return webtest.TestApp(xapp, extra_environ={"REMOTE_ADDR": "127.0.0.1"})


def loaded(folder: Path) -> None:
    (folder / "Pos1.spr").write_bytes(GOODS_A)
    (folder / "Pos2.spr").write_bytes(GOODS_A2)
    (folder / "Pos3.spr").write_bytes(GOODS_B)
    assert eventually(lambda: marker(folder / "Pos1.spr") == "@" and marker(folder / "Pos3.spr") == "@"
                      and not (folder / "Pos2.spr").exists())


def sell(client: webtest.TestApp, device: int, items: list[dict], payments: list[dict], **extra: Any) -> dict:
    body = {"device": device, "items": items, "payments": payments, **extra}
    res = client.post_json(f"{API}/receipts?wait=20", body, status="*")
    assert res.status_int == 200, res.body.decode()
    assert res.json["state"] == "done", res.json
    return res.json["result"]


def close_shift(client: webtest.TestApp, device: int) -> dict:
    res = client.post(f"{API}/devices/{device}/shift/close?wait=20", status="*")
    assert res.status_int == 200, res.body.decode()
    return res.json


def report_done(folder: Path, device: int, blocks: int = 1) -> Report1C:
    path = folder / f"Pos{device}.rep"
    assert eventually(lambda: path.exists() and path.read_bytes().count(b"\r\n#\r\n") + 1 >= blocks), path
    return read_report(path)


def emulator_receipts(emu: Emulator, shift: int) -> list[dict]:
    return [d for d in emu.documents() if d["type"] == "receipt" and d["shift_number"] == shift]


# --------------------------------------------------------------------------- goods


def test_goods_loaded_from_main_register_only(client, folder):
    loaded(folder)

    res = client.get(f"{API}/goods", {"store": STORE_A}).json
    assert GoodsListSchema().validate(res) == {}  # the answer is what the OpenAPI describes
    assert res["total"] == 4
    goods = {g["code"]: g for g in res["goods"]}
    assert goods["1"]["group"] is True and goods["1"]["vat"] is None
    milk = goods["101"]
    assert milk["name"] == "Молоко «Весёлый молочник» 3,2% 1 л" and milk["receipt_name"] == "Молоко 3,2% 1л"
    assert milk["price"] == 8990 and milk["weighted"] is False and milk["parent"] == "1"
    assert milk["article"] == "МЛК-1" and milk["vat"] == "vat22"
    assert [(b["barcode"], b["coefficient"]) for b in milk["barcodes"]] == [
        ("4600000000024", "1"), ("4600000000031", "6")]
    assert goods["102"]["weighted"] is True
    assert goods["103"]["name"] == "Хлеб «Бородинский» №1"

    assert [g["code"] for g in client.get(f"{API}/goods", {"store": STORE_A, "q": "МОЛОКО"}).json["goods"]] == ["101"]
    assert [g["code"] for g in client.get(f"{API}/goods", {"store": STORE_A, "barcode": "4600000000031"})
            .json["goods"]] == ["101"]
    assert [g["code"] for g in client.get(f"{API}/goods", {"store": STORE_A, "code": "102"}).json["goods"]] == ["102"]
    b = client.get(f"{API}/goods", {"store": STORE_B}).json
    assert [(g["code"], g["price"], g["vat"]) for g in b["goods"]] == [("201", 39900, "vat10")]
    assert client.get(f"{API}/goods", {"store": "Нет такого"}, status=404)
    assert "store" in client.get(f"{API}/goods", status=422).json["error"]["field"]


def test_add_file_with_a_malformed_line_changes_nothing(client, folder, xapp):
    loaded(folder)
    bad = spr(
        "$$$ADD",
        "103;;Хлеб «Бородинский» №1;Хлеб Бородинский;47.00;30.000;0;0;0;0;0;;0;0;0;0;1",
        "104;4607777777777;Кефир 1%;Кефир;65.00;5.000;0;0;0;0;0;;0;0;0;0;1",
        "105;;Сметана;Сметана;сто;1.000;0;0;0;0;0;;0;0;0;0;1",
    )
    (folder / "Pos1.spr").write_bytes(bad)
    exchange = xapp.extensions[EXTENSION]
    assert eventually(lambda: "строка 6" in json.dumps(exchange.status(), ensure_ascii=False))
    assert marker(folder / "Pos1.spr") == "#"
    goods = {g["code"]: g for g in client.get(f"{API}/goods", {"store": STORE_A}).json["goods"]}
    assert "104" not in goods and goods["103"]["price"] == 4500
    page = client.get("/kkt", headers={"Accept": "application/json"}).json
    problem = [s for s in page["exchange"]["stores"] if s["name"] == STORE_A][0]["load"]
    assert problem["level"] == "error" and "строка 6" in problem["message"] and "Pos1.spr" in problem["message"]
    assert "строка 6" in client.get("/kkt").text

    # 1C exports again, fixed; LF line ends are read as well.
    (folder / "Pos1.spr").write_bytes(spr(
        "$$$ADD",
        "103;;Хлеб «Бородинский» №1;Хлеб Бородинский;47.00;30.000;0;0;0;0;0;;0;0;0;0;1",
        "104;4607777777777;Кефир 1%;Кефир;65.00;5.000;0;0;0;0;0;;0;0;0;0;1", newline="\n"))
    assert eventually(lambda: marker(folder / "Pos1.spr") == "@")
    goods = {g["code"]: g for g in client.get(f"{API}/goods", {"store": STORE_A}).json["goods"]}
    assert goods["103"]["price"] == 4700 and goods["104"]["barcode"] == "4607777777777"
    assert "101" in goods  # $$$ADD keeps what it does not name

    # A full export replaces the catalogue.
    (folder / "Pos1.spr").write_bytes(spr("$$$CLR", "103;;Хлеб;Хлеб;48.00;1.000;0;0;0;0;0;;0;0;0;0;1"))
    assert eventually(lambda: marker(folder / "Pos1.spr") == "@")
    assert [g["code"] for g in client.get(f"{API}/goods", {"store": STORE_A}).json["goods"]] == ["103"]


def test_store_without_main_register_is_a_warning(app_config, emulator, emulator2, folder, request):
    app_config.update(
        DEVICES=[{"number": n, "url": emu.url, "store": STORE_A, "goods_file": str(folder / f"Pos{n}.spr")}
                 for n, emu in ((1, emulator), (2, emulator2))],
        EXCHANGE_POLL_SECONDS=0.1, EXCHANGE_SETTLE_SECONDS=0,
    )
    app = request.getfixturevalue("app")
    exchange = app.extensions[EXTENSION]
    try:
        (folder / "Pos1.spr").write_bytes(GOODS_A)
        exchange.poll()
        exchange.poll()
        assert marker(folder / "Pos1.spr") == "#"
        client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        assert client.get(f"{API}/goods", {"store": STORE_A}).json["total"] == 0
        page = client.get("/kkt", headers={"Accept": "application/json"}).json
        assert "нет основной кассы" in page["exchange"]["stores"][0]["warning"]
        assert "нет основной кассы" in client.get("/kkt").text
    finally:
        exchange.stop()


def test_goods_file_waits_for_the_flag_file(app_config, emulator, folder, request):
    flag = folder / "Pos1.flg"
    app_config.update(
        DEVICES=[{"number": 1, "url": emulator.url, "store": STORE_A, "goods_file": str(folder / "Pos1.spr"),
                  "goods_flag_file": str(flag)}],
        EXCHANGE_POLL_SECONDS=0.1, EXCHANGE_SETTLE_SECONDS=0,
    )
    exchange = request.getfixturevalue("app").extensions[EXTENSION]
    try:
        (folder / "Pos1.spr").write_bytes(GOODS_A[:40])  # 1C is still writing
        exchange.poll()
        assert marker(folder / "Pos1.spr") == "#"
        (folder / "Pos1.spr").write_bytes(GOODS_A)
        flag.write_bytes(b"")
        exchange.poll()  # the file changed since the last poll: not read yet, even with the flag
        assert marker(folder / "Pos1.spr") == "#"
        exchange.poll()
        assert marker(folder / "Pos1.spr") == "@" and not flag.exists()
    finally:
        exchange.stop()


def _stamp(path: Path, seconds: float) -> None:
    """Set a file's modification time (1C's writes are seconds apart, the test's are not)."""
    ns = int(seconds * 1e9)
    os.utime(path, ns=(ns, ns))


def test_flag_never_lets_a_changing_file_be_read(app_config, emulator, folder, request):
    flag, goods = folder / "Pos1.flg", folder / "Pos1.spr"
    app_config.update(
        DEVICES=[{"number": 1, "url": emulator.url, "store": STORE_A, "goods_file": str(goods),
                  "goods_flag_file": str(flag)}],
        EXCHANGE_POLL_SECONDS=3600, EXCHANGE_SETTLE_SECONDS=2,
    )
    exchange = request.getfixturevalue("app").extensions[EXTENSION]
    request.addfinalizer(exchange.stop)

    def export(count: int) -> tuple[bytes, bytes]:
        """A full export of ``count`` goods and the part of it 1C has written halfway."""
        data = spr("$$$CLR", *[f"{100 + i};;Товар {i};Товар {i};1.00;1.000;0;0;0;0;0;;0;0;0;0;1" for i in range(count)])
        return data[:data.index(b"\r\n", len(data) // 2) + 2], data

    t = time.time() - 100
    half, full = export(50)

    # A file growing between polls under a flag 1C wrote after it: read only once it stops.
    goods.write_bytes(half)
    _stamp(goods, t)
    flag.write_bytes(b"")
    _stamp(flag, t)
    exchange.poll()
    goods.write_bytes(full)
    _stamp(goods, t + 1)
    _stamp(flag, t + 1)
    exchange.poll()
    assert marker(goods) == "#" and exchange.catalogue.count(STORE_A) == 0
    exchange.poll()
    assert marker(goods) == "@" and exchange.catalogue.count(STORE_A) == 50 and not flag.exists()

    # A rejected file keeps its flag; the next export must not be read on that stale flag.
    goods.write_bytes(spr("$$$CLR", "101;;Молоко;Молоко;сто;1;0;0;0;0;0;;0;0;0;0;1"))
    _stamp(goods, t + 10)
    flag.write_bytes(b"")
    _stamp(flag, t + 10)
    exchange.poll()
    exchange.poll()
    assert "не загружен" in exchange.status()["stores"][0]["load"]["message"] and flag.exists()
    half, full = export(60)
    goods.write_bytes(half)  # 1C is writing the next export
    _stamp(goods, t + 20)
    for _ in range(3):
        exchange.poll()
    assert marker(goods) == "#" and exchange.catalogue.count(STORE_A) == 50
    goods.write_bytes(full)
    _stamp(goods, t + 21)
    exchange.poll()
    exchange.poll()
    assert marker(goods) == "#"  # complete, but 1C has not written its flag yet
    flag.write_bytes(b"")
    _stamp(flag, t + 22)
    exchange.poll()
    assert marker(goods) == "@" and exchange.catalogue.count(STORE_A) == 60


def test_goods_file_that_cannot_be_marked_is_applied_once_and_said_so(one_register, folder, request, monkeypatch):
    app, _ = _one_app(request, folder)
    exchange = app.extensions[EXTENSION]
    path = folder / "Pos1.spr"

    def loads() -> int:
        return exchange.db.conn().execute("SELECT COUNT(*) FROM loads").fetchone()[0]

    def read_only(name: str, mode: str = "r", *args: Any, **kwargs: Any):
        # A goods file 1C shares read-only (chmod would not stop the tests: they may run as root).
        if name == str(path) and ("+" in mode or "w" in mode):
            raise PermissionError(errno.EACCES, "Permission denied", name)
        return builtins.open(name, mode, *args, **kwargs)

    monkeypatch.setattr("kktapp.exchange.loading.open", read_only, raising=False)
    before = loads()
    path.write_bytes(spr("$$$CLR", "104;;Кефир;Кефир;65.00;5.000;0;0;0;0;0;;0;0;0;0;1"))
    for _ in range(6):
        exchange.poll()
    assert loads() == before + 1 and marker(path) == "#"
    assert [g.code for g in exchange.catalogue.search(STORE_A)[0]] == ["104"]
    status = exchange.status()["stores"][0]["load"]
    assert status["level"] == "error" and "не прочитан" not in status["message"]
    assert "загружен" in status["message"] and "товаров 1" in status["message"]
    assert "отметку @ записать не удалось: нет прав на запись (Permission denied)" in status["message"]

    # A restart forgets what this process saw; the catalogue remembers what it applied.
    exchange.loader = GoodsLoader(exchange.settings, exchange.catalogue, exchange.board)
    for _ in range(4):
        exchange.poll()
    assert loads() == before + 1

    # Rights fixed: the file is marked, nothing applied again.
    monkeypatch.undo()
    assert eventually(lambda: marker(path) == "@" and exchange.status()["stores"][0]["load"]["level"] == "ok")
    assert loads() == before + 1


# --------------------------------------------------------------------------- sales and reports


def _kkt_1c_receipt(client: webtest.TestApp) -> None:
    body = {"DocNumber": "ТР00-000777", "DocDate": "06.10.2017", "DocSumm": 100,
            "Goods": {"Position_1": {"Name": "Оплата заказа с сайта", "Price": 100, "Quantity": 1, "Tax": "22",
                                     "PositionSumm": 100}}}
    res = client.post("/kkt", json.dumps(body, ensure_ascii=False).encode(), content_type="application/json")
    assert res.json["result_code"] == 0, res.json


def test_sales_by_code_on_two_stores_and_the_report_files(client, folder, emulator, emulator2, emulator3):
    loaded(folder)
    # Register 1: milk × 2 with its own 10.00 discount, 0.350 kg of cheese, a bag by name; a 3.00
    # receipt discount; paid 1000 cash (change).
    r1 = sell(client, 1, [
        {"code": "101", "quantity": 2, "discount": "10.00"},
        {"code": "102", "quantity": "0.350"},
        {"name": "Пакет", "price": "5.00", "tax": "none"},
    ], payments=[{"type": "cash", "amount": "1000"}], discount="3.00")
    # 89.90 × 2 − 10 + 650 × 0.35 (227.50) + 5 − 3 = 399.30
    assert r1["total"] == 39930
    r1b = sell(client, 1, [{"code": "103"}], payments=[{"type": "electronic", "amount": "45.00"}])
    ret = sell(client, 1, [{"code": "101"}], payments=[{"type": "cash", "amount": "89.90"}], type="sell_return")
    client.post_json(f"{API}/devices/1/cash-in?wait=20", {"amount": "500.00"})
    _kkt_1c_receipt(client)  # 1C's own document: not in the report by default
    # Register 2: bread × 3 by code; the compat INCOME sells a pack of six by its barcode.
    sell(client, 2, [{"code": "103", "quantity": 3}], payments=[{"type": "electronic", "amount": "135.00"}])
    income = {"atol_device_data": {"atol_device_number": 2, "atol_operator_password": "30"}, "comand": "INCOME",
              "data": {"header_text": [], "footer_text": [], "check_sm": 519, "check_discount_sm": 0,
                       "type_close": "tcCash", "cash_sm": 519, "tr_id": 0,
                       "goods": [{"name": "", "barcode": "4600000000031", "kol": 1, "dep": 1, "discount": 0}]}}
    res = client.post("/api/compat/atol-kkt-service", json.dumps(income, ensure_ascii=False).encode(),
                      content_type="application/json")
    assert res.json["error_code"] == 0, res.json
    # Register 3, the other store: coffee at the store's 10 % VAT.
    sell(client, 3, [{"code": "201"}], payments=[{"type": "cash", "amount": "399.00"}])

    # The device got names, prices, units and VAT from the catalogue.
    doc = emulator_receipts(emulator, r1["shift_number"])[0]
    # 3.00 spread: 127 + 170 + 3 kopecks off 169.80, 227.50 and 5.00.
    assert [(i["name"], i["amount"], i["tax"], i.get("unit")) for i in doc["items"]] == [
        ("Молоко 3,2% 1л", 16853, "vat22", None), ("Сыр Российский", 22580, "vat22", 11), ("Пакет", 497, "none", None)]
    assert [i["tax"] for i in emulator_receipts(emulator3, 1)[0]["items"]] == ["vat10"]
    pack = emulator_receipts(emulator2, 1)[-1]["items"][0]
    assert (pack["name"], pack["amount"]) == ("Молоко 6 шт", 51900)

    for n in (1, 2, 3):
        close_shift(client, n)

    rep1 = report_done(folder, 1)
    assert len(rep1.blocks) == 1
    block = rep1.blocks[0]
    assert block.header == ("#", "1", str(r1["shift_number"]))
    assert block.numbers == list(range(1, len(block.numbers) + 1))
    assert [r.number for r in block.receipts] == [r1["receipt_number"], r1b["receipt_number"], ret["receipt_number"]]
    first = block.receipts[0]
    assert [(p["code"], p["quantity"]) for p in first.positions] == [
        ("101", Decimal("2.000")), ("102", Decimal("0.350")), ("999999", Decimal("1.000"))]
    assert first.positions[0]["price"] == Decimal("89.90") and first.positions[1]["price"] == Decimal("650.00")
    # 1C loads each position at the sum the FN recorded (own discount and share of the receipt's).
    assert [p["amount"] for p in first.positions] == [Decimal("168.53"), Decimal("225.80"), Decimal("4.97")]
    assert first.net == Decimal("399.30")
    assert first.payments == [("1", Decimal("399.30"))]
    assert block.receipts[2].net == Decimal("-89.90")
    assert block.receipts[2].positions[0]["quantity"] == Decimal("-1.000")
    assert block.cash_in == Decimal("500.00")
    fn = emulator_receipts(emulator, r1["shift_number"])
    assert len(fn) == 4  # the POST /kkt receipt is in the FN, not in the file
    assert rep1.totals(block) == (Decimal("444.30"), Decimal("89.90"))
    assert 61 in block.types and 63 in block.types

    rep2 = report_done(folder, 2)
    b2 = rep2.blocks[0]
    assert [(p["code"], p["quantity"], p["amount"]) for r in b2.receipts for p in r.positions] == [
        ("103", Decimal("3.000"), Decimal("135.00")), ("101", Decimal("6.000"), Decimal("519.00"))]
    assert [r.payments for r in b2.receipts] == [[("2", Decimal("135.00"))], [("1", Decimal("519.00"))]]
    total2 = sum(d["total"] for d in emulator_receipts(emulator2, 1))
    assert rep2.totals(b2) == (Decimal(total2) / 100, Decimal(0))

    rep3 = report_done(folder, 3)
    assert [(p["code"], p["amount"]) for r in rep3.blocks[0].receipts for p in r.positions] == [
        ("201", Decimal("399.00"))]

    def page() -> dict:
        return client.get("/kkt", headers={"Accept": "application/json"}).json["exchange"]

    # The status is recorded just after the file is renamed into place.
    assert eventually(lambda: all(r["report"] for r in page()["registers"]))
    for register in page()["registers"]:
        assert register["report"]["level"] == "ok", register
        assert register["exports"][0]["mismatch"] == []
        assert register["exports"][0]["counters"] is not None


def test_append_while_unread_overwrite_after_loaded(client, folder, emulator):
    loaded(folder)
    path = folder / "Pos1.rep"
    sell(client, 1, [{"code": "103"}], payments=[{"type": "cash", "amount": "45"}])
    close_shift(client, 1)
    report_done(folder, 1)
    sell(client, 1, [{"code": "103", "quantity": 2}], payments=[{"type": "cash", "amount": "90"}])
    close_shift(client, 1)
    two = report_done(folder, 1, blocks=2)
    assert [b.header for b in two.blocks] == [("#", "1", "1"), ("#", "1", "2")]
    numbers = [n for b in two.blocks for n in b.numbers]
    assert numbers == list(range(1, len(numbers) + 1))  # transaction numbers keep increasing

    # 1C loads the file and, like its BPO driver, marks every block header "@".
    data = path.read_bytes().replace(b"\r\n#\r\n", b"\r\n@\r\n")
    path.write_bytes(b"@" + data[1:])
    sell(client, 1, [{"code": "101"}], payments=[{"type": "cash", "amount": "89.90"}])
    close_shift(client, 1)
    assert eventually(lambda: path.read_bytes().startswith(b"#"))
    fresh = read_report(path)
    assert [b.header for b in fresh.blocks] == [("#", "1", "3")]
    assert [p["code"] for r in fresh.blocks[0].receipts for p in r.positions] == ["101"]

    # Deleted after loading (the seed's 1C): the next block makes a new file.
    path.unlink()
    sell(client, 1, [{"code": "101"}], payments=[{"type": "cash", "amount": "89.90"}])
    close_shift(client, 1)
    assert eventually(path.exists)
    assert [b.header for b in read_report(path).blocks] == [("#", "1", "4")]


def _fn_positions(emu: Emulator, shift: int) -> list[Decimal]:
    """Each receipt position's sum as the FN recorded it (returns negative), in FN order."""
    out = []
    for doc in emulator_receipts(emu, shift):
        sign = -1 if doc["receipt_type"] == "sell_return" else 1
        out += [Decimal(sign * item["amount"]) / 100 for item in doc["items"]]
    return out


def test_receipt_discounts_load_in_1c_as_the_fn_recorded(one_register, folder, request, emulator):
    """1C matches a receipt discount (35) by receipt number over the whole file and gives the rest
    to the wrong position; receipt numbers start again each shift. What 1C loads must still be,
    position by position, what the FN recorded: over one shift and over two in one file."""
    _, client = _one_app(request, folder)
    path = folder / "Pos1.rep"

    def shift_of_receipts() -> None:
        sell(client, 1, [{"code": "103"}], payments=[{"type": "cash", "amount": "45"}])
        # 45.00 × 3 less 1.00: shares 0.34 / 0.33 / 0.33, none of them 1C's Round(…, 2) split.
        sell(client, 1, [{"code": "103"}, {"code": "103"}, {"code": "103"}],
             payments=[{"type": "cash", "amount": "134"}], discount="1.00")
        # Own discounts, a repeated code, a receipt discount on top.
        sell(client, 1, [{"code": "101", "discount": "0.90"}, {"code": "103"}, {"code": "101", "quantity": 2}],
             payments=[{"type": "electronic", "amount": "311.79"}], discount="2.01")
        sell(client, 1, [{"code": "101"}], payments=[{"type": "cash", "amount": "89.90"}], type="sell_return")

    shift_of_receipts()
    close_shift(client, 1)
    one = report_done(folder, 1)
    assert [p["amount"] for p in one.loaded] == _fn_positions(emulator, 1)

    shift_of_receipts()  # the same receipt numbers again in shift 2
    close_shift(client, 1)
    two = report_done(folder, 1, blocks=2)
    assert [b.header for b in two.blocks] == [("#", "1", "1"), ("#", "1", "2")]
    assert [p["amount"] for p in two.loaded] == _fn_positions(emulator, 1) + _fn_positions(emulator, 2)
    totals = [d["total"] * (-1 if d["receipt_type"] == "sell_return" else 1)
              for shift in (1, 2) for d in emulator_receipts(emulator, shift)]
    assert sum(p["amount"] for p in two.loaded) == Decimal(sum(totals)) / 100
    assert path.read_bytes().count(b";35;") == 0


def test_z_by_the_24_hour_rule_is_exported(client, folder, emulator):
    loaded(folder)
    first = sell(client, 1, [{"code": "103"}], payments=[{"type": "cash", "amount": "45"}])
    emulator.advance_clock(25)
    second = sell(client, 1, [{"code": "101"}], payments=[{"type": "cash", "amount": "89.90"}])
    assert second["shift_number"] == first["shift_number"] + 1
    report = report_done(folder, 1)
    assert [b.header[2] for b in report.blocks] == [str(first["shift_number"])]
    assert [p["code"] for p in report.blocks[0].receipts[0].positions] == ["103"]


def test_crash_between_z_and_write_exports_once(exchange_config, folder, emulator, request):
    app = request.getfixturevalue("app")
    exchange = app.extensions[EXTENSION]
    client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    loaded(folder)
    sell(client, 1, [{"code": "103"}], payments=[{"type": "cash", "amount": "45"}])
    # The process dies right after the Z report: neither the hook nor the poller writes anything.
    exchange.stop()
    app.extensions["kkt"].shift_observers.clear()
    close_shift(client, 1)
    path = folder / "Pos1.rep"
    assert not path.exists()
    app.extensions["kkt"].stop()

    # Restart: the shift is found closed (the journal's close_shift job) and exported once.
    again = create_app(exchange_config)
    try:
        ex2 = again.extensions[EXTENSION]
        assert eventually(path.exists)
        for _ in range(3):
            ex2.poll()
        report = read_report(path)
        assert [b.header for b in report.blocks] == [("#", "1", "1")]

        # Now the crash comes after the file's rename, before "exported" is recorded.
        ex2.stop()
        again_client = webtest.TestApp(again, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        sell(again_client, 1, [{"code": "101"}], payments=[{"type": "cash", "amount": "89.90"}])
        calls = []
        real_finish = Ledger.finish

        def crash_once(self: Ledger, *args: Any) -> None:
            if not calls:
                calls.append(args)
                raise OSError("power cut")
            real_finish(self, *args)

        ex2.ledger.finish = crash_once.__get__(ex2.ledger)  # type: ignore[method-assign]
        close_shift(again_client, 1)
        ex2.poll()  # writes the file, then "dies" before recording it
        assert len(read_report(path).blocks) == 2 and not ex2.ledger.exported(1, 2)
        ex2.poll()
        ex2.poll()
        report = read_report(path)
        assert [b.header for b in report.blocks] == [("#", "1", "1"), ("#", "1", "2")]
        assert ex2.ledger.exported(1, 2)
    finally:
        again.extensions[EXTENSION].stop()
        again.extensions["kkt"].stop()
        again.extensions["kkt"].journal.close()


def _fail_once(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> list:
    """Make ``target.name`` raise once, as if the process died right there; the calls that failed."""
    real = getattr(target, name)
    calls: list = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            calls.append(args)
            raise OSError("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)
    return calls


def test_crash_after_the_write_then_1c_deletes_the_file_sends_the_shift_once(one_register, folder, request,
                                                                             monkeypatch):
    app, client = _one_app(request, folder)
    exchange = app.extensions[EXTENSION]
    exchange.stop()  # the test polls by hand
    path = folder / "Pos1.rep"
    sell(client, 1, [{"code": "103"}], payments=[{"type": "cash", "amount": "45"}])
    calls = _fail_once(monkeypatch, exchange.ledger, "finish")  # the file is in place, "exported" is not recorded
    close_shift(client, 1)
    exchange.poll()
    assert calls and len(read_report(path).blocks) == 1 and not exchange.ledger.exported(1, 1)
    path.unlink()  # 1C (as the seed says) loads the file and deletes it
    exchange.poll()
    exchange.poll()
    assert not path.exists() and exchange.ledger.exported(1, 1)
    assert exchange.status()["registers"][0]["report"]["level"] == "ok"


def test_crash_before_the_rename_loses_no_shift(one_register, folder, request, monkeypatch):
    app, client = _one_app(request, folder)
    exchange = app.extensions[EXTENSION]
    exchange.stop()
    path = folder / "Pos1.rep"
    sell(client, 1, [{"code": "103"}], payments=[{"type": "cash", "amount": "45"}])
    calls = _fail_once(monkeypatch, os, "replace")  # the block is recorded as being written, the rename never came
    close_shift(client, 1)
    exchange.poll()
    monkeypatch.undo()
    assert calls and not path.exists() and not exchange.ledger.exported(1, 1)
    exchange.poll()
    exchange.poll()
    assert [b.header for b in read_report(path).blocks] == [("#", "1", "1")] and exchange.ledger.exported(1, 1)
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no staged file left


# --------------------------------------------------------------------------- more triggers and settings


@pytest.fixture
def one_register(app_config: dict[str, Any], emulator: Emulator, folder: Path) -> dict[str, Any]:
    app_config.update(
        DEVICES=[{"number": 1, "url": emulator.url, "store": STORE_A, "goods_file": str(folder / "Pos1.spr"),
                  "report_file": str(folder / "Pos1.rep")}],
        EXCHANGE_POLL_SECONDS=0.1, EXCHANGE_SETTLE_SECONDS=0,
    )
    return app_config


def _one_app(request: pytest.FixtureRequest, folder: Path):
    app = request.getfixturevalue("app")
    request.addfinalizer(app.extensions[EXTENSION].stop)
    client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    (folder / "Pos1.spr").write_bytes(GOODS_A)
    assert eventually(lambda: marker(folder / "Pos1.spr") == "@")
    return app, client


def test_z_by_compat_and_by_auto_close_time(one_register, folder, request):
    now = dt.datetime.now()
    if now.hour == 23 and now.minute >= 58:
        pytest.skip("the auto-close window would cross midnight")
    one_register["AUTO_CLOSE_TIME"] = None
    app, client = _one_app(request, folder)
    sell(client, 1, [{"code": "103"}], payments=[{"type": "cash", "amount": "45"}])
    z = {"atol_device_data": {"atol_device_number": 1, "atol_operator_password": "30"}, "comand": "ZREPORT",
         "data": ""}
    res = client.post("/api/compat/atol-kkt-service", json.dumps(z).encode(), content_type="application/json")
    assert res.json["error_code"] == 0, res.json
    path = folder / "Pos1.rep"
    assert eventually(path.exists)
    assert [b.header for b in read_report(path).blocks] == [("#", "1", "1")]

    # The daily close at AUTO_CLOSE_TIME (this minute) closes shift 2.
    sell(client, 1, [{"code": "101"}], payments=[{"type": "cash", "amount": "89.90"}])
    app.extensions["kkt"].auto_close_time = (now.hour, now.minute)
    report = None

    def two_blocks() -> bool:
        nonlocal report
        report = read_report(path)
        return len(report.blocks) == 2

    assert eventually(two_blocks)
    assert report.blocks[1].header == ("#", "1", "2")
    assert [p["code"] for p in report.blocks[1].receipts[0].positions] == ["101"]


def test_post_kkt_receipts_included_when_set(one_register, folder, request):
    one_register["EXCHANGE_INCLUDE_1C_RECEIPTS"] = True
    one_register["EXCHANGE_FALLBACK_CODE"] = "555"
    _, client = _one_app(request, folder)
    _kkt_1c_receipt(client)
    close_shift(client, 1)
    report = report_done(folder, 1)
    assert [(p["code"], p["amount"]) for r in report.blocks[0].receipts for p in r.positions] == [
        ("555", Decimal("100.00"))]


def _compat_income_by_barcode(client, barcode: str, status: int):
    """An atol-kkt-service INCOME of one item named only by its barcode (seed 002's shape)."""
    income = {"atol_device_data": {"atol_device_number": 1, "atol_operator_password": "30"}, "comand": "INCOME",
              "data": {"header_text": [], "footer_text": [], "check_sm": 10, "type_close": "tcCash", "tr_id": 0,
                       "goods": [{"name": "", "barcode": barcode, "kol": 1, "dep": 0, "discount": 0}]}}
    return client.post("/api/compat/atol-kkt-service", json.dumps(income).encode(), content_type="application/json",
                       status=status)


def test_unknown_code_or_barcode_is_refused(one_register, folder, request, emulator):
    _, client = _one_app(request, folder)
    res = client.post_json(f"{API}/receipts", {"items": [{"code": "103"}, {"code": "999"}],
                                               "payments": [{"type": "cash", "amount": 100}]}, status=422)
    assert res.json["error"]["field"] == "items.1.code" and "999" in res.json["error"]["message"]
    res = client.post_json(f"{API}/receipts", {"items": [{"quantity": 1}],
                                               "payments": [{"type": "cash", "amount": 100}]}, status=422)
    assert res.json["error"]["field"].startswith("items.0.")
    res = _compat_income_by_barcode(client, "123", status=422)
    assert "data.goods.0.barcode" in res.json["error"] and "123" in res.json["error"]
    assert [d for d in emulator.documents() if d["type"] == "receipt"] == []


def test_goods_without_price_is_sold_only_at_a_given_price(one_register, folder, request, emulator):
    app, client = _one_app(request, folder)
    (folder / "Pos1.spr").write_bytes(spr("$$$ADD", "555;4600000005551;Пакет;Пакет;;;0;0;0;0;0;;0;0;0;0;1"))
    assert eventually(lambda: marker(folder / "Pos1.spr") == "@")
    assert app.extensions[EXTENSION].catalogue.get(STORE_A, "555").price == 0
    res = client.post_json(f"{API}/receipts", {"items": [{"code": "103"}, {"code": "555"}],
                                               "payments": [{"type": "cash", "amount": 100}]}, status=422)
    assert res.json["error"]["field"] == "items.1.price" and "нет цены" in res.json["error"]["message"]
    res = _compat_income_by_barcode(client, "4600000005551", status=422)
    assert "data.goods.0.price" in res.json["error"] and "нет цены" in res.json["error"]
    assert [d for d in emulator.documents() if d["type"] == "receipt"] == []
    # With the price in the request it sells: name, VAT and code still come from the catalogue.
    done = sell(client, 1, [{"code": "555", "price": "3.00"}], payments=[{"type": "cash", "amount": 3}])
    assert done["total"] == 300


def test_reconciliation_mismatch_is_logged_and_shown(one_register, folder, request, caplog):
    app, client = _one_app(request, folder)
    exchange = app.extensions[EXTENSION]
    real = exchange.ledger.shift_docs

    def lose_a_receipt(device: int, fn: str, shift: int):
        docs = real(device, fn, shift)
        docs.docs = docs.docs[:-1]  # as if the journal had lost the last receipt
        return docs

    exchange.ledger.shift_docs = lose_a_receipt
    sell(client, 1, [{"code": "103"}], payments=[{"type": "cash", "amount": "45"}])
    sell(client, 1, [{"code": "101"}], payments=[{"type": "cash", "amount": "89.90"}])
    close_shift(client, 1)
    report_done(folder, 1)
    assert eventually(lambda: "не сошлась" in client.get("/kkt").text)
    page = client.get("/kkt", headers={"Accept": "application/json"}).json["exchange"]["registers"][0]
    assert page["report"]["level"] == "error"
    assert "134.90" in page["exports"][0]["mismatch"][-1]  # the device's counters: 45.00 + 89.90
    assert any("сверка смены 1 не сошлась" in r.getMessage() for r in caplog.records)


def test_goods_file_without_flag_waits_until_it_settles(one_register, folder, request):
    one_register.update(EXCHANGE_SETTLE_SECONDS=0.5, EXCHANGE_POLL_SECONDS=3600)
    app = request.getfixturevalue("app")
    exchange = app.extensions[EXTENSION]
    request.addfinalizer(exchange.stop)
    path = folder / "Pos1.spr"
    path.write_bytes(GOODS_A[:60])
    exchange.poll()
    path.write_bytes(GOODS_A)  # 1C goes on writing
    exchange.poll()
    assert marker(path) == "#"
    assert eventually(lambda: (exchange.poll(), marker(path) == "@")[1], timeout=10, interval=0.1)
    assert exchange.catalogue.count(STORE_A) == 3


def test_goods_folder_missing_or_wrong_path_is_shown(one_register, folder, request):
    missing = folder / "nope"
    one_register["DEVICES"][0]["goods_file"] = str(missing / "Pos1.spr")
    app = request.getfixturevalue("app")
    exchange = app.extensions[EXTENSION]
    request.addfinalizer(exchange.stop)

    def load() -> dict:
        exchange.poll()
        return exchange.status()["stores"][0]["load"] or {}

    assert load()["level"] == "error"
    assert f"Папка {missing} не найдена" in load()["message"] and "Pos1.spr" in load()["message"]
    missing.mkdir()
    assert load()["level"] == "ok" and str(missing) in load()["message"]
    (missing / "Pos1.spr").mkdir()  # a wrong path: a folder where the file should be
    assert load()["level"] == "error"
    assert "папка, а не файл (Is a directory)" in load()["message"]


def test_report_write_error_reads_in_russian(one_register, folder, request, monkeypatch):
    _, client = _one_app(request, folder)

    def denied(path: str, content: bytes) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr("kktapp.exchange.export.write_staged", denied)
    sell(client, 1, [{"code": "103"}], payments=[{"type": "cash", "amount": "45"}])
    close_shift(client, 1)
    status = lambda: client.get("/kkt", headers={"Accept": "application/json"}).json["exchange"]  # noqa: E731
    assert eventually(lambda: (status()["registers"][0]["report"] or {}).get("level") == "error")
    assert "нет прав на запись (Permission denied)" in status()["registers"][0]["report"]["message"]


def test_report_folder_missing_is_shown_and_retried(one_register, folder, request, emulator):
    out = folder / "out"
    one_register["DEVICES"][0]["report_file"] = str(out / "Pos1.rep")
    _, client = _one_app(request, folder)
    sell(client, 1, [{"code": "103"}], payments=[{"type": "cash", "amount": "45"}])
    close_shift(client, 1)
    status = lambda: client.get("/kkt", headers={"Accept": "application/json"}).json["exchange"]  # noqa: E731
    assert eventually(lambda: (status()["registers"][0]["report"] or {}).get("level") == "error")
    assert "не записан" in status()["registers"][0]["report"]["message"]
    out.mkdir()
    assert eventually(lambda: (out / "Pos1.rep").exists())
    assert [b.header for b in read_report(out / "Pos1.rep").blocks] == [("#", "1", "1")]
    assert eventually(lambda: status()["registers"][0]["report"]["level"] == "ok")
