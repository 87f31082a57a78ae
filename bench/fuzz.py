"""Fuzz: at least 100,000 generated bad inputs over HTTP against a running service and emulator.

The service runs as deployed (gunicorn, asyncio workers around ``kktapp.asgi``, HTTP Basic on,
1C anonymous from 127.0.0.1) in front of an ATOL emulator in this process, whose every command
is counted. Clients send bad inputs to all three contracts: valid documents with one field made
bad (money, quantities and names the device cannot carry, control characters, lone surrogates,
numbers like ``1e999999999`` or of 5,000 digits), free-form JSON, JSON nested 1,000 deep, bytes
that are not JSON, oversized bodies, unknown paths and malformed path parameters, wrong methods,
unreadable Authorization headers, bad SEGMENT sets.

Figures (one ``name: value unit`` line each); the first four must be 0:

* ``fuzz_5xx`` — answers with a 5xx status (or no answer at all);
* ``fuzz_over_10s`` — requests that took longer than 10 s;
* ``fuzz_device_commands`` — commands that change or print something on the device (status
  reads of the owner's refresh are not counted);
* ``fuzz_fiscal_documents`` — fiscal documents formed during the run;
* ``fuzz_requests``, ``fuzz_2xx`` (a bad input that was accepted), ``fuzz_rps``, ``fuzz_p99_ms``.

Run: ``.venv/bin/python bench/fuzz.py`` (``--count``, ``--clients``, ``--seed``); ``make bench``
runs it with the defaults. Exit status 1 when one of the four counts is not 0.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from common import HOST, Harness, percentile, result, setup_logging

from kktapp.atol.emulator import Emulator

log = logging.getLogger("fuzz")

USER, PASSWORD = "fuzz", "fuzz-secret-1"
#: Commands that change or print something; the owner's status reads are not caused by input.
DOCUMENT_COMMANDS = frozenset({
    "open_receipt", "register_position", "receipt_discount", "payment", "close_receipt", "cancel_receipt",
    "write_attribute", "cash_in", "cash_out", "print_string", "cut", "reprint_last", "open_shift",
    "close_shift", "x_report", "general_clearing", "tech_reset", "init_tables",
})
SLOW = 10.0
FORM = "application/x-www-form-urlencoded;charset=utf-8"
JSON = "application/json"
COMPAT = "/api/compat/atol-kkt-service"


class Raw(str):
    """A JSON literal written as is."""


def dumps(value: object) -> bytes:
    """JSON with Raw literals and Decimal numbers inserted verbatim."""
    raws: dict[str, str] = {}

    def swap(v: object) -> object:
        if isinstance(v, Raw | Decimal):
            token = f"@@{len(raws)}@@"
            raws[json.dumps(token)] = str(v)
            return token
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(value), ensure_ascii=True)
    for token, literal in raws.items():
        text = text.replace(token, literal)
    return text.encode("utf-8")


@dataclass
class Probe:
    """One bad request."""

    method: str
    path: str
    body: bytes = b""
    content_type: str = JSON
    auth: str | None = "basic"


class Generator:
    """Bad inputs, each bad by construction (a field gets a value of the kinds it cannot take)."""

    def __init__(self, rnd: random.Random) -> None:
        self.r = rnd

    # -- bad values by kind

    def control(self) -> str:
        return self.r.choice(["\x00", "\x1b[2J", "\x1b@", "\u202e", "\u200b", "\x07", "\x7f", "\x9b", "\ufeff",
                              "\ue000", "\x1c"])

    def surrogate(self) -> Raw:
        return Raw(json.dumps(chr(self.r.randint(0xD800, 0xDFFF))))

    def huge(self) -> Raw:
        kind = self.r.randrange(4)
        if kind == 0:
            return Raw(f"1e{self.r.randint(25, 999999999)}")
        if kind == 1:
            return Raw("9" * self.r.randint(4301, 6000))
        if kind == 2:
            return Raw("0." + "1" * self.r.randint(45, 3000))
        return Raw(f"-1e{self.r.randint(25, 999999999)}")

    def not_scalar(self) -> object:
        return self.r.choice([None, True, False, [], [1, 2], {}, {"a": 1}])

    def money(self) -> object:
        return self.r.choice([
            self.huge, self.not_scalar, lambda: "abc", lambda: Raw("-5"), lambda: Raw("1.005"),
            lambda: "12,3,4", lambda: Raw("NaN"), lambda: "Infinity", lambda: Raw("100000000"),
        ])()

    def quantity(self) -> object:
        return self.r.choice([
            self.huge, self.not_scalar, lambda: 0, lambda: -1, lambda: Raw("100000000"), lambda: Raw("10000000"),
            lambda: Raw("1.0001"), lambda: "шесть", lambda: Raw("1e25"),
        ])()

    def text(self, limit: int = 128) -> object:
        return self.r.choice([
            self.not_scalar, self.surrogate, lambda: "", lambda: "   ",
            lambda: "Чай" + self.control() + "x", lambda: "я" * self.r.randint(limit + 1, limit * 3),
            lambda: "…" * self.r.randint(limit // 3 + 1, limit),
        ])()

    def line(self) -> object:
        return self.r.choice([self.not_scalar, self.surrogate, lambda: "a" + self.control(), lambda: "я" * 300])()

    def vat(self) -> object:
        return self.r.choice([None, [], {}, "vat99", "НДС-13", 23, "", Raw("1.5"), Raw("1e30")])

    def any_json(self, depth: int = 0) -> object:
        kind = self.r.randrange(8 if depth < 3 else 5)
        if kind == 0:
            return None
        if kind == 1:
            return self.r.randint(-10**6, 10**6)
        if kind == 2:
            return self.r.choice(["", "x", "Чай", "\x00"])
        if kind == 3:
            return self.huge()
        if kind == 4:
            return self.surrogate()
        if kind in (5, 6):
            return {self.r.choice(["a", "Goods", "items", "data", "comand"]): self.any_json(depth + 1)
                    for _ in range(self.r.randint(0, 3))}
        return [self.any_json(depth + 1) for _ in range(self.r.randint(0, 3))]

    def garbage(self) -> bytes:
        kind = self.r.randrange(5)
        if kind == 0:
            return bytes(self.r.getrandbits(8) for _ in range(self.r.randint(1, 60))).replace(b"{", b"(")
        if kind == 1:
            n = self.r.randint(500, 3000)
            return b"[" * n + b"]" * n
        if kind == 2:
            n = self.r.randint(500, 2000)
            return b'{"a":' * n + b"1" + b"}" * n
        if kind == 3:
            return b'{"DocNumber": "1", "Goods": {'
        return b"\xff\xfe" + "{}".encode("utf-16-le")

    @staticmethod
    def put(doc: dict, path: tuple, value: object) -> dict:
        doc = json.loads(json.dumps(doc))
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return doc

    # -- per contract

    def onec(self) -> Probe:
        valid = {"DocNumber": f"F-{self.r.randrange(10**9)}", "DocDate": "06.10.2017", "DocSumm": 10,
                 "Goods": {"Position_1": {"Name": "Чай", "Price": 10, "Quantity": 1, "Tax": 22, "PositionSumm": 10}}}
        pos = ("Goods", "Position_1")
        fields = [
            (("DocNumber",), lambda: self.r.choice([self.not_scalar(), self.surrogate(), "", "a\nb", "x" * 200])),
            (("DocDate",), lambda: self.r.choice([None, "2017-10-06", "32.01.2017", 6, "06.10"])),
            (("DocSumm",), self.money),
            (("Goods",), lambda: self.r.choice([None, [], {}, "x", {"Position_x": {}}, {"Position_0": {}}])),
            ((*pos, "Name"), self.text),
            ((*pos, "Price"), self.money),
            ((*pos, "Quantity"), self.quantity),
            ((*pos, "Tax"), self.vat),
            ((*pos, "PositionSumm"), self.money),
            (("Device",), lambda: self.r.choice([0, 2, 10**6, "x", self.huge()])),
            (("Unknown",), self.any_json),
        ]
        kind = self.r.randrange(10)
        if kind < 6:
            path, bad = self.r.choice(fields)
            body = dumps(self.put(valid, path, bad()))
        elif kind == 6:
            goods = {f"Position_{i}": {"Name": "Ч", "Price": 1, "Quantity": 1, "Tax": 22, "PositionSumm": 1}
                     for i in range(1, 252)}
            body = dumps(dict(valid, Goods=goods, DocSumm=251))
        elif kind == 7:
            body = dumps(self.any_json())
        else:
            body = self.garbage()
        path = self.r.choice(["/kkt"] * 8 + ["/kkt/", "/kkt/x"])
        method = "POST" if self.r.random() < 0.97 else self.r.choice(["PUT", "DELETE", "PATCH"])
        return Probe(method, path, body, FORM, auth=None)

    def api(self) -> Probe:
        valid = {"items": [{"name": "Чай", "price": "10.00", "quantity": "1", "tax": "vat22"}],
                 "payments": [{"type": "cash", "amount": "10.00"}]}
        kind = self.r.randrange(12)
        if kind < 6:
            path, bad = self.r.choice([
                (("items",), lambda: self.r.choice([None, [], {}, "x"])),
                (("items", 0, "name"), self.text),
                (("items", 0, "price"), self.money),
                (("items", 0, "quantity"), self.quantity),
                (("items", 0, "tax"), self.vat),
                (("items", 0, "department"), lambda: self.r.choice([100, -1, 10**9, self.huge()])),
                (("payments", 0, "amount"), lambda: self.r.choice([self.money(), 0, "1.00"])),
                (("header",), lambda: [{"text": self.line()}]),
                (("device",), lambda: self.r.choice([0, 2, self.huge()])),
                (("unknown",), self.any_json),
            ])
            return Probe("POST", "/api/v1/receipts", dumps(self.put(valid, path, bad())))
        if kind == 6:
            return Probe("POST", f"/api/v1/devices/{self.r.choice(['1', '2', 'x'])}/cash-in",
                         dumps({"amount": self.r.choice([self.money(), 0])}))
        if kind == 7:
            lines = self.r.choice([[], [{"text": ""}], [{"text": " "}], [{"text": self.line()}], "x", None])
            return Probe("POST", "/api/v1/devices/1/print", dumps({"lines": lines}))
        if kind == 8:
            return Probe(self.r.choice(["GET", "POST", "DELETE"]), self.r.choice([
                "/api/v1/nothing", "/api/v1/devices/abc/status", "/api/v1/devices/1x/snapshot", "/api/v2/receipts",
                "/api/v1/receipts/" + "x" * self.r.randint(1, 300), "/api/v1/jobs/%00", "/api/",
                "/api/v1/devices/99999999999999999999/status",
            ]), dumps({}))
        if kind == 9:
            return Probe("POST", "/api/v1/receipts", dumps(valid), auth=self.r.choice(
                ["Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Digest a=1"]))
        if kind == 10:
            return Probe("POST", "/api/v1/receipts", dumps(self.any_json()))
        return Probe("POST", "/api/v1/receipts", self.garbage())

    def compat(self) -> Probe:
        dev = {"atol_device_number": 1}
        income = {"atol_device_data": dev, "comand": "INCOME",
                  "data": {"goods": [{"name": "Чай", "price": "10", "kol": "1", "nds": 22}], "check_sm": "10",
                           "type_close": "tc1"}}
        kind = self.r.randrange(12)
        if kind < 5:
            path, bad = self.r.choice([
                (("data", "goods", 0, "name"), self.text),
                (("data", "goods", 0, "price"), self.money),
                (("data", "goods", 0, "kol"), self.quantity),
                (("data", "goods", 0, "nds"), self.vat),
                (("data", "goods", 0, "dep"), lambda: self.r.choice([100, 10**9, self.huge()])),
                (("data", "check_sm"), lambda: self.r.choice([self.money(), 11, 999])),
                (("data", "tr_id"), lambda: self.r.choice([Raw(f"1e{self.r.randint(41, 999999999)}"), Raw("1.5"),
                                                           [], {}, True])),
                (("data", "goods"), lambda: self.r.choice([None, [], "x", {}])),
                (("comand",), lambda: self.r.choice([None, 5, "", "INCOMEX", self.surrogate()])),
                (("atol_device_data", "atol_device_number"), lambda: self.r.choice([2, 10**6, self.huge()])),
            ])
            return Probe("POST", COMPAT, dumps(self.put(income, path, bad())))
        if kind == 5:
            text = self.r.choice([self.line(), [], None, {"x": 1}])
            return Probe("POST", COMPAT, dumps({"atol_device_data": dev, "comand": "PRINT_TSTRING_LIST",
                                                "data": {"text": [{"text": text}] if text is not None else []}}))
        if kind == 6:
            text = self.r.choice(["", " \r\n ", "a\x00b", "x\u202e", self.surrogate(), "я" * 300])
            return Probe("POST", COMPAT, dumps({"atol_device_data": dev, "comand": "PRINT_STRING_LIST",
                                                "data": {"text": text}}))
        if kind == 7:
            return Probe("POST", COMPAT, dumps({"atol_device_data": dev, "comand": self.r.choice(
                ["CASH_INCOME", "CASH_OUTCOME"]), "data": self.r.choice([self.money(), 0])}))
        if kind == 8:
            inner = self.r.choice([b"not base64 !", base64.b64encode(self.garbage()),
                                   base64.b64encode(dumps(self.put(income, ("data", "goods", 0, "kol"),
                                                                   self.quantity())))])
            seg = {"segment_guid": f"g{self.r.randrange(10**9)}", "segment_num": 1, "segment_count": 1,
                   "text": inner.decode("latin-1")}
            seg.update(self.r.choice([{}, {"segment_num": 2}, {"segment_count": 0}, {"segment_guid": ""}]))
            return Probe("POST", COMPAT, dumps({"atol_device_data": dev, "comand": "SEGMENT", "data": seg}))
        if kind == 9:
            return Probe(self.r.choice(["GET", "POST", "PUT"]), self.r.choice(
                ["/api/compat/", "/api/compat/x", COMPAT + "/x", COMPAT]), b"{}" if self.r.random() < 0.5 else b"")
        if kind == 10:
            return Probe("POST", COMPAT, dumps(self.any_json()))
        return Probe("POST", COMPAT, self.garbage())

    def oversized(self) -> Probe:
        path, ctype = self.r.choice([("/kkt", FORM), ("/api/v1/receipts", JSON), (COMPAT, JSON)])
        return Probe("POST", path, b" " * (2 * 1024 * 1024 + 1), ctype, auth=None if path == "/kkt" else "basic")

    def next(self, n: int) -> Probe:
        if n % 5000 == 4999:
            return self.oversized()
        return self.r.choice([self.onec, self.api, self.compat])()


@dataclass
class Tally:
    """What the clients saw."""

    statuses: Counter
    latencies: list[float]
    slow: int = 0
    #: Requests sent a second time on a new connection because a kept-alive one was closed.
    retried: int = 0
    #: The first few inputs answered with a 2xx or 5xx, for the log.
    odd: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(port: int, probes: list[Probe], tally: Tally) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    token = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for probe in probes:
        headers = {"Content-Type": probe.content_type, "Content-Length": str(len(probe.body))}
        if probe.auth == "basic":
            headers["Authorization"] = token
        elif probe.auth:
            headers["Authorization"] = probe.auth
        began = time.monotonic()
        status = 599  # no answer: counted with the 5xx
        for attempt in (1, 2):
            try:
                conn.request(probe.method, probe.path, body=probe.body, headers=headers)
                res = conn.getresponse()
                res.read()
                status = res.status
                if res.getheader("Connection", "").lower() == "close":
                    conn.close()
                break
            except (OSError, http.client.HTTPException):
                # A kept-alive connection the server closed meanwhile (after a 413 it stops
                # reading): one retry on a new connection, as any HTTP client does.
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
                if attempt == 1:
                    with tally.lock:
                        tally.retried += 1
        took = time.monotonic() - began
        with tally.lock:
            tally.statuses[status] += 1
            tally.latencies.append(took)
            if took > SLOW:
                tally.slow += 1
            if (status < 400 or status >= 500) and len(tally.odd) < 10:
                tally.odd.append(f"{status} {probe.method} {probe.path} {probe.body[:300]!r}")
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    setup_logging()
    from werkzeug.security import generate_password_hash

    emu = Emulator()
    emu.start(HOST, 0)
    commands: Counter = Counter()
    original = emu._before_command

    def count(name: str) -> None:
        commands[name] += 1
        original(name)

    emu._before_command = count  # type: ignore[method-assign]
    gen = Generator(random.Random(args.seed))
    probes = [gen.next(n) for n in range(args.count)]
    try:
        with Harness("fuzz") as harness:
            device = type("Device", (), {"number": 1, "url": emu.url})()
            service = harness.start_service(
                [device], workers=2, server="asgi", ready_path="/kkt",
                AUTH_REQUIRED=True,
                USERS={USER: {"password_hash": generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000"),
                              "role": "admin"}},
                LOG_LEVEL="WARNING",
            )
            time.sleep(2)  # the owner's first status reads are done
            documents_before = len(emu.documents())
            commands.clear()
            tally = Tally(Counter(), [])
            began = time.monotonic()
            threads = [threading.Thread(target=client, args=(service.port, probes[i::args.clients], tally))
                       for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - began
            time.sleep(2)  # anything queued by mistake would reach the device now
            caused = sum(n for name, n in commands.items() if name in DOCUMENT_COMMANDS)
            documents = len(emu.documents()) - documents_before
    finally:
        emu.stop()
    total = sum(tally.statuses.values())
    server_errors = sum(n for status, n in tally.statuses.items() if status >= 500)
    accepted = sum(n for status, n in tally.statuses.items() if status < 400)
    result("fuzz_requests", total, "requests", 0)
    result("fuzz_5xx", server_errors, "answers", 0)
    result("fuzz_over_10s", tally.slow, "requests", 0)
    result("fuzz_device_commands", caused, "commands", 0)
    result("fuzz_fiscal_documents", documents, "documents", 0)
    result("fuzz_2xx", accepted, "answers", 0)
    result("fuzz_retried_on_new_connection", tally.retried, "requests", 0)
    result("fuzz_rps", total / elapsed, "requests/s")
    result("fuzz_p99_ms", percentile(tally.latencies, 99) * 1000, "ms")
    log.info("statuses: %s", dict(sorted(tally.statuses.items())))
    for line in tally.odd:
        log.warning("accepted or failed: %s", line)
    if commands:
        log.info("device commands during the run: %s", dict(commands))
    bad = server_errors or tally.slow or caused or documents
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
