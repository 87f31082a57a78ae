"""Print a password hash for conf ``USERS``: ``python -m kktapp.passwd [login] [--role admin]``.

The password is asked twice without echo (or read from one line of stdin when it is not a
terminal, for scripts); it never appears in the command line, where ``ps`` would show it.
The output is a ready line for the site settings file, e.g.::

    USERS = {"kassa1": {"password_hash": "scrypt:32768:8:1$...", "role": "cashier"}}
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from werkzeug.security import generate_password_hash

ROLES = ("cashier", "admin")
MIN_LENGTH = 8


def make_hash(password: str) -> str:
    """Salted scrypt hash (werkzeug format), checked by kktapp.web.auth in constant time."""
    return generate_password_hash(password, method="scrypt")


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Пароль: ")
    second = getpass.getpass("Ещё раз: ")
    if first != second:
        raise SystemExit("Пароли не совпали")
    return first


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m kktapp.passwd``."""
    parser = argparse.ArgumentParser(
        prog="python -m kktapp.passwd",
        description="Хеш пароля пользователя сервиса ККТ для параметра USERS в файле настроек.",
    )
    parser.add_argument("login", nargs="?", help="логин; тогда печатается готовая строка для USERS")
    parser.add_argument("--role", choices=ROLES, default="cashier",
                        help="cashier — чеки, печать, внесение/выплата; admin — ещё отчёты и сбросы")
    args = parser.parse_args(argv)
    password = _read_password()
    if len(password) < MIN_LENGTH:
        raise SystemExit(f"Пароль короче {MIN_LENGTH} символов")
    hashed = make_hash(password)
    if args.login:
        entry = {args.login: {"password_hash": hashed, "role": args.role}}
        sys.stdout.write(f"USERS = {json.dumps(entry, ensure_ascii=False)}\n")
    else:
        sys.stdout.write(hashed + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
