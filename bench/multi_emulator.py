"""Several emulated ATOL registers in one process: cheap device fleets for the benchmarks.

Each register is a :class:`kktapp.atol.emulator.Emulator` of its own (own fiscal state file,
document log, serial number and TCP port; port 0, so the kernel picks free ones); they only share
the process. Sixty-four registers are a handful of processes instead of sixty-four interpreters.
When every port listens one line names them all, in register order::

    multi-emulator ready: 16 registers on 127.0.0.1 ports 40001,40002,…

With a device time, every second a line sums what the registers' pace measured
(:class:`kktapp.atol.emulator.server.PaceStats`), stamped with ``time.monotonic()`` (one clock
for every process of the machine), for bench/common.py's :func:`fleet_pace`::

    pace: monotonic=1234.567 tasks=5597 idle=20.781 ends=312 late=1.104

Files: ``<dir>/<prefix>N.state.json`` and ``<dir>/<prefix>N.docs.jsonl`` for N = first … first+count-1.
SIGINT or SIGTERM stops every register cleanly (each saves its state, as the single emulator does).

Run: ``.venv/bin/python bench/multi_emulator.py --count 16 --dir /tmp/fleet --device-time 50``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from kktapp.atol.emulator import DEFAULT_SERIAL, Emulator  # noqa: E402

log = logging.getLogger("bench.multi_emulator")
#: What bench/common.py waits for; the ports follow in register order.
READY = "multi-emulator ready"
#: The pace line's prefix and how often it is written (seconds).
PACE = "pace:"
PACE_EVERY = 1.0


def serial_for(number: int) -> str:
    """A distinct 14-digit serial per register: the default with the register number at the end."""
    tail = str(number)
    return DEFAULT_SERIAL[: len(DEFAULT_SERIAL) - len(tail)] + tail


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, required=True, help="registers in this process")
    p.add_argument("--first", type=int, default=1, help="number of the first register (file names, serials)")
    p.add_argument("--dir", type=Path, required=True, help="directory for the state files and document logs")
    p.add_argument("--prefix", default="emu", help="file name prefix")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--device-time", type=float, default=0.0, metavar="MS", help="time each register spends per task")
    p.add_argument("--latency", type=float, default=0.0, metavar="MS", help="one-way delay of every packet")
    return p.parse_args(argv)


def report_pace(fleet: list[Emulator], done: threading.Event) -> None:
    """Every PACE_EVERY seconds until ``done``: the fleet's PaceStats summed, one line."""
    while not done.wait(PACE_EVERY):
        stats = [emu.timing.stats for emu in fleet]
        log.info("%s monotonic=%.3f tasks=%d idle=%.3f ends=%d late=%.3f", PACE, time.monotonic(),
                 sum(s.tasks for s in stats), sum(s.idle for s in stats), sum(s.ends for s in stats),
                 sum(s.late for s in stats))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # WARNING: with dozens of registers the emulators' per-connection INFO lines are only noise.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    args.dir.mkdir(parents=True, exist_ok=True)
    fleet: list[Emulator] = []
    try:
        for number in range(args.first, args.first + args.count):
            emu = Emulator(
                state_path=args.dir / f"{args.prefix}{number}.state.json",
                log_path=args.dir / f"{args.prefix}{number}.docs.jsonl",
                device_time=args.device_time / 1000,
                latency=args.latency / 1000,
                serial=serial_for(number),
            )
            emu.start(args.host, 0)
            fleet.append(emu)
    except OSError as exc:
        log.error("cannot listen on %s: %s", args.host, exc)
        for emu in fleet:
            emu.stop()
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    log.info("%s: %d registers on %s ports %s", READY, len(fleet), args.host, ",".join(str(e.port) for e in fleet))
    if args.device_time > 0:
        threading.Thread(target=report_pace, args=(fleet, done), name="pace", daemon=True).start()
    done.wait()
    for emu in fleet:
        emu.stop()
    log.info("multi-emulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
