"""WHEN → seq: the one place a parsed point in time (domain.when) meets the log and its tags."""

from __future__ import annotations

from sqlalchemy import Connection, select

from wassette_state.store.persistence import log


def resolve_point(conn: Connection, text: str) -> int:
    """A WHEN string → the seq whose state it names (0 = before the first event)."""
    from wassette_state.store.domain.errors import NotFound
    from wassette_state.store.domain.when import parse_when
    from wassette_state.store.persistence.clock import now_us
    from wassette_state.store.persistence.schema import tags

    point = parse_when(text, now_us())
    last_seq = log.head(conn)[0]
    if point.kind == "time":
        assert isinstance(point.value, int)
        return log.seq_at_time(conn, point.value)
    if point.kind == "seq":
        assert isinstance(point.value, int)
        if point.value > last_seq:
            raise NotFound(f"seq:{point.value} does not exist yet (the log ends at seq {last_seq})")
        return point.value
    if point.kind == "tx":
        assert isinstance(point.value, int)
        seq = log.tx_last_seq(conn, point.value) if point.value > 0 else 0
        if point.value > 0 and seq == 0:
            raise NotFound(f"transaction tx:{point.value} does not exist")
        return seq
    seq_row = conn.execute(select(tags.c.seq).where(tags.c.name == point.value)).scalar()
    if seq_row is None:
        raise NotFound(f"unknown tag {point.value!r} (see 'wassette-state state tags')")
    return int(seq_row)
