"""HTTP Basic authentication and roles for every contract.

Users live in conf ``USERS = {"login": {"password_hash": "...", "role": "cashier" | "admin"}}``;
hashes come from ``python -m kktapp.passwd`` (werkzeug's salted scrypt/pbkdf2, compared in
constant time). Roles are ordered: an admin may do everything a cashier may.

* cashier — receipts, non-fiscal printing, cash in/out, opening a shift, status;
* admin — also X/Z reports, device resets and settings.

:func:`require` is the one view decorator. It never builds a response itself: it raises
:class:`AuthError` subclasses (401/403/429), and each blueprint formats them the way its
contract does (the compat protocol answers ``{"response": "", "error": ..., "error_code": ...}``,
the JSON API its own error object). Handlers must copy :attr:`AuthError.headers` into the
response (``WWW-Authenticate`` for 401, ``Retry-After`` for 429).

Failed logins are logged without the password and throttled per client address and login, per
address and per login from any address (:class:`Throttle`): after a few failures further attempts
are refused with 429 for a growing, bounded time, without checking the password at all, so
guessing gets no faster by hammering. The counts live in a small SQLite file next to the journal
(:class:`SharedThrottle`), so every process of Apache or gunicorn sees the same ones. Nothing ever
sleeps in a worker thread. Behind a reverse proxy the client's address is taken from
``X-Forwarded-For`` only when the direct peer is one of conf TRUSTED_PROXIES (:func:`client_address`).

``AUTH_REQUIRED = False`` turns all of this off: every caller acts as an admin.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import current_app, g, request
from werkzeug.security import check_password_hash, generate_password_hash

from ..errors import KKTError, ResultCode
from ..sqlitefiles import connect_wal, write_transaction

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Role name → rank; a user may call views that require a role of equal or lower rank.
ROLES = {"cashier": 1, "admin": 2}
ROLE_TITLES = {"cashier": "кассир", "admin": "администратор"}
REALM = "kkt"

#: First lock length, doubled with each further failure, never longer than LOCK_MAX.
LOCK_BASE_SECONDS = 2.0
LOCK_MAX_SECONDS = 300.0
#: Failures older than this are forgotten.
FAILURE_WINDOW_SECONDS = 900.0
#: Memory bound: oldest records are dropped beyond this many keys.
MAX_TRACKED = 10_000


class AuthError(KKTError):
    """Base of the refusals; ``headers`` must be sent with the contract's error body."""

    headers: dict[str, str] = {}


class Unauthorized(AuthError):
    """No credentials, or wrong ones."""

    code = ResultCode.UNAUTHORIZED
    http_status = 401
    message = "нужна авторизация: укажите логин и пароль пользователя сервиса ККТ (HTTP Basic)"

    @property
    def headers(self) -> dict[str, str]:  # type: ignore[override]
        """The challenge that makes HTTP clients (and browsers) send credentials."""
        return {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}


class Forbidden(AuthError):
    """Authenticated, but the role does not allow the operation."""

    code = ResultCode.FORBIDDEN
    http_status = 403
    message = "недостаточно прав для этой операции"


class TooManyAttempts(AuthError):
    """Too many failed logins from this address; try again after ``retry_after`` seconds."""

    code = ResultCode.UNAUTHORIZED
    http_status = 429

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(f"слишком много неудачных попыток входа; повторите через {self.retry_after} с")

    @property
    def headers(self) -> dict[str, str]:  # type: ignore[override]
        """Standard hint for well-behaved clients."""
        return {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True)
class User:
    """Who is calling: ``login`` is empty for anonymous callers (allowed address, auth off)."""

    login: str
    role: str
    anonymous: bool = False

    def allows(self, role: str) -> bool:
        """True if this user's role is at least ``role``."""
        return ROLES.get(self.role, 0) >= ROLES[role]


# --------------------------------------------------------------------------- throttle


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class Throttle:
    """Failed-login bookkeeping per key, thread-safe, bounded in memory.

    Kept in process memory: the service runs one process that owns the devices (design.md),
    and a restart forgetting the counters costs an attacker one lock period at most.
    """

    def __init__(self, threshold: int, base: float = LOCK_BASE_SECONDS, maximum: float = LOCK_MAX_SECONDS,
                 window: float = FAILURE_WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.base = base
        self.maximum = maximum
        self.window = window
        self.clock = clock
        self._data: dict[Any, _Failures] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: Any) -> float:
        """Seconds the key must still wait (0 when it may try)."""
        now = self.clock()
        with self._lock:
            rec = self._data.get(key)
            if rec is None:
                return 0.0
            if now - rec.last > self.window and now >= rec.locked_until:
                del self._data[key]
                return 0.0
            return max(0.0, rec.locked_until - now)

    def failure(self, key: Any) -> int:
        """Record a failure; returns the failure count within the window."""
        now = self.clock()
        with self._lock:
            rec = self._data.get(key)
            if rec is None or (now - rec.last > self.window and now >= rec.locked_until):
                rec = self._data[key] = _Failures()
            rec.count += 1
            rec.last = now
            if rec.count >= self.threshold:
                # Doubling per extra failure, capped: slow enough to stop guessing, short
                # enough that a cashier who mistyped a few times is back within minutes.
                extra = rec.count - self.threshold
                rec.locked_until = now + min(self.maximum, self.base * (2 ** min(extra, 30)))
            if len(self._data) > MAX_TRACKED:
                self._prune(now)
            return rec.count

    def success(self, key: Any) -> None:
        """Forget the key's failures."""
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        """Forget everything (tests, admin action)."""
        with self._lock:
            self._data.clear()

    def _prune(self, now: float) -> None:
        for key in [k for k, r in self._data.items() if now - r.last > self.window and now >= r.locked_until]:
            del self._data[key]
        if len(self._data) > MAX_TRACKED:
            for key in sorted(self._data, key=lambda k: self._data[k].last)[: len(self._data) - MAX_TRACKED]:
                del self._data[key]


class SharedThrottle(Throttle):
    """:class:`Throttle` whose counts live in SQLite, shared by all processes of the service.

    Each worker counting alone would let an attacker guess workers × threshold times; each
    read-modify-write runs in one IMMEDIATE transaction, so concurrent failures all count. Wall
    clock time, because monotonic clocks are not comparable between processes.
    """

    def __init__(self, path: str, scope: str, threshold: int, **kwargs: Any) -> None:
        kwargs.setdefault("clock", time.time)
        super().__init__(threshold, **kwargs)
        self.path = path
        self.scope = scope
        self._local = threading.local()
        with self._txn() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS failures (scope TEXT NOT NULL, key TEXT NOT NULL,"
                         " count INTEGER NOT NULL, last REAL NOT NULL, locked_until REAL NOT NULL,"
                         " PRIMARY KEY (scope, key))")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = connect_wal(self.path)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @staticmethod
    def _key(key: Any) -> str:
        return json.dumps(key, ensure_ascii=False, default=str)

    def _txn(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self._conn())

    def _get(self, conn: sqlite3.Connection, key: Any) -> _Failures | None:
        row = conn.execute("SELECT count, last, locked_until FROM failures WHERE scope=? AND key=?",
                           (self.scope, self._key(key))).fetchone()
        return _Failures(*row) if row else None

    def retry_after(self, key: Any) -> float:
        """Seconds the key must still wait (0 when it may try)."""
        now = self.clock()
        rec = self._get(self._conn(), key)
        if rec is None or (now - rec.last > self.window and now >= rec.locked_until):
            return 0.0
        return max(0.0, rec.locked_until - now)

    def failure(self, key: Any) -> int:
        """Record a failure; returns the failure count within the window."""
        now = self.clock()
        with self._txn() as conn:
            rec = self._get(conn, key)
            if rec is None or (now - rec.last > self.window and now >= rec.locked_until):
                rec = _Failures()
            rec.count += 1
            rec.last = now
            if rec.count >= self.threshold:
                extra = rec.count - self.threshold
                rec.locked_until = now + min(self.maximum, self.base * (2 ** min(extra, 30)))
            conn.execute("INSERT OR REPLACE INTO failures (scope, key, count, last, locked_until) VALUES (?,?,?,?,?)",
                         (self.scope, self._key(key), rec.count, rec.last, rec.locked_until))
            # Bounded like the in-memory one: old, unlocked records go.
            conn.execute("DELETE FROM failures WHERE last < ? AND locked_until < ?", (now - self.window, now))
            return rec.count

    def success(self, key: Any) -> None:
        """Forget the key's failures."""
        # Every authenticated request comes here, and nearly always there is nothing to forget:
        # a read (which never waits in WAL mode) instead of a write transaction and its fsync,
        # which queued all requests behind one another and, under load, ran out of busy time.
        if self._get(self._conn(), key) is None:
            return
        with self._txn() as conn:
            conn.execute("DELETE FROM failures WHERE scope=? AND key=?", (self.scope, self._key(key)))

    def clear(self) -> None:
        """Forget everything of this scope (tests, admin action)."""
        with self._txn() as conn:
            conn.execute("DELETE FROM failures WHERE scope=?", (self.scope,))


def throttle_path(journal_path: str) -> str:
    """``/var/lib/kkt/journal.sqlite3`` → ``/var/lib/kkt/journal-auth.sqlite3``."""
    root, ext = os.path.splitext(journal_path)
    return f"{root}-auth{ext or '.sqlite3'}"


@dataclass
class AuthState:
    """Per-application throttles, kept in ``app.extensions["kkt_auth"]``."""

    per_login: Throttle
    per_address: Throttle
    #: Failures of one login from any address (a distributed guess at one password).
    per_user: Throttle


def _state() -> AuthState:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = app.extensions.get("kkt_auth")
    if state is None:
        cfg = app.config
        journal = cfg.get("JOURNAL_PATH")

        def throttle(scope: str, setting: str) -> Throttle:
            # Shared by the processes next to the journal; an app without one (a bare Flask app
            # using these views) counts in memory.
            if journal:
                return SharedThrottle(throttle_path(str(journal)), scope, int(cfg[setting]))
            return Throttle(int(cfg[setting]))

        state = AuthState(
            # Failures per (address, login), per address with any logins (login spraying) and
            # per login from any address, before attempts are refused for a while; defaults in
            # conf.py.
            per_login=throttle("address+login", "AUTH_FAILURES_BEFORE_LOCK"),
            per_address=throttle("address", "AUTH_ADDRESS_FAILURES_BEFORE_LOCK"),
            per_user=throttle("login", "AUTH_LOGIN_FAILURES_BEFORE_LOCK"),
        )
        app.extensions.setdefault("kkt_auth", state)
        state = app.extensions["kkt_auth"]
    return state


# --------------------------------------------------------------------------- addresses


@functools.lru_cache(maxsize=64)
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            log.error("Неверный адрес в списке разрешённых адресов: %r (пропущен)", entry)
    return tuple(nets)


def client_address() -> str:
    """The calling client's address: the direct peer, or behind trusted proxies the address they
    name in ``X-Forwarded-For`` (the right-most one that is not itself a trusted proxy).

    Only a peer listed in conf TRUSTED_PROXIES is believed: anyone else could write any address
    into the header and escape the login throttle or pose as an allowed 1C server.
    """
    peer = request.remote_addr or ""
    trusted = current_app.config.get("TRUSTED_PROXIES") or ()
    if not trusted or not address_allowed(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("X-Forwarded-For")).split(",") if h.strip()]
    for hop in reversed(hops):
        if not address_allowed(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop.split("%", 1)[0]))
            except ValueError:
                log.warning("X-Forwarded-For от прокси %s содержит не адрес: %r", peer, hop[:64])
                return peer
    return hops[0] if hops else peer


def address_allowed(addr: str | None, entries: Iterable[str] | str | None) -> bool:
    """True if ``addr`` is one of ``entries`` (IP addresses or CIDR networks)."""
    if not addr or not entries:
        return False
    if isinstance(entries, str):
        entries = [entries]
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    nets = _networks(tuple(str(e) for e in entries))
    return any(c.version == n.version and c in n for c in candidates for n in nets)


# --------------------------------------------------------------------------- users

@functools.cache
def _dummy_hash() -> str:
    """Checked for unknown logins so that the answer takes as long as for a known one.

    Same method as python -m kktapp.passwd produces (scrypt), made once per process.
    """
    return generate_password_hash("kkt-dummy-password", method="scrypt")


def _verify(login: str, password: str) -> User | None:
    users = current_app.config.get("USERS") or {}
    entry = users.get(login)
    if not isinstance(entry, dict) or not entry.get("password_hash"):
        check_password_hash(_dummy_hash(), password)
        if entry is not None:
            log.error("У пользователя %r в USERS нет password_hash (создайте: python -m kktapp.passwd)", login)
        return None
    role = entry.get("role", "cashier")
    if role not in ROLES:
        log.error("У пользователя %r в USERS неизвестная роль %r (допустимо: cashier, admin)", login, role)
        return None
    try:
        ok = check_password_hash(entry["password_hash"], password)
    except (ValueError, TypeError):
        log.error("У пользователя %r в USERS испорчен password_hash", login)
        return None
    return User(login, role) if ok else None


def authenticate(role: str, anonymous_from: str | None = None) -> User:
    """Decide who the caller is and whether it may act as ``role``; raises AuthError otherwise."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    if not current_app.config.get("AUTH_REQUIRED", True):
        return User("", "admin", anonymous=True)
    addr = client_address()
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username:
        if anonymous_from and address_allowed(addr, current_app.config.get(anonymous_from)):
            return User("", role, anonymous=True)
        if request.headers.get("Authorization"):
            log.warning("Отказ: неразборчивый заголовок Authorization с адреса %s, %s %s",
                        addr, request.method, request.path)
            raise Unauthorized("заголовок Authorization не разобран: нужен HTTP Basic с логином и паролем в UTF-8")
        raise Unauthorized()
    login = auth.username
    state = _state()
    wait = max(state.per_login.retry_after((addr, login)), state.per_address.retry_after(addr),
               state.per_user.retry_after(login))
    if wait > 0:
        log.warning("Отказ: вход пользователя %r с адреса %s временно заблокирован ещё на %.0f с",
                    login, addr, wait)
        raise TooManyAttempts(int(wait + 0.999))
    user = _verify(login, auth.password or "")
    if user is None:
        n = state.per_login.failure((addr, login))
        state.per_address.failure(addr)
        state.per_user.failure(login)
        # The password is never logged, not even masked: only who, from where, how many times.
        log.warning("Неудачный вход: пользователь %r, адрес %s, попытка %d, %s %s",
                    login, addr, n, request.method, request.path)
        raise Unauthorized("неверный логин или пароль")
    state.per_login.success((addr, login))
    state.per_user.success(login)
    if not user.allows(role):
        log.warning("Отказ: пользователю %r (роль %s) нужна роль %s для %s %s",
                    login, user.role, role, request.method, request.path)
        raise Forbidden(f"недостаточно прав: операция доступна роли «{ROLE_TITLES[role]}», "
                        f"у пользователя {login} роль «{ROLE_TITLES[user.role]}»")
    return user


def require(role: str, *, anonymous_from: str | None = None) -> Callable[[F], F]:
    """View decorator: the caller must be a user with at least ``role``.

    ``anonymous_from`` names a config key holding client addresses (IPs or CIDRs) that may
    call the view without credentials (the 1C script of the seed sends none). The user is in
    ``g.kkt_user`` for the view.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.kkt_user = authenticate(role, anonymous_from)
            return view(*args, **kwargs)

        wrapper.kkt_role = role  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def current_user() -> User | None:
    """The user authenticated for this request, if a view required one."""
    return g.get("kkt_user")


def check_role(role: str) -> User:
    """Inside a view: demand a higher role for one branch (e.g. a compat command)."""
    user = current_user()
    if user is None:
        return authenticate(role)
    if not user.allows(role):
        who = user.login or "анонимный клиент"
        log.warning("Отказ: %s (роль %s) нужна роль %s для %s %s", who, user.role, role, request.method, request.path)
        raise Forbidden(f"недостаточно прав: операция доступна роли «{ROLE_TITLES[role]}»")
    return user
