"""The command line both emulators share: options, start-up with faults and a control port,
the readiness line scripts wait for, and a clean stop on SIGINT/SIGTERM.

Times on the command line are milliseconds (the in-process API takes seconds).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from . import control


def add_options(p: argparse.ArgumentParser, *, port: int, serial: str, unit: str) -> None:
    """The options every emulator takes; ``unit`` is what the device time is spent on."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=port, help=f"TCP port (default {port}, as the device; 0 = free port)")
    p.add_argument("--state", metavar="FILE", help="fiscal storage file kept across restarts (default: memory only)")
    p.add_argument("--log", metavar="FILE", help="append one JSON line per fiscal document")
    p.add_argument("--device-time", type=float, default=0.0, metavar="MS", help=f"time the device spends per {unit}")
    p.add_argument("--latency", type=float, default=0.0, metavar="MS", help="one-way delay of every transmission")
    p.add_argument("--clock-offset", type=float, default=None, metavar="HOURS",
                   help="device clock ahead of the host clock (overrides the stored offset)")
    p.add_argument("--serial", default=serial, help=f"serial number (default {serial})")
    p.add_argument("--fault", action="append", default=[], metavar="COMMAND",
                   help='apply a fault command at start, e.g. --fault "paper out" (repeatable)')
    p.add_argument("--control-port", type=int, default=None, metavar="PORT",
                   help="accept fault commands on this 127.0.0.1 port, one per line (0 = a free port)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every frame")


def serve(emu: Any, args: argparse.Namespace, *, title: str, log: logging.Logger) -> int:
    """Start ``emu`` as ``args`` say, serve until a signal arrives, stop it; the exit status."""
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
    log.info("%s emulator ready, serial %s, on %s:%d; control port %s; shift %s #%d, last FD %d",
             title, st.serial, host, port, ctl.port if ctl is not None else "off",
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
