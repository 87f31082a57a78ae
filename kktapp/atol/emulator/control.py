"""Faults and timing for an emulator running in its own process: one line, one command.

Tests that start the emulator in-process call :class:`~kktapp.atol.emulator.Emulator`'s
methods. An emulator started from the command line (the demo, the benchmarks, a sysadmin
rehearsing "no paper" before going live) gets the same controls two ways, both from the
table below so each command is defined once:

* ``--fault "paper out"`` (repeatable) on the command line, applied at start;
* ``--control-port PORT``: a loopback TCP port taking the same lines; each line gets ``ok``, a
  JSON line, or ``error: …``. Its client needs no nc (absent on a minimal Debian)::

      python -m kktapp.atol.emulator control paper out          # port from var/emulator-control.port
      python -m kktapp.atol.emulator control --port 5599 state

  ``make run`` starts the emulator with a free control port (``--control-port 0``: it cannot
  collide with anything) and writes the port to var/emulator-control.port for the client.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from . import Emulator

log = logging.getLogger(__name__)


def _ms(text: str) -> float:
    return float(text) / 1000


#: command words → (argument help, action). Actions return None ("ok") or a JSON-ready value.
COMMANDS: dict[str, tuple[str, Callable[..., object]]] = {
    "paper out": ("[COMMAND]", lambda emu, before=None: emu.paper_out(before=before)),
    "paper in": ("", lambda emu: emu.paper_in()),
    "drop after": ("N", lambda emu, n: emu.drop_after_tasks(int(n))),
    "drop mid-frame": ("", lambda emu: emu.drop_mid_frame()),
    "drop now": ("", lambda emu: emu.drop_connection()),
    "corrupt": ("", lambda emu: emu.corrupt_next_byte()),
    "power off": ("", lambda emu: emu.power_off()),
    "power on": ("", lambda emu: emu.power_on()),
    "advance": ("HOURS", lambda emu, hours: emu.advance_clock(float(hours))),
    "unsent": ("N", lambda emu, n: emu.set_unsent(int(n))),
    "device-time": ("MS", lambda emu, ms: emu.set_device_time(_ms(ms))),
    "latency": ("MS", lambda emu, ms: emu.set_latency(_ms(ms))),
    "clear": ("", lambda emu: emu.clear_faults()),
    "state": ("", lambda emu: {
        "shift": emu.shift_state(), "shift_number": emu.state.shift_number, "fd_number": emu.state.fd_number,
        "receipt_open": emu.state.receipt_open, "paper": emu.device.paper, "faults_fired": emu.faults_fired,
    }),
}


def commands_of(emu: object) -> dict[str, tuple[str, Callable[..., object]]]:
    """The shared commands and those the emulator adds (its ``control_commands``)."""
    return {**COMMANDS, **getattr(emu, "control_commands", {})}


def usage(emu: object = None) -> str:
    """One line per command, for --help and the control port's ``help``."""
    return "\n".join(f"  {name} {args}".rstrip() for name, (args, _) in commands_of(emu).items())


def run(emu: Emulator, line: str) -> object:
    """Execute one control line; ValueError with a readable message for a bad one."""
    words = line.split()
    commands = commands_of(emu)
    for n in (2, 1):
        name = " ".join(words[:n])
        if name in commands:
            args, action = commands[name]
            try:
                return action(emu, *words[n:])
            except TypeError:
                raise ValueError(f"{name}: arguments {args or 'none'}") from None
    raise ValueError(f"unknown command {line.strip()!r}; try: help")


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        emu: Emulator = self.server.emulator  # type: ignore[attr-defined]
        for raw in self.rfile:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            if line == "help":
                # One answer, one line: that is how a client knows where an answer ends.
                answer = "; ".join(entry.strip() for entry in usage(emu).splitlines())
            else:
                try:
                    result = run(emu, line)
                except (ValueError, KeyError) as exc:
                    answer = f"error: {exc}"
                else:
                    answer = "ok" if result is None else json.dumps(result, ensure_ascii=False)
                log.info("emulator control: %s -> %s", line, answer)
            self.wfile.write(answer.encode("utf-8") + b"\n")


class ControlServer(socketserver.ThreadingTCPServer):
    """The control port; loopback only, since it can switch the 'device' off."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, emu: Emulator, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.emulator = emu

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return self.server_address[1]

    def start(self) -> threading.Thread:
        """Serve in a daemon thread."""
        thread = threading.Thread(target=self.serve_forever, name="emulator-control", daemon=True)
        thread.start()
        return thread


def send(port: int, line: str, timeout: float = 5.0) -> str:
    """Send one control line to an emulator's control port and return its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(line.encode("utf-8") + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode("utf-8").strip()


#: Where ``make run`` leaves the control port of the emulator it started (relative to the project).
PORT_FILE = os.path.join("var", "emulator-control.port")


def _known(line: str) -> bool:
    words = line.split()
    return any(" ".join(words[:n]) in COMMANDS for n in (2, 1))


def command_line(words: list[str]) -> str:
    """The control line for the client's words; ``paper-out`` is accepted for ``paper out``."""
    line = " ".join(words)
    first, _, rest = line.partition(" ")
    if "-" in first and not _known(line):
        spaced = " ".join([first.replace("-", " ", 1), rest]).strip()
        if _known(spaced):
            return spaced
    return line


def main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``python -m kktapp.atol.emulator control [--port N] COMMAND…``: 0 ok, 1 refused, 2 no emulator."""
    out, err = out or sys.stdout, err or sys.stderr
    parser = argparse.ArgumentParser(
        prog="python -m kktapp.atol.emulator control",
        description="Команда работающему эмулятору ККТ через его порт управления (--control-port).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="команды:\n" + usage() + "\n  help\n\nпример: python -m kktapp.atol.emulator control paper out",
    )
    parser.add_argument("--port", type=int, help=f"порт управления; по умолчанию — из {PORT_FILE} (его пишет make run)")
    parser.add_argument("--timeout", type=float, default=5.0, help="секунд ждать ответа (по умолчанию 5)")
    parser.add_argument("command", nargs="+", help="команда, например: paper out, power off, advance 25, state")
    args = parser.parse_args(argv)
    port = args.port
    if port is None:
        try:
            with open(PORT_FILE, encoding="ascii") as f:
                port = int(f.read().strip())
        except (OSError, ValueError):
            err.write(
                f"Не знаю порт управления эмулятора: нет файла {PORT_FILE} (его пишет make run, запускайте"
                " из каталога проекта) — укажите порт: control --port ПОРТ …\n"
            )
            return 2
    line = command_line(args.command)
    try:
        answer = send(port, line, timeout=args.timeout)
    except OSError as exc:
        err.write(
            f"Эмулятор не отвечает на порту управления 127.0.0.1:{port} ({exc}). Он запущен с"
            f" --control-port {port}? make run запускает его сам.\n"
        )
        return 2
    out.write(answer + "\n")
    return 1 if answer.startswith("error:") or not answer else 0
