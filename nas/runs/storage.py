"""Optuna storages for run histories: a journal file (the default) or a relational database URL."""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from nas.errors import UnknownKindError
from nas.runs.settings import RunError

if TYPE_CHECKING:
    import optuna

__all__ = ["check_storage_url", "journal_path", "open_storage", "sqlite_file"]

_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def _is_url(text: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def check_storage_url(url: str) -> None:
    """Reject a storage URL whose scheme no storage handles, without connecting.

    Accepted: an RDB URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``), ``journal:///path`` or a
    plain file path (a journal file).

    Raises:
        UnknownKindError: unknown scheme (the known ones are listed).
    """
    if not _is_url(url):
        return
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in _RDB_SCHEMES and scheme != "journal":
        raise UnknownKindError(f"unknown storage URL scheme {scheme!r} in {url!r}; known: "
                               f"{', '.join(_RDB_SCHEMES)}, journal:///PATH, or a journal file path")


def journal_path(url: str) -> Path | None:
    """The journal file a storage URL names (``journal:///PATH`` or a plain path); None for a database URL."""
    if _is_url(url) and not url.lower().startswith("journal://"):
        return None
    return Path(url[len("journal://"):] if url.lower().startswith("journal://") else url)


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (None for another URL or an in-memory database): opening
    a missing one would create it, which a reader must not do."""
    match = re.match(r"^sqlite(\+\w+)?:///([^?]+)", url, flags=re.IGNORECASE)
    return None if match is None or match.group(2) == ":memory:" else Path(match.group(2))


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (see :func:`check_storage_url`): RDBStorage, or JournalStorage on a file.

    Raises:
        UnknownKindError: unknown scheme.
        RunError: the storage cannot be opened (unreachable database, unreadable or corrupt journal).
    """
    import optuna

    check_storage_url(url)
    path = journal_path(url)
    if path is None:
        try:
            return _open_rdb(url)
        except Exception as exc:  # noqa: BLE001  (sqlalchemy raises many types; the message is what matters)
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise RunError(f"cannot open storage {url!r}: {type(exc).__name__}: {reason}") from None
    if path.is_dir():
        raise RunError(f"{path}: is a directory, not a journal file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{path}: not a readable Optuna journal ({type(exc).__name__}: {exc})") from None


# -- parallel workers: several processes opening one new database at once ----------------------------------

# Another worker is creating the same tables or stamping their schema version (SQLite, PostgreSQL wording).
_RACE_MESSAGES = ("already exists", "database is locked", "alembic_version", "duplicate key")
_RACE_TRIES = 8


def _open_rdb(url: str) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``, tried again while another process is creating the same tables.

    Optuna creates the schema table by table on first open; two workers opening one new database at the
    same instant make the second one fail with "table ... already exists" (SQLite) or a lock. Once the
    first has finished, opening succeeds, so a few short retries cover it; any other error is raised at once.
    """
    import optuna

    for attempt in range(1, _RACE_TRIES + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return optuna.storages.RDBStorage(url)
        except Exception as exc:
            if attempt == _RACE_TRIES or not any(text in str(exc) for text in _RACE_MESSAGES):
                raise
            time.sleep(0.1 * attempt)
    raise RunError(f"cannot open storage {url!r}")  # not reached: the last try returns or raises

