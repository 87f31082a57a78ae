"""Run the Shtrih-M emulator: ``python -m kktapp.shtrih.emulator --port 7778``.

The options, the fault commands (``--fault``, ``--control-port``, from the ATOL emulator's
:mod:`~kktapp.atol.emulator.control`) and the readiness line are the ATOL emulator's; times on
the command line are milliseconds. SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from ...atol.emulator import control
from .. import model
from . import DEFAULT_SERIAL, Emulator

log = logging.getLogger("kktapp.shtrih.emulator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m kktapp.shtrih.emulator",
                                description="Shtrih-M emulator (protocol v1 over TCP)",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="fault and timing commands (--fault and the control port):\n"
                                + control.usage() + "\n  filler on|off")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=model.DEFAULT_PORT,
                   help=f"TCP port (default {model.DEFAULT_PORT}, as the device; 0 = free port)")
    p.add_argument("--state", metavar="FILE", help="fiscal storage file kept across restarts (default: memory only)")
    p.add_argument("--log", metavar="FILE", help="append one JSON line per fiscal document")
    p.add_argument("--device-time", type=float, default=0.0, metavar="MS", help="time the device spends per command")
    p.add_argument("--latency", type=float, default=0.0, metavar="MS", help="one-way delay of every transmission")
    p.add_argument("--clock-offset", type=float, default=None, metavar="HOURS",
                   help="device clock ahead of the host clock (overrides the stored offset)")
    p.add_argument("--serial", default=DEFAULT_SERIAL, help=f"serial number (default {DEFAULT_SERIAL})")
    p.add_argument("--fault", action="append", default=[], metavar="COMMAND",
                   help='apply a fault command at start, e.g. --fault "paper out" (repeatable)')
    p.add_argument("--control-port", type=int, default=None, metavar="PORT",
                   help="accept fault commands on this 127.0.0.1 port, one per line (0 = a free port)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every frame")
    return p.parse_args(argv)


def _control(emu: Emulator, line: str) -> object:
    words = line.split()
    if words[:1] == ["filler"] and words[1:] in (["on"], ["off"]):
        emu.send_filler(words[1] == "on")
        return None
    return control.run(emu, line)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """Start the emulator and serve until a signal arrives."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    emu = Emulator(state_path=args.state, log_path=args.log, device_time=args.device_time / 1000,
                   latency=args.latency / 1000, serial=args.serial, clock_offset=args.clock_offset)
    ctl = None
    try:
        host, port = emu.start(args.host, args.port)
        for line in args.fault:
            _control(emu, line)
        if args.control_port is not None:
            ctl = control.ControlServer(emu, args.control_port)  # type: ignore[arg-type]
            ctl.start()
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        emu.stop()
        return 2
    st = emu.state
    # The readiness line scripts wait for: after every port listens, naming the ports bound.
    log.info("Shtrih-M emulator ready, serial %s, on %s:%d; control port %s; shift %s #%d, last FD %d",
             st.serial, host, port, ctl.port if ctl is not None else "off",
             emu.shift_state(), st.shift_number, st.fd_number)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    if ctl is not None:
        ctl.shutdown()
        ctl.server_close()
    emu.stop()
    log.info("emulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
