"""The emulator's control client: ``python -m kktapp.atol.emulator control COMMAND…``.

It replaces ``printf … | nc``: nc is missing on a minimal Debian, and ``make run`` gives the
emulator a free control port (written to var/emulator-control.port), so no fixed port can collide.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kktapp.atol.emulator import Emulator, control

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def controlled() -> Iterator[tuple[Emulator, int]]:
    emu = Emulator()
    emu.start("127.0.0.1", 0)
    server = control.ControlServer(emu, 0)
    server.start()
    try:
        yield emu, server.port
    finally:
        server.shutdown()
        server.server_close()
        emu.stop()


def client(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "kktapp.atol.emulator", "control", *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd or REPO, env=env)


def test_client_sends_commands_and_prints_answers(controlled):
    emu, port = controlled
    done = client("--port", str(port), "paper", "out")
    assert (done.returncode, done.stdout) == (0, "ok\n")
    assert emu.device.paper is False
    # One word with a dash is the same command; quoting the whole line works too.
    assert client("--port", str(port), "paper-in").stdout == "ok\n"
    assert emu.device.paper is True
    assert client("--port", str(port), "power off").returncode == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", emu.port), timeout=5).close()
    client("--port", str(port), "power", "on")
    state = client("--port", str(port), "state")
    assert state.returncode == 0 and json.loads(state.stdout)["paper"] is True


def test_client_reads_the_port_make_run_wrote(controlled, tmp_path):
    emu, port = controlled
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "emulator-control.port").write_text(f"{port}\n")
    done = client("advance", "25", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert emu.shift_state() in ("closed", "expired")


def test_client_reports_a_refused_command(controlled):
    _, port = controlled
    bad = client("--port", str(port), "melt")
    assert bad.returncode == 1 and bad.stdout.startswith("error: unknown command")


def test_client_without_an_emulator_says_what_to_do(tmp_path):
    unknown = client("paper", "out", cwd=tmp_path)
    assert unknown.returncode == 2 and "--port" in unknown.stderr and "make run" in unknown.stderr
    with socket.socket() as s:  # bound, not listening, for the whole call: refused, and ours
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
        refused = client("--port", str(free), "state")
    assert refused.returncode == 2 and "не отвечает" in refused.stderr
