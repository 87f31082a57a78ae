"""HTTP Basic, roles, address allow-list, failed-login throttling, the passwd tool."""

from __future__ import annotations

import base64
import io
import json
import logging

import pytest
import webtest
from flask import Flask, jsonify
from werkzeug.security import check_password_hash, generate_password_hash

from kktapp import CONF_PATH, passwd
from kktapp.web import auth
from kktapp.web.auth import AuthError, Throttle, address_allowed, require

API = "/api/v1"
COMPAT = "/api/compat/atol-kkt-service"


# --------------------------------------------------------------------------- a tiny app for the decorator


@pytest.fixture
def mini() -> Flask:
    """An app with one view per role and one open to allowed addresses."""
    app = Flask("mini")
    app.config.from_pyfile(CONF_PATH)  # the defaults every real app starts from
    app.config.update(
        AUTH_REQUIRED=True,
        USERS={
            "kassa": {"password_hash": generate_password_hash("pw-kassa", method="pbkdf2:sha256:1000"),
                      "role": "cashier"},
            "boss": {"password_hash": generate_password_hash("pw-boss", method="pbkdf2:sha256:1000"),
                     "role": "admin"},
            "nohash": {"role": "admin"},
            "oddrole": {"password_hash": generate_password_hash("pw", method="pbkdf2:sha256:1000"),
                        "role": "owner"},
        },
        LOCAL=["10.0.0.0/8", "192.168.1.5", "::1", "garbage"],
    )

    @app.get("/sell")
    @require("cashier")
    def sell():
        return jsonify(user=auth.current_user().login)

    @app.get("/z")
    @require("admin")
    def z():
        return jsonify(user=auth.current_user().login)

    @app.get("/onec")
    @require("cashier", anonymous_from="LOCAL")
    def onec():
        user = auth.current_user()
        return jsonify(user=user.login, anonymous=user.anonymous)

    @app.errorhandler(AuthError)
    def refused(exc: AuthError):
        return jsonify(exc.to_dict()), exc.http_status, exc.headers

    return app


def client(app: Flask, login: str | None = None, password: str = "", addr: str = "203.0.113.7") -> webtest.TestApp:
    c = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": addr})
    if login is not None:
        c.authorization = ("Basic", (login, password))
    return c


def test_roles(mini):
    assert client(mini, "kassa", "pw-kassa").get("/sell").json == {"user": "kassa"}
    assert client(mini, "boss", "pw-boss").get("/sell").json == {"user": "boss"}
    assert client(mini, "boss", "pw-boss").get("/z").json == {"user": "boss"}
    res = client(mini, "kassa", "pw-kassa").get("/z", status=403)
    assert res.json["code"] == 1011 and "администратор" in res.json["message"]


def test_no_credentials_challenge(mini):
    res = client(mini).get("/sell", status=401)
    assert res.headers["WWW-Authenticate"] == 'Basic realm="kkt", charset="UTF-8"'
    assert res.json["code"] == 1010


@pytest.mark.parametrize("header", ["Bearer abc", "Basic !!!notbase64", "Basic " + "w6k=", "Digest x=1"])
def test_unreadable_authorization_header(header, mini):
    c = webtest.TestApp(mini, extra_environ={"REMOTE_ADDR": "203.0.113.7"})
    res = c.get("/sell", headers={"Authorization": header}, status=401)
    assert res.json["code"] == 1010


def test_cyrillic_login_and_password(mini):
    mini.config["USERS"]["Кассир"] = {"password_hash": generate_password_hash("пароль-1", method="pbkdf2:sha256:1000"),
                                      "role": "cashier"}
    token = base64.b64encode("Кассир:пароль-1".encode()).decode()
    res = client(mini).get("/sell", headers={"Authorization": f"Basic {token}"})
    assert res.json == {"user": "Кассир"}


@pytest.mark.parametrize("login, password", [("kassa", "wrong"), ("nobody", "pw"), ("nohash", ""),
                                             ("oddrole", "pw"), ("", "pw")])
def test_bad_credentials_401(login, password, mini):
    res = client(mini, login, password).get("/sell", status=401)
    assert res.json["code"] == 1010
    assert "WWW-Authenticate" in res.headers


def test_failed_login_logged_without_password(mini, caplog):
    caplog.set_level(logging.WARNING, logger="kktapp.web.auth")
    client(mini, "kassa", "Sup3r-Secret-Guess").get("/sell", status=401)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "kassa" in text and "203.0.113.7" in text
    assert "Sup3r-Secret-Guess" not in text


def test_anonymous_only_from_allowed_addresses(mini):
    for addr in ("10.1.2.3", "192.168.1.5", "::1", "::ffff:10.9.9.9"):
        assert client(mini, addr=addr).get("/onec").json == {"user": "", "anonymous": True}, addr
    client(mini, addr="192.168.1.6").get("/onec", status=401)
    # Credentials, when sent, are still checked (and give the user's identity).
    assert client(mini, "kassa", "pw-kassa", addr="10.1.2.3").get("/onec").json["user"] == "kassa"
    client(mini, "kassa", "wrong", addr="10.1.2.3").get("/onec", status=401)
    # An allowed address gives nothing on views without anonymous_from.
    client(mini, addr="10.1.2.3").get("/sell", status=401)


@pytest.mark.parametrize(
    "addr, entries, ok",
    [("127.0.0.1", ["127.0.0.1"], True), ("127.0.0.2", ["127.0.0.0/8"], True), ("10.0.0.1", ["127.0.0.1"], False),
     ("::1", ["::1"], True), ("fe80::1%eth0", ["fe80::/10"], True), ("::ffff:127.0.0.1", ["127.0.0.1"], True),
     ("not-an-ip", ["0.0.0.0/0"], False), ("", ["0.0.0.0/0"], False), ("1.2.3.4", [], False),
     ("1.2.3.4", "1.2.3.4", True), ("1.2.3.4", ["junk", "1.2.3.0/24"], True)],
)
def test_address_allowed(addr, entries, ok):
    assert address_allowed(addr, entries) is ok


def test_auth_off_everyone_is_admin(mini):
    mini.config["AUTH_REQUIRED"] = False
    assert client(mini).get("/z").json == {"user": ""}


def test_unknown_role_is_a_programming_error():
    with pytest.raises(ValueError):
        require("owner")


# --------------------------------------------------------------------------- throttling


def test_repeated_failures_locked_with_retry_after(mini):
    bad = client(mini, "kassa", "wrong")
    for _ in range(mini.config["AUTH_FAILURES_BEFORE_LOCK"]):
        bad.get("/sell", status=401)
    res = bad.get("/sell", status=429)
    assert int(res.headers["Retry-After"]) >= 1
    assert "повторите через" in res.json["message"]
    # While locked even the right password is not checked: guessing gains nothing.
    client(mini, "kassa", "pw-kassa").get("/sell", status=429)
    # Other logins and other addresses are not affected.
    client(mini, "boss", "pw-boss").get("/sell")
    client(mini, "kassa", "pw-kassa", addr="203.0.113.8").get("/sell")


def test_lock_expires_and_success_resets(mini, monkeypatch):
    clock = [1000.0]
    throttle = Throttle(3, base=2, maximum=60, window=900, clock=lambda: clock[0])
    key = ("1.2.3.4", "kassa")
    for _ in range(2):
        throttle.failure(key)
    assert throttle.retry_after(key) == 0
    throttle.failure(key)
    assert throttle.retry_after(key) == 2
    clock[0] += 2
    assert throttle.retry_after(key) == 0
    throttle.failure(key)
    assert throttle.retry_after(key) == 4  # doubles per further failure
    for _ in range(20):
        throttle.failure(key)
    assert throttle.retry_after(key) == 60  # capped
    throttle.success(key)
    assert throttle.retry_after(key) == 0


def test_old_failures_forgotten(monkeypatch):
    clock = [0.0]
    throttle = Throttle(3, window=100, clock=lambda: clock[0])
    throttle.failure("k")
    throttle.failure("k")
    clock[0] += 101
    assert throttle.failure("k") == 1


def test_throttle_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(auth, "MAX_TRACKED", 50)
    throttle = Throttle(3)
    for i in range(200):
        throttle.failure(("addr", i))
    assert len(throttle._data) <= 51


def test_login_spraying_from_one_address_locked(mini):
    mini.config["AUTH_ADDRESS_FAILURES_BEFORE_LOCK"] = 4
    for i in range(4):
        client(mini, f"user{i}", "x", addr="198.51.100.1").get("/sell", status=401)
    client(mini, "kassa", "pw-kassa", addr="198.51.100.1").get("/sell", status=429)


# --------------------------------------------------------------------------- the real contracts


def test_api_and_compat_refusals_in_their_own_formats(clients):
    res = clients.anon.get(f"{API}/devices", status=401)
    assert res.json["error"]["code"] == 1010
    res = clients.anon.post(COMPAT, b'{"comand": "CASH_REGISTER_INF", "data": ""}', status=401)
    assert res.json == {"response": "", "error": auth.Unauthorized.message, "error_code": -1010}
    res = clients.cashier.post(f"{API}/devices/1/shift/close", status=403)
    assert res.json["error"]["code"] == 1011


def test_failed_logins_slowed_down_on_the_api(clients):
    bad = clients.as_user("admin", "guess")
    for _ in range(clients.app.config["AUTH_FAILURES_BEFORE_LOCK"]):
        bad.get(f"{API}/devices", status=401)
    res = bad.get(f"{API}/devices", status=429)
    assert res.headers["Retry-After"] and res.json["error"]["code"] == 1010
    res = bad.post(COMPAT, b'{"comand": "CASH_REGISTER_INF", "data": ""}', status=429)
    assert res.json["error_code"] == -1010 and res.headers["Retry-After"]


def test_onec_endpoint_open_only_to_listed_addresses(clients):
    """POST /kkt without credentials: allowed from ONEC_ALLOWED_ADDRESSES only."""
    clients.app.config["ONEC_ALLOWED_ADDRESSES"] = ["127.0.0.1"]
    body = json.dumps({"DocNumber": "A-1", "DocDate": "01.03.2026", "DocSumm": 10,
                       "Goods": {"Position_1": {"Name": "x", "Price": 10, "Quantity": 1, "Tax": 22,
                                                "PositionSumm": 10}}}).encode()
    local = webtest.TestApp(clients.app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    assert local.post("/kkt", body, content_type="application/x-www-form-urlencoded").json["result_code"] == 0
    res = clients.anon.post("/kkt", body, content_type="application/x-www-form-urlencoded", status=401)
    assert res.json["result_code"] == 1010


# --------------------------------------------------------------------------- passwd tool


def test_passwd_hash_verifies():
    hashed = passwd.make_hash("correct horse")
    assert hashed.startswith("scrypt:")
    assert check_password_hash(hashed, "correct horse")
    assert not check_password_hash(hashed, "correct horse!")
    assert passwd.make_hash("correct horse") != hashed  # salted


def test_passwd_cli_prints_users_line(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("long-enough-1\n"))
    assert passwd.main(["kassa2", "--role", "admin"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("USERS = ")
    entry = json.loads(out[len("USERS = "):])["kassa2"]
    assert entry["role"] == "admin" and check_password_hash(entry["password_hash"], "long-enough-1")


def test_passwd_cli_refuses_short_password(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    with pytest.raises(SystemExit):
        passwd.main([])
