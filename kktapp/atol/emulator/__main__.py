"""Run the ATOL 55Ф emulator as a TCP server: ``python -m kktapp.atol.emulator --port 5555``.

Times on the command line are milliseconds (the in-process API takes seconds). SIGINT or
SIGTERM stops it cleanly and saves the open receipt too; SIGKILL loses only the open receipt
(the state file is checkpointed after every fiscal document, see Device.save).
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import Emulator, cli, control
from .state import DEFAULT_SERIAL

log = logging.getLogger("kktapp.atol.emulator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m kktapp.atol.emulator",
                                description="ATOL 55Ф emulator (protocol v3 over TCP)",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="fault and timing commands (--fault and the control port):\n" + control.usage())
    cli.add_options(p, port=5555, serial=DEFAULT_SERIAL, unit="task")
    p.add_argument("--ffd", choices=("1.0", "1.05", "1.2"), default="1.2",
                   help="FFD version of the firmware and FN (default 1.2): 1.0 takes E6 positions, 1.05+ EA/EB")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the emulator and serve until a signal arrives; ``control …`` talks to a running one."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["control"]:
        return control.main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    emu = Emulator(state_path=args.state, log_path=args.log, device_time=args.device_time / 1000,
                   latency=args.latency / 1000, serial=args.serial, clock_offset=args.clock_offset,
                   ffd=args.ffd)
    return cli.serve(emu, args, title="ATOL 55Ф", log=log)


if __name__ == "__main__":
    sys.exit(main())
