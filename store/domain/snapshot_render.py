"""Render a state file: a document -> deterministic JSON or YAML bytes (no I/O).

The document is validated and put in canonical order first, so whatever is rendered parses back
to the same `Snapshot`. The caller writes the bytes.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.snapshot_messages import _fail, _show
from wassette_state.store.domain.snapshot_model import Format
from wassette_state.store.domain.snapshot_parse import _check_plain, _validate
from wassette_state.store.domain.snapshot_yaml import _Y

__all__ = ["render_snapshot"]

_BaseDumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _StateDumper(_BaseDumper):  # type: ignore[misc]
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: Any, value: str) -> Any:
    # Literal block style only for plain multi-line text: other line breaks (\r, NEL, U+2028)
    # and control characters would not survive a block scalar.
    # Other non-printable text is double-quoted: escapes are the only form every emitter
    # (libyaml and pure Python) writes back losslessly.
    style: str | None = None
    if "\n" in value and all(line.isprintable() for line in value.split("\n")):
        style = "|"
    elif not value.isprintable():
        style = '"'

    return dumper.represent_scalar(f"{_Y}str", value, style=style)


_StateDumper.add_representer(str, _represent_str)


def render_snapshot(doc: dict[str, Any], fmt: Format) -> bytes:
    """Render a document deterministically. The document is validated (and put in canonical
    order) first, so whatever is rendered parses back to the same `Snapshot`."""
    if fmt not in ("json", "yaml"):
        raise ValidationError(f"unknown state file format {_show(fmt)} (expected json or yaml)")
    _check_plain(doc)
    snapshot, _ = _validate(doc)
    for comp in snapshot.components:
        if comp.placeholders:
            raise _fail(comp.placeholders[0], "cannot render a placeholder value ('...')")
    canonical = snapshot.to_doc()
    if fmt == "json":
        text = json.dumps(canonical, indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")
    out = yaml.dump(
        canonical,
        Dumper=_StateDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        encoding="utf-8",
    )
    return out
