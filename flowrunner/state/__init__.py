"""Where state lives: user keys, execution history and the on-complete outbox, behind the
:class:`~flowrunner.state.protocol.StateStore` seam; SQLite (:mod:`flowrunner.state.sqlite`)
is the embedded implementation.

:func:`open_store` opens the store a project names; :func:`open_recorder` gives the group
committer of execution ends that fits it; :func:`read_user_keys` reads user keys without
writing anything. Each process, and each thread in it, opens its own store object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowrunner.state.protocol import Recorder, StateStore

# The backends are imported when a store is opened: importing this package (for the
# protocol, say) must not import sqlite3.


def open_store(place: Path) -> StateStore:
    """Open (creating it as needed) the state store at ``place``.

    Raises :class:`~flowrunner.errors.StateError` when it is not a usable store.
    """
    from flowrunner.state.sqlite.store import Store

    return Store.open(place)


def open_recorder(store: StateStore) -> Recorder:
    """The group committer of execution ends for ``store`` (an async context manager)."""
    from flowrunner.state.sqlite.recorder import AsyncRecorder
    from flowrunner.state.sqlite.store import Store

    assert isinstance(store, Store), "only the SQLite store exists"
    return AsyncRecorder(store)


def read_user_keys(place: Path) -> dict[str, Any]:
    """The user keys stored at ``place``, read without creating or changing anything."""
    from flowrunner.state.sqlite.store import stored_user_keys

    return stored_user_keys(place)


__all__ = ["Recorder", "StateStore", "open_recorder", "open_store", "read_user_keys"]
