"""Run the ATOL 55Ф emulator as a TCP server: ``python -m kktapp.atol.emulator --port 5555``.

Times on the command line are milliseconds (the in-process API takes seconds). SIGINT or
SIGTERM stops it cleanly and saves the open receipt too; SIGKILL loses only the open receipt
(the state file is checkpointed after every fiscal document, see Device.save).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from . import Emulator, control
from .state import DEFAULT_SERIAL

log = logging.getLogger("kktapp.atol.emulator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m kktapp.atol.emulator",
                                description="ATOL 55Ф emulator (protocol v3 over TCP)",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="fault and timing commands (--fault and the control port):\n" + control.usage())
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5555, help="TCP port (default 5555, as the device; 0 = free port)")
    p.add_argument("--state", metavar="FILE", help="fiscal storage file kept across restarts (default: memory only)")
    p.add_argument("--log", metavar="FILE", help="append one JSON line per fiscal document")
    p.add_argument("--device-time", type=float, default=0.0, metavar="MS", help="time the device spends per task")
    p.add_argument("--latency", type=float, default=0.0, metavar="MS", help="one-way delay of every packet")
    p.add_argument("--clock-offset", type=float, default=None, metavar="HOURS",
                   help="device clock ahead of the host clock (overrides the stored offset)")
    p.add_argument("--serial", default=DEFAULT_SERIAL, help=f"serial number (default {DEFAULT_SERIAL})")
    p.add_argument("--fault", action="append", default=[], metavar="COMMAND",
                   help='apply a fault command at start, e.g. --fault "paper out" (repeatable)')
    p.add_argument("--control-port", type=int, default=None, metavar="PORT",
                   help="accept fault commands on this 127.0.0.1 port, one per line (0 = a free port)")
    p.add_argument("--ffd", choices=("1.0", "1.05", "1.2"), default="1.2",
                   help="FFD version of the firmware and FN (default 1.2): 1.0 takes E6 positions, 1.05+ EA/EB")
    p.add_argument("-v", "--verbose", action="store_true", help="log every packet")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the emulator and serve until a signal arrives."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    emu = Emulator(state_path=args.state, log_path=args.log, device_time=args.device_time / 1000,
                   latency=args.latency / 1000, serial=args.serial, clock_offset=args.clock_offset,
                   ffd=args.ffd)
    try:
        host, port = emu.start(args.host, args.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 2
    for line in args.fault:
        try:
            control.run(emu, line)
        except ValueError as exc:
            log.error("--fault %r: %s", line, exc)
            emu.stop()
            return 2
    ctl = None
    if args.control_port is not None:
        try:
            ctl = control.ControlServer(emu, args.control_port)
        except OSError as exc:
            log.error("cannot listen on control port 127.0.0.1:%d: %s", args.control_port, exc)
            emu.stop()
            return 2
        ctl.start()
        log.info("control port 127.0.0.1:%d takes fault commands (send 'help')", ctl.port)
    st = emu.state
    # This line is the readiness signal scripts wait for: it comes only after every port listens,
    # and it names the ports actually bound (both may be 0 on the command line).
    log.info("ATOL 55Ф emulator ready, serial %s, on %s:%d; control port %s; shift %s #%d, last FD %d",
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
