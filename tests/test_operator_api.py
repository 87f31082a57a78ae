"""Receipts list and cancel: GET /api/v1/receipts, POST /api/v1/receipts/{id}/cancel, and the 1C side.

Against the emulated devices of conftest (``clients``: two devices, HTTP Basic on). A device
switched off keeps receipts queued; emulator latency keeps one in "sending" long enough to try.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from operator_helpers import onec, wait_for

import kktapp.atol.driver as atol_driver
from kktapp.errors import ResultCode
from kktapp.journal import Journal

API = "/api/v1"


def sale(name: str = "Чай чёрный", price: str = "250.00", qty: int = 2) -> dict:
    return {
        "items": [{"name": name, "price": price, "quantity": qty, "tax": "vat22"}],
        "payments": [{"type": "electronic", "amount": str(int(float(price) * qty))}],
    }


def receipts_of(emu) -> list[dict]:
    return [d for d in emu.documents() if d["type"] == "receipt"]


def queue_while_off(clients, emulator, keys: list[str], device: int = 1) -> list[str]:
    """Switch device 1 off and submit receipts that stay queued; their job ids."""
    emulator.power_off()
    wait_for(lambda: clients.app.extensions["kkt"].snapshot(1).get("link") == "down")
    ids = []
    for key in keys:
        body = sale(name=f"Товар {key}") | {"device": device}
        res = clients.cashier.post_json(f"{API}/receipts?wait=0", body, headers={"Idempotency-Key": key}, status=202)
        assert res.json["state"] == "queued"
        ids.append(res.json["id"])
    return ids


# --------------------------------------------------------------------------- list


def test_list_rows_and_filters(clients, emulator):
    done = clients.cashier.post_json(f"{API}/receipts", sale(), headers={"Idempotency-Key": "paid-1"}).json
    assert done["state"] == "done"
    queued_ids = queue_while_off(clients, emulator, ["wait-1", "wait-2"])

    res = clients.cashier.get(f"{API}/receipts")
    data = res.json
    assert data["total"] == 3 and data["limit"] == 50 and data["offset"] == 0
    rows = data["receipts"]
    assert [r["id"] for r in rows] == [*reversed(queued_ids), done["id"]]  # newest first
    row = rows[-1]
    assert row["key"] == "paid-1" and row["source"] == "api" and row["device"] == 1
    assert row["amount"] == 50000 and row["state"] == "done" and row["cancellable"] is False
    assert row["fiscal_document_number"] == done["result"]["fiscal_document_number"]
    assert row["fiscal_sign"] == done["result"]["fiscal_sign"]
    assert dt.datetime.fromisoformat(row["accepted_at"]).tzinfo is not None
    queued = rows[0]
    assert queued["state"] == "queued" and queued["cancellable"] is True
    assert queued["fiscal_document_number"] is None and "нет связи" in queued["reason"]

    def ids(query: str) -> list[str]:
        url = f"{API}/receipts?{quote(query, safe='=&%,')}"
        return [r["id"] for r in clients.cashier.get(url).json["receipts"]]

    assert ids("state=queued") == list(reversed(queued_ids))
    assert ids("state=done,failed") == [done["id"]]
    assert ids("q=wait-2") == [queued_ids[1]]
    assert ids("q=товар%20WAIT-1") == [queued_ids[0]]  # item text, case folded (Cyrillic too)
    assert ids("q=" + done["id"]) == [done["id"]]
    assert ids("q=50%25") == []  # LIKE wildcards are literal
    assert ids("device=2") == []
    today = dt.date.today()
    assert len(ids(f"since={today.isoformat()}&until={today.isoformat()}")) == 3
    assert ids(f"until={(today - dt.timedelta(days=1)).isoformat()}") == []
    assert ids(f"since={(today + dt.timedelta(days=1)).isoformat()}") == []
    page = clients.cashier.get(f"{API}/receipts?limit=1&offset=1").json
    assert page["total"] == 3 and [r["id"] for r in page["receipts"]] == [queued_ids[0]]


def test_list_bad_filters_422(clients):
    for query, field in [("state=lost", "state"), ("device=x", "device"), ("since=2026-13-45", "since"),
                         ("limit=0", "limit"), ("limit=501", "limit"), ("offset=-1", "offset")]:
        err = clients.cashier.get(f"{API}/receipts?{query}", status=422).json["error"]
        assert err["field"] == field and err["code"] == ResultCode.VALIDATION


def test_list_needs_login(clients):
    clients.anon.get(f"{API}/receipts", status=401)


# --------------------------------------------------------------------------- cancel


def test_cancel_queued_frees_the_key_and_never_prints(clients, emulator):
    [job_id] = queue_while_off(clients, emulator, ["order-7"])
    clients.cashier.post(f"{API}/receipts/{job_id}/cancel", status=403)  # admin only
    row = clients.admin.post(f"{API}/receipts/{job_id}/cancel").json
    assert row["state"] == "failed" and row["error_code"] == ResultCode.CANCELLED
    assert "отменён оператором" in row["reason"] and "admin" in row["reason"]
    assert row["cancellable"] is False
    # The job says so too, and a second cancel is refused with the reason.
    job = clients.cashier.get(f"{API}/receipts/{job_id}").json
    assert job["state"] == "failed" and job["error"]["code"] == ResultCode.CANCELLED
    err = clients.admin.post(f"{API}/receipts/{job_id}/cancel", status=409).json["error"]
    assert "отменять нечего" in err["message"]

    emulator.power_on()
    # The key is free: the same key may carry a new receipt, which is fiscalised once.
    again = clients.cashier.post_json(f"{API}/receipts", sale(name="Товар order-7"),
                                      headers={"Idempotency-Key": "order-7"}).json
    assert again["state"] == "done" and again["id"] != job_id
    assert len(receipts_of(emulator)) == 1


def test_cancel_refused_for_done_unknown_and_missing(clients, emulator):
    done = clients.cashier.post_json(f"{API}/receipts", sale()).json
    err = clients.admin.post(f"{API}/receipts/{done['id']}/cancel", status=409).json["error"]
    assert "уже пробит" in err["message"] and err["code"] == ResultCode.CONFLICT
    clients.admin.post(f"{API}/receipts/nope/cancel", status=404)
    # An operation is not a receipt.
    op = clients.admin.post(f"{API}/devices/1/shift/x-report").json
    clients.admin.post(f"{API}/receipts/{op['id']}/cancel", status=404)
    # Outcome unknown: it may have been fiscalised, so no cancel. The job is put on the device
    # just switched off: on a live one the owner could settle it (not sent → requeued, then
    # cancellable) before the cancel arrives.
    journal: Journal = clients.app.extensions["kkt"].journal
    emulator.power_off()
    job, _ = journal.accept(device=1, kind="receipt", key="api:u1", fingerprint="f",
                            payload={"receipt": {"type": "sell", "positions": [], "payments": []}})
    journal.mark_sending(job.id, 5)
    journal.mark_unknown(job.id, "связь прервалась")
    err = clients.admin.post(f"{API}/receipts/{job.id}/cancel", status=409).json["error"]
    assert "выясняется" in err["message"]


def test_cancel_refused_for_a_receipt_being_sent(clients, emulator):
    emulator.set_latency(0.4)  # every packet takes 0.4 s each way: the receipt is "sending" for seconds
    job = clients.cashier.post_json(f"{API}/receipts?wait=0", sale(), status=202).json
    svc = clients.app.extensions["kkt"]
    wait_for(lambda: svc.get_job(job["id"]).state == "sending")
    err = clients.admin.post(f"{API}/receipts/{job['id']}/cancel", status=409).json["error"]
    assert "отправляется в ККТ" in err["message"]
    emulator.set_latency(0)
    wait_for(lambda: svc.get_job(job["id"]).state == "done")
    assert len(receipts_of(emulator)) == 1


def test_cancel_cannot_overtake_the_owner(tmp_path):
    """The owner's mark_sending and the operator's cancel are one conditional UPDATE each."""
    journal = Journal(str(tmp_path / "j.sqlite3"))
    job, _ = journal.accept(device=1, kind="receipt", key="k", fingerprint="f", payload={})
    ok, cancelled = journal.cancel(job.id, {"code": ResultCode.CANCELLED, "message": "отменён"})
    assert ok and cancelled.state == "failed"
    assert journal.mark_sending(job.id, 3) is False  # picked before the cancel: sends nothing
    assert journal.get(job.id).state == "failed"
    job2, _ = journal.accept(device=1, kind="receipt", key="k2", fingerprint="f", payload={})
    assert journal.mark_sending(job2.id, 3) is True
    ok, still = journal.cancel(job2.id, {"code": ResultCode.CANCELLED, "message": "отменён"})
    assert not ok and still.state == "sending"
    journal.close()


# --------------------------------------------------------------------------- 1C: queued code, cancel


def test_1c_queued_answer_then_cancel_then_repeat(clients, emulator):
    emulator.power_off()
    wait_for(lambda: clients.app.extensions["kkt"].snapshot(1).get("link") == "down")
    client = clients.cashier
    res = client.post("/kkt", onec("ТР00-77"), content_type="application/x-www-form-urlencoded", status=202)
    answer = res.json
    assert answer["result_code"] == ResultCode.QUEUED and answer["check_number"] == 0
    assert "не пробивайте" in answer["result_description"]
    # 1C asks again with the same DocNumber while it waits: same job, still queued.
    again = client.post("/kkt", onec("ТР00-77"), content_type="application/x-www-form-urlencoded", status=202).json
    assert again["job_id"] == answer["job_id"]
    clients.admin.post(f"{API}/receipts/{answer['job_id']}/cancel")
    # After the cancel, the same document gets the cancellation, not a new receipt.
    emulator.power_on()
    gone = client.post("/kkt", onec("ТР00-77"), content_type="application/x-www-form-urlencoded", status=409).json
    assert gone["result_code"] == ResultCode.CANCELLED and "отменён оператором" in gone["result_description"]
    # A corrected document under the same DocNumber is a new receipt.
    new = client.post("/kkt", onec("ТР00-77", "800.00"), content_type="application/x-www-form-urlencoded").json
    assert new["result_code"] == 0 and new["check_number"] > 0
    assert len(receipts_of(emulator)) == 1


# ---------------------------------------------------------------------- settle an unknown job by hand


def unknown_api_receipt(clients, emulator, key: str) -> str:
    """An API receipt whose outcome the device could not tell (the device is off: the owner
    leaves it alone); its job id."""
    (job_id,) = queue_while_off(clients, emulator, [key])
    journal: Journal = clients.app.extensions["kkt"].journal
    journal.mark_sending(job_id, 5)
    journal.mark_unknown(job_id, "решает оператор")
    return job_id


def test_settle_needs_admin_and_an_unknown_job(clients, emulator):
    job_id = unknown_api_receipt(clients, emulator, "set-1")
    clients.anon.post_json(f"{API}/jobs/{job_id}/settle", {"fiscalised": False}, status=401)
    err = clients.cashier.post_json(f"{API}/jobs/{job_id}/settle", {"fiscalised": False}, status=403).json["error"]
    assert err["code"] == ResultCode.FORBIDDEN
    clients.admin.post_json(f"{API}/jobs/nope/settle", {"fiscalised": False}, status=404)
    err = clients.admin.post_json(f"{API}/jobs/{job_id}/settle", {"fiscalised": True}, status=422).json["error"]
    assert err["field"] == "fiscal_document_number"
    err = clients.admin.post_json(f"{API}/jobs/{job_id}/settle", {"fiscalised": True, "fiscal_document_number": 0},
                                  status=422).json["error"]
    assert err["field"] == "fiscal_document_number"
    (queued,) = queue_while_off(clients, emulator, ["set-2"])
    err = clients.admin.post_json(f"{API}/jobs/{queued}/settle", {"fiscalised": False}, status=409).json["error"]
    assert "ещё в очереди" in err["message"] and err["code"] == ResultCode.CONFLICT
    assert clients.app.extensions["kkt"].get_job(job_id).state == "unknown"


def test_settle_through_the_api_answers_repeats_and_refuses_a_second_verdict(clients, emulator):
    svc = clients.app.extensions["kkt"]
    job_id = unknown_api_receipt(clients, emulator, "set-3")
    body = clients.admin.post_json(f"{API}/jobs/{job_id}/settle",
                                   {"fiscalised": True, "fiscal_document_number": 77, "fiscal_sign": "123"}).json
    assert body["state"] == "done" and body["result"]["fiscal_document_number"] == 77
    assert body["result"]["fiscal_sign"] == "123" and body["result"]["settled_by_hand"]["who"] == "admin"
    assert body["result"]["total"] == 50000 and body["result"]["shift_number"] == 0
    assert not svc.unsettled(1)
    err = clients.admin.post_json(f"{API}/jobs/{job_id}/settle", {"fiscalised": False}, status=409).json["error"]
    assert "уже установлен" in err["message"]
    emulator.power_on()
    again = clients.cashier.post_json(f"{API}/receipts", sale(name="Товар set-3"),
                                      headers={"Idempotency-Key": "set-3"}).json
    assert again["id"] == job_id and again["result"]["fiscal_document_number"] == 77
    assert receipts_of(emulator) == []


def test_the_owner_and_the_operator_never_both_land(tmp_path):
    """Compare-and-set both ways: the operator only moves an unknown row, and recovery's
    verdicts only an unfinished one."""
    journal = Journal(str(tmp_path / "j.sqlite3"))
    job, _ = journal.accept(device=1, kind="cash_in", key="k", fingerprint="f", payload={"params": {"amount": 1}})
    journal.mark_sending(job, 3)
    journal.mark_unknown(job, "решает оператор")
    ok, settled = journal.settle_by_hand(job.id, error={"code": ResultCode.SETTLED_NOT_FISCALISED, "message": "x"})
    assert ok and settled.state == "failed"
    # The owner had read the job before and now finds the document: its result does not land.
    journal.finish(job, "done", result={"fiscal_document_number": 4}, unsettled_only=True)
    journal.requeue(job)
    journal.mark_unknown(job, "снова")
    assert job.state == "failed" and journal.get(job.id).state == "failed"
    assert journal.settle_by_hand(job.id, result={"fiscal_document_number": 4})[0] is False


# ---------------------------------------------------------------------- a hand-settled receipt read back from the FN


def held_1c_receipt(clients, emulator, monkeypatch, number: str, fd_before: int) -> str:
    """A 1C receipt whose outcome the device cannot tell, holding the queue with the device on:
    its "before" is ``fd_before`` and any document after it is more than the driver looks at."""
    emulator.power_off()
    wait_for(lambda: clients.app.extensions["kkt"].snapshot(1).get("link") == "down")
    queued = clients.cashier.post("/kkt", onec(number), content_type="application/x-www-form-urlencoded",
                                  status=202).json
    journal: Journal = clients.app.extensions["kkt"].journal
    journal.mark_sending(queued["job_id"], fd_before)
    journal.mark_unknown(queued["job_id"], "связь прервалась")
    monkeypatch.setattr(atol_driver, "DOCUMENTS_AFTER", 0)
    emulator.power_on()
    wait_for(lambda: "решает оператор" in clients.app.extensions["kkt"].get_job(queued["job_id"]).reason)
    return queued["job_id"]


def test_a_receipt_settled_by_hand_gets_its_numbers_from_the_fn(clients, emulator, monkeypatch, caplog):
    """The operator gives the FD; the owner reads that document and 1C gets the receipt's number.

    Without it the answer said check_number 0, which the 1C code takes for "not printed yet".
    """
    svc = clients.app.extensions["kkt"]
    printed = clients.cashier.post("/kkt", onec("ТР-A"), content_type="application/x-www-form-urlencoded").json
    fd = printed["fiscal_document_number"]
    assert printed["check_number"] > 0
    job_id = held_1c_receipt(clients, emulator, monkeypatch, "ТР-B", fd - 1)
    clients.admin.post_json(f"{API}/jobs/{job_id}/settle",
                            {"fiscalised": True, "fiscal_document_number": fd, "fiscal_sign": "1"})
    wait_for(lambda: svc.get_job(job_id).result["settled_by_hand"].get("fn_checked") is True)
    result = svc.get_job(job_id).result
    assert result["fiscal_document_number"] == fd
    # The FN's numbers and sign, not the operator's typo; who settled it is kept.
    assert result["receipt_number"] == printed["check_number"] and result["shift_number"] == printed["shift_number"]
    assert result["fiscal_sign"] == printed["fiscal_sign"] != "1"
    assert result["settled_by_hand"]["who"] == "admin" and "fn_note" not in result["settled_by_hand"]
    again = clients.cashier.post("/kkt", onec("ТР-B"), content_type="application/x-www-form-urlencoded").json
    assert again["result_code"] == 0 and again["check_number"] == printed["check_number"]
    assert again["fiscal_document_number"] == fd
    assert len(receipts_of(emulator)) == 1
    assert any("сверен с ФН" in r.getMessage() for r in caplog.records)
    assert not svc.journal.fn_checks_due(1)


def test_a_wrong_fd_given_by_hand_is_noted_and_the_queue_goes_on(clients, emulator, monkeypatch, caplog):
    """An FD that is not this receipt's document: the operator's result stays, the log says so
    as an error, the check is not repeated and the next receipt prints."""
    svc = clients.app.extensions["kkt"]
    other = clients.cashier.post("/kkt", onec("ТР-C", "900.00"), content_type="application/x-www-form-urlencoded").json
    fd = other["fiscal_document_number"]
    not_a_receipt = next(d["fd_number"] for d in emulator.documents() if d["type"] != "receipt")
    cases = {fd: "другой чек", not_a_receipt: "не чек", fd + 50: "нет документа"}
    ids = {}
    for i, wrong in enumerate(cases):
        job_id = held_1c_receipt(clients, emulator, monkeypatch, f"ТР-D{i}", fd - 1)
        clients.admin.post_json(f"{API}/jobs/{job_id}/settle", {"fiscalised": True, "fiscal_document_number": wrong})
        wait_for(lambda job_id=job_id: "fn_checked" in svc.get_job(job_id).result["settled_by_hand"])
        ids[wrong] = job_id
    for wrong, words in cases.items():
        result = svc.get_job(ids[wrong]).result
        mark = result["settled_by_hand"]
        assert mark["fn_checked"] is False and words in mark["fn_note"], mark
        assert result["fiscal_document_number"] == wrong and result["receipt_number"] == 0
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and "не сверен с ФН" in r.getMessage()]
    assert len(errors) == len(cases)
    assert not svc.journal.fn_checks_due(1)
    after = clients.cashier.post("/kkt", onec("ТР-E"), content_type="application/x-www-form-urlencoded").json
    assert after["result_code"] == 0 and after["check_number"] > 0
