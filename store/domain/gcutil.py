"""Bulk work without the cyclic garbage collector."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Building tens of thousands of small containers (a state, a replay) makes the collector
    scan every young object again and again, for nothing: these structures hold no cycles.
    Measured on a 10k-component state: 40 % of the time went to collections."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
