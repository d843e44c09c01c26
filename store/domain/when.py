"""WHEN: one parser for every --at/--to/--since/--until (pure; resolving needs the log)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from wassette_state.store.domain.errors import ValidationError

_REL = re.compile(r"^([0-9]{1,9})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NUM = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,6})?$")
_DIGITS = re.compile(r"^[0-9]{1,15}$")
# Far enough in the past for any log; keeps huge ages (`999999999w`) inside a 64-bit integer.
_MIN_US = -(2**62)
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

HELP = (
    "ISO-8601 time (naive = UTC), unix seconds, an age like 90s/15m/2h/3d, seq:N, tx:N or tag:NAME"
)


@dataclass(frozen=True)
class Point:
    """A point in history before it is resolved against a log."""

    kind: str  # time | seq | tx | tag
    value: int | str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_when(text: str, now_us: int) -> Point:
    raw = text.strip()
    if not raw:
        raise ValidationError(f"empty point in time; expected {HELP}")
    if len(raw) > 120:
        raise ValidationError(f"point in time too long; expected {HELP}")
    for prefix in ("seq:", "tx:"):
        if raw.startswith(prefix):
            num = raw[len(prefix) :]
            if not _DIGITS.fullmatch(num):
                raise ValidationError(f"invalid {prefix[:-1]} number in {_show(raw)}")
            return Point(prefix[:-1], int(num))
    if raw.startswith("tag:"):
        name = raw[4:]
        if not _TAG.fullmatch(name):
            raise ValidationError(f"invalid tag name in {_show(raw)}")
        return Point("tag", name)
    rel = _REL.fullmatch(raw)
    if rel:
        age_us = int(rel.group(1)) * _UNITS[rel.group(2)] * 1_000_000
        return Point("time", max(now_us - age_us, _MIN_US))
    if _NUM.fullmatch(raw):
        us = round(float(raw) * 1_000_000)
        return _not_future(Point("time", us), raw, now_us)
    try:
        dt = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise ValidationError(
            f"cannot read {_show(raw)} as a point in time; expected {HELP}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        us = round(dt.timestamp() * 1_000_000)
    except (OverflowError, OSError, ValueError):
        raise ValidationError(f"time {_show(raw)} is out of range") from None
    return _not_future(Point("time", us), raw, now_us)


def _not_future(point: Point, raw: str, now_us: int) -> Point:
    assert isinstance(point.value, int)
    if point.value > now_us + 1_000_000:  # a second of slack for clock skew between processes
        raise ValidationError(f"time {_show(raw)} is in the future")
    return point


def _show(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:39] + "…")
