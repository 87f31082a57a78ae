"""Login throttling shared by all processes, per login across addresses; X-Forwarded-For only
from trusted proxies (issue 11)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import webtest
from flask import Flask, jsonify
from werkzeug.security import generate_password_hash

from kktapp import CONF_PATH
from kktapp.web import auth
from kktapp.web.auth import AuthError, SharedThrottle, require


def make_app(journal: Path, **config: Any) -> Flask:
    """A bare app with the real auth settings, its throttle file next to ``journal``."""
    app = Flask("mini")
    app.config.from_pyfile(CONF_PATH)
    app.config.update(
        JOURNAL_PATH=str(journal),
        USERS={"kassa": {"password_hash": generate_password_hash("pw-kassa", method="pbkdf2:sha256:1000"),
                         "role": "cashier"}},
        ONEC=["192.0.2.50"],
        **config,
    )

    @app.get("/sell")
    @require("cashier", anonymous_from="ONEC")
    def sell():
        user = auth.current_user()
        return jsonify(user=user.login, anonymous=user.anonymous)

    @app.errorhandler(AuthError)
    def refused(exc: AuthError):
        return jsonify(exc.to_dict()), exc.http_status, exc.headers

    return app


def client(app: Flask, login: str, password: str, addr: str = "203.0.113.7") -> webtest.TestApp:
    c = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": addr})
    c.authorization = ("Basic", (login, password))
    return c


def test_failures_count_across_processes(tmp_path: Path) -> None:
    """Two workers (two apps on one journal) share the count: 5 guesses in all, not 5 each."""
    one, two = make_app(tmp_path / "j.sqlite3"), make_app(tmp_path / "j.sqlite3")
    limit = one.config["AUTH_FAILURES_BEFORE_LOCK"]
    for i in range(limit):
        client(one if i % 2 else two, "kassa", "wrong").get("/sell", status=401)
    client(one, "kassa", "wrong").get("/sell", status=429)
    client(two, "kassa", "pw-kassa").get("/sell", status=429)


def test_failures_from_another_os_process_count(tmp_path: Path) -> None:
    path = str(tmp_path / "j-auth.sqlite3")
    code = (
        "import sys; from kktapp.web.auth import SharedThrottle\n"
        "t = SharedThrottle(sys.argv[1], 'address+login', 3)\n"
        "[t.failure(['203.0.113.9', 'kassa']) for _ in range(2)]\n"
    )
    subprocess.run([sys.executable, "-c", code, path], check=True, timeout=60)
    here = SharedThrottle(path, "address+login", 3)
    assert here.retry_after(["203.0.113.9", "kassa"]) == 0
    assert here.failure(["203.0.113.9", "kassa"]) == 3
    assert here.retry_after(["203.0.113.9", "kassa"]) > 0


def test_one_login_guessed_from_many_addresses_is_locked(tmp_path: Path) -> None:
    app = make_app(tmp_path / "j.sqlite3")
    per_login = app.config["AUTH_LOGIN_FAILURES_BEFORE_LOCK"]
    per_pair = app.config["AUTH_FAILURES_BEFORE_LOCK"]
    assert per_login < 30 * (per_pair - 1)
    tried = 0
    for n in range(30):
        for _ in range(per_pair - 1):
            res = client(app, "kassa", "wrong", addr=f"198.51.100.{n}").get("/sell", status="*")
            if res.status_int == 429:
                break
            tried += 1
    assert tried == per_login  # not 30 × 4
    client(app, "kassa", "pw-kassa", addr="198.51.100.200").get("/sell", status=429)


# --------------------------------------------------------------------------- X-Forwarded-For


def test_forwarded_for_is_ignored_without_trusted_proxies(tmp_path: Path) -> None:
    app = make_app(tmp_path / "j.sqlite3")
    c = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "203.0.113.7"})
    # The allowed 1C address in the header does not help an outsider.
    res = c.get("/sell", headers={"X-Forwarded-For": "192.0.2.50"}, status=401)
    assert res.json["code"] == 1010


def test_forwarded_for_from_a_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    app = make_app(tmp_path / "j.sqlite3", TRUSTED_PROXIES=["127.0.0.1", "10.0.0.0/8"])
    proxy = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    assert proxy.get("/sell", headers={"X-Forwarded-For": "192.0.2.50"}).json["anonymous"] is True
    # The right-most untrusted hop counts: a client cannot prepend an allowed address.
    proxy.get("/sell", headers={"X-Forwarded-For": "192.0.2.50, 203.0.113.66, 10.1.2.3"}, status=401)
    # One attacker behind the proxy is locked, another client behind the same proxy is not.
    limit = app.config["AUTH_FAILURES_BEFORE_LOCK"]
    attacker = client(app, "kassa", "wrong", addr="127.0.0.1")
    for _ in range(limit):
        attacker.get("/sell", headers={"X-Forwarded-For": "203.0.113.66"}, status=401)
    attacker.get("/sell", headers={"X-Forwarded-For": "203.0.113.66"}, status=429)
    good = client(app, "kassa", "pw-kassa", addr="127.0.0.1")
    assert good.get("/sell", headers={"X-Forwarded-For": "203.0.113.77"}).json["user"] == "kassa"


@pytest.mark.parametrize("header", ["not-an-ip", "", "999.1.1.1"])
def test_garbage_in_forwarded_for_falls_back_to_the_peer(tmp_path: Path, header: str) -> None:
    app = make_app(tmp_path / "j.sqlite3", TRUSTED_PROXIES=["127.0.0.1"])
    proxy = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    res = proxy.get("/sell", headers={"X-Forwarded-For": header}, status=401)
    assert res.json["code"] == 1010


def test_a_login_without_failures_writes_nothing(tmp_path):
    """Every authenticated request forgets the login's failures: with none to forget it must
    not take the write lock (a transaction and an fsync per request queued all requests)."""
    throttle = SharedThrottle(str(tmp_path / "auth.sqlite3"), "address+login", 3)
    conn = throttle._conn()
    writes: list[str] = []
    conn.set_trace_callback(writes.append)
    throttle.success(("127.0.0.1", "kassa"))
    conn.set_trace_callback(None)
    assert not [sql for sql in writes if sql.split()[0].upper() in ("BEGIN", "DELETE", "INSERT", "COMMIT")], writes
    throttle.failure(("127.0.0.1", "kassa"))
    assert throttle.retry_after(("127.0.0.1", "kassa")) == 0
    throttle.success(("127.0.0.1", "kassa"))
    assert conn.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0
