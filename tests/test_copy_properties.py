"""Property: for any command history, `copy_store` SQLite → PostgreSQL → SQLite gives the same
log rows, the same tags and identity, and the same state at every seq, and the copies verify.

Library-level for speed (the CLI is tests/test_copy.py's): histories drawn as in
tests/test_properties_history.py, real SQLite files, databases cloned on the real server.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests.test_properties_history import (  # noqa: F401 - `inputs` is a fixture
    HISTORIES,
    SCRATCH,
    SETTINGS,
    apply,
    fresh_store,
    inputs,
)
from wassette_state.store.persistence import db, migrate, readmodel
from wassette_state.store.persistence.schema import events, store_identity, tags, transactions
from wassette_state.store.usecases import history
from wassette_state.store.usecases.copy import copy_store
from wassette_state.store.usecases.verify import verify

LOG = ((transactions, "id"), (events, "seq"), (tags, "name"), (store_identity, "id"))


def dump(url: str) -> tuple[Any, ...]:
    """The log's rows, and the state at every seq, of the store at `url`; verified."""
    engine = migrate.open_engine(url, writing=False)
    try:
        with db.read_tx(engine) as conn:
            checked = verify(conn)
            assert checked.ok, checked.problems
            rows = [list(conn.execute(select(t).order_by(t.c[k]))) for t, k in LOG]
            head = rows[3][0].head_seq
            states = [readmodel.state_at(conn, s) for s in range(head + 1)]
            return rows, states
    finally:
        engine.dispose()


@settings(SETTINGS, max_examples=10)  # each example creates two databases on the server
@given(ops=HISTORIES, tagged=st.lists(st.integers(0, 30), max_size=3), data=st.data())
def test_a_copy_there_and_back_is_the_same_store(
    inputs: Path,  # noqa: F811
    pg_databases: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    ops: list[tuple[Any, ...]],
    tagged: list[int],
    data: st.DataObject,
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # a PostgreSQL store's data dir
    with fresh_store(inputs) as store:
        for op in ops:
            apply(store, inputs, op)
        head = store.head_seq()
        for i, seq in enumerate(tagged):
            history.add_tag(store, f"t{i}", f"seq:{min(seq, head)}")
        want = dump(store.settings.db_url)
        pg_url = pg_databases(blank=data.draw(st.booleans(), label="blank database"))
        done = copy_store(store.settings, pg_url)
        assert (done.events, done.seq, done.tags) == (head, head, len(tagged))
        assert dump(pg_url) == want
        with tempfile.TemporaryDirectory(prefix="wassette-copy-", dir=SCRATCH) as tmp:
            back = f"sqlite:///{tmp}/state.db"
            copy_store(dataclasses.replace(store.settings, db_url=pg_url), back)
            assert dump(back) == want
