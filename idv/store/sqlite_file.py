"""What the SQLite stores (references, counters) share: bounded waits and a file that stays the same.

A lock held by another process is waited for at most `busy_timeout_seconds` (kept below
the request budget), so a locked store answers UNAVAILABLE within the deadline instead
of hanging. The file's device and inode are recorded at open: a store file removed or
replaced under the node (its writes would go to a deleted inode and vanish) is refused.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from idv.errors import StoreUnavailable


@dataclass(frozen=True)
class SqliteOptions:
    busy_timeout_seconds: float = 1.0


def connect(path: Path, options: SqliteOptions) -> tuple[sqlite3.Connection, tuple[int, int]]:
    """An autocommit connection shared by threads (callers serialise it), and the file's identity."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                         timeout=options.busy_timeout_seconds)
    path.chmod(0o600)
    info = os.stat(path)
    return db, (info.st_dev, info.st_ino)


def check_identity(path: Path, identity: tuple[int, int], reason: str) -> None:
    try:
        info = os.stat(path)
    except OSError:
        info = None
    if info is None or (info.st_dev, info.st_ino) != identity:
        raise StoreUnavailable(f"the store file {path} was removed or replaced while serving; restore it and "
                               "restart the node", reason)
