"""``python -m kktapp.atol.tap``: run the tap, show a trace, or compare two."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .relay import Tap
from .report import TraceError, compare, load, show

DEFAULT_PORT = 5555
#: Seconds a thread may hold the interpreter while another waits (Python's default is 0.005).
SWITCH_INTERVAL = 0.0002

log = logging.getLogger("kktapp.atol.tap")


def address(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` (port 5555) → (host, port)."""
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"неверный порт в «{text}»") from None
    if not host or not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"неверный адрес «{text}», нужно ХОСТ:ПОРТ")
    return host, number


def parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="python -m kktapp.atol.tap",
        description="Запись обмена с кассой АТОЛ: прозрачный посредник между программой и ККТ, "
                    "просмотр и сравнение записей.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--listen", type=address, metavar="ХОСТ:ПОРТ",
                      help="где ждать программу кассира (например 127.0.0.1:5555)")
    mode.add_argument("--show", metavar="ФАЙЛ", help="показать запись таблицей")
    mode.add_argument("--compare", nargs=2, metavar=("A", "B"), help="сравнить две записи одной операции")
    p.add_argument("--to", type=address, metavar="ХОСТ:ПОРТ", help="адрес ККТ (например 192.168.1.50:5555)")
    p.add_argument("--out", metavar="ФАЙЛ", help="файл записи (JSON Lines; дописывается)")
    p.add_argument("--raw", action="store_true", help="с --show: показать и байты каждого пакета")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="С",
                   help="сколько секунд ждать соединения с ККТ (по умолчанию 5)")
    p.add_argument("-v", "--verbose", action="store_true", help="подробный журнал")
    return p


def main(argv: Sequence[str] | None = None, out: Any = None) -> int:
    """Entry point; returns the exit status (compare: 1 when the traces differ)."""
    out = out or sys.stdout
    p = parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.show:
            show(load(args.show), out.write, raw=args.raw)
            return 0
        if args.compare:
            a, b = args.compare
            return 1 if compare(load(a), load(b), out.write, names=(a, b)) else 0
    except TraceError as exc:
        log.error("%s", exc)
        return 2
    if not args.to or not args.out:
        p.error("с --listen нужны --to (адрес ККТ) и --out (файл записи)")
    # A pump waiting to pass bytes on may otherwise wait up to 5 ms for the interpreter while
    # the recorder decodes: hand it over sooner (this process only relays and records).
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        tap = Tap(args.listen, args.to, args.out, connect_timeout=args.connect_timeout)
    except OSError as exc:
        log.error("не могу открыть файл записи %s: %s", args.out, exc.strerror or exc)
        return 2
    try:
        tap.start()
    except OSError as exc:
        tap.stop()
        log.error("не могу слушать %s:%d: %s", *args.listen, exc.strerror or exc)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl+C, trace flushed
    try:
        tap.wait()
    except KeyboardInterrupt:
        pass
    finally:
        tap.stop()
    log.info("запись сохранена в %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
