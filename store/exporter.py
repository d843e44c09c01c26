"""State → Wassette-compatible snapshot document (pure), and the export command."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.state import Component, State

TOOL_VERSION = "0.1.0"


@dataclass(frozen=True)
class AsOf:
    seq: int
    recorded_at: str  # ISO-8601 UTC with microseconds
    tag: str | None = None


def exported_at() -> int:
    """Now, unless SOURCE_DATE_EPOCH pins it (reproducible builds and tests)."""
    pinned = os.environ.get("SOURCE_DATE_EPOCH")
    if pinned and pinned.strip().isdigit():
        return int(pinned.strip())
    return int(time.time())


def component_doc(c: Component) -> dict[str, Any]:
    policy = None
    if c.policy is not None:
        policy = {
            "source_uri": c.policy.source_uri or "",
            "policy_content": c.policy.policy_content,
            "attached_at": c.policy.attached_at or 0,
        }
    return {
        "component_id": c.component_id,
        "metadata": c.metadata.doc,
        "policy": policy,
        "secrets": {"env_keys": sorted(c.secret_keys)} if c.secret_keys else None,
        "source_uri": c.source_uri,
        "wasm_sha256": c.wasm_sha256,
    }


def state_doc(
    state: State,
    *,
    component_dir: str,
    secrets_dir: str,
    as_of: AsOf,
    lineage: str,
    at: int,
) -> dict[str, Any]:
    return {
        "version": TOOL_VERSION,
        "exported_at": at,
        "components": [component_doc(state.components[k]) for k in sorted(state.components)],
        "environment": dict(sorted(state.environment.items())),
        "paths": {"component_dir": component_dir, "secrets_dir": secrets_dir},
        "as_of": {"seq": as_of.seq, "recorded_at": as_of.recorded_at, "tag": as_of.tag},
        "store": {"lineage": lineage, "serial": as_of.seq},
    }


def render(doc: dict[str, Any], fmt: str) -> bytes:
    from store.snapshot import render_snapshot

    return render_snapshot(doc, fmt)  # type: ignore[arg-type]


def write_output(target: str, data: bytes) -> None:
    """Atomic, mode 0600 (a snapshot holds policies); `-` is stdout."""
    import sys

    from store import fsutil

    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = Path(target).expanduser()
    if path.is_dir():
        from store.errors import ValidationError

        raise ValidationError(f"{path} is a directory; give a file name")
    if not path.parent.is_dir():
        from store.errors import ValidationError

        raise ValidationError(f"directory {path.parent} does not exist")
    if path.exists() and not path.is_file():
        # A device or pipe (/dev/null, a FIFO): write into it, never rename over it.
        with path.open("wb") as f:
            f.write(data)
        return
    fsutil.atomic_write(path, data, mode=0o600)
