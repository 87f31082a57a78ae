"""The service log when several processes write it (gunicorn workers, mod_wsgi daemons).

Each process has its own handler on the same file. Two handlers in one test stand for two
processes: each holds its own file descriptor, exactly as two processes would.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from kktapp.logsetup import FORMAT, MaskSecrets, PrivateRotatingFileHandler

MAX_BYTES = 2000


def _handler(path: Path) -> PrivateRotatingFileHandler:
    handler = PrivateRotatingFileHandler(str(path), maxBytes=MAX_BYTES, backupCount=50, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(MaskSecrets())
    return handler


def _record(text: str) -> logging.LogRecord:
    return logging.LogRecord("kktapp.test", logging.INFO, __file__, 1, "%s", (text,), None)


@pytest.fixture
def two_writers(tmp_path):
    path = tmp_path / "kkt.log"
    first, second = _handler(path), _handler(path)
    yield path, first, second
    first.close()
    second.close()


def _files(path: Path) -> list[Path]:
    return [p for p in path.parent.iterdir() if p.name.startswith(path.name)]


def test_two_processes_rotate_once_per_full_file(two_writers):
    path, first, second = two_writers
    lines = [f"строка {i:04d} " + "x" * 60 for i in range(300)]
    for i, line in enumerate(lines):
        (first if i % 2 else second).emit(_record(line))
    written = "".join(p.read_text(encoding="utf-8") for p in _files(path))
    # Every line exactly once, whichever process wrote it.
    for line in lines:
        assert written.count(line) == 1, line
    # No short backups: the stock handler in the process whose file the other had just rotated
    # rotated once more, pushing the other's fresh file (one record) into the backups.
    sizes = sorted(p.stat().st_size for p in _files(path) if p != path)
    assert len(sizes) <= len(written.encode()) // (MAX_BYTES - 200) + 1, sizes
    assert sizes[0] >= MAX_BYTES - 200, sizes
    assert all(size <= MAX_BYTES for size in sizes), sizes


def test_rotation_keeps_the_newest_lines_in_the_named_file(two_writers):
    path, first, second = two_writers
    for i in range(100):
        (first if i % 3 else second).emit(_record(f"запись {i:03d} " + "y" * 80))
    assert "запись 099" in path.read_text(encoding="utf-8")
    assert "запись 099" not in Path(f"{path}.1").read_text(encoding="utf-8")


def test_a_file_that_is_not_regular_never_rotates(tmp_path):
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    handler = PrivateRotatingFileHandler("/dev/null", maxBytes=10, backupCount=2, encoding="utf-8")
    try:
        for i in range(20):
            handler.emit(_record(f"line {i}"))
        assert handler.stream is not None and not handler.stream.closed
    finally:
        handler.close()


def test_passwords_are_masked_once_formatted(tmp_path):
    path = tmp_path / "kkt.log"
    handler = _handler(path)
    try:
        record = _record("connect password=123456 ok")
        assert handler.filter(record)
        handler.emit(record)
    finally:
        handler.close()
    text = path.read_text(encoding="utf-8")
    assert "password=***" in text and "123456" not in text
