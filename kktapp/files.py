"""Files that hold buyers' data: the journal, its backups, the service log.

They carry buyers' e-mails and phones and the cashier's INN (152-ФЗ personal data), so they are
created 0640 and their directories 0750: the service's user writes, its group reads (a backup
operator, say), nobody else. Existing files and directories keep the mode an administrator gave
them. SQLite gives its -wal and -shm files the mode of the database file.
"""

from __future__ import annotations

import os

FILE_MODE = 0o640
DIR_MODE = 0o750


def create_private_file(path: str) -> None:
    """Create ``path`` empty with FILE_MODE if it does not exist (an existing file is left alone)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def make_private_dirs(directory: str) -> None:
    """``os.makedirs`` with DIR_MODE for every directory it creates (makedirs gives the mode to the
    last one only); existing ones are left alone."""
    missing = []
    path = os.path.abspath(directory) if directory else ""
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for path in reversed(missing):
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:  # another process made it meanwhile
            pass
