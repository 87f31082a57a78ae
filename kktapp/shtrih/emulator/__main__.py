"""Run the Shtrih-M emulator: ``python -m kktapp.shtrih.emulator --port 7778``.

The options, the fault commands (``--fault``, ``--control-port``, from the ATOL emulator's
:mod:`~kktapp.atol.emulator.control`) and the readiness line are the ATOL emulator's; times on
the command line are milliseconds. SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ...atol.emulator import cli, control
from .. import model
from . import DEFAULT_SERIAL, Emulator

log = logging.getLogger("kktapp.shtrih.emulator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m kktapp.shtrih.emulator",
                                description="Shtrih-M emulator (protocol v1 over TCP)",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="fault and timing commands (--fault and the control port):\n"
                                + control.usage(Emulator))
    cli.add_options(p, port=model.DEFAULT_PORT, serial=DEFAULT_SERIAL, unit="command")
    p.add_argument("--cash-documents", action="store_true",
                   help="cash in/out (0x50/0x51) form an FN document, as the shared core can; by default "
                        "they form none, as the sources say a device does (kktapp/shtrih/model.py DOC_CASH)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the emulator and serve until a signal arrives."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    emu = Emulator(state_path=args.state, log_path=args.log, device_time=args.device_time / 1000,
                   latency=args.latency / 1000, serial=args.serial, clock_offset=args.clock_offset,
                   cash_documents=args.cash_documents)
    return cli.serve(emu, args, title="Shtrih-M", log=log)


if __name__ == "__main__":
    sys.exit(main())
