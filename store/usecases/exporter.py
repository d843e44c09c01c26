"""State → Wassette-compatible snapshot document (pure), and the export command."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wassette_state.store.domain.state import Component, Metadata, State

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


def component_doc(c: Component, lazy: bool = False) -> dict[str, Any]:
    """`lazy`: leave the metadata as the `Metadata` value (the fast renderers splice its text)."""
    policy = None
    if c.policy is not None:
        policy = {
            "source_uri": c.policy.source_uri or "",
            "policy_content": c.policy.policy_content,
            "attached_at": c.policy.attached_at or 0,
        }
    return {
        "component_id": c.component_id,
        "metadata": c.metadata if lazy else c.metadata.doc,
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
    lazy: bool = False,
) -> dict[str, Any]:
    return {
        "version": TOOL_VERSION,
        "exported_at": at,
        "components": [component_doc(state.components[k], lazy) for k in sorted(state.components)],
        "environment": dict(sorted(state.environment.items())),
        "paths": {"component_dir": component_dir, "secrets_dir": secrets_dir},
        "as_of": {"seq": as_of.seq, "recorded_at": as_of.recorded_at, "tag": as_of.tag},
        "store": {"lineage": lineage, "serial": as_of.seq},
    }


def render(doc: dict[str, Any], fmt: str) -> bytes:
    from wassette_state.store.domain.snapshot_render import render_snapshot

    return render_snapshot(doc, fmt)  # type: ignore[arg-type]


def write_output(target: str, data: bytes) -> None:
    """Atomic, mode 0600 (a snapshot holds policies); `-` is stdout."""
    import sys

    from wassette_state.store.files import fsutil

    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = Path(target).expanduser()
    if path.is_dir():
        from wassette_state.store.domain.errors import ValidationError

        raise ValidationError(f"{path} is a directory; give a file name")
    if not path.parent.is_dir():
        from wassette_state.store.domain.errors import ValidationError

        raise ValidationError(f"directory {path.parent} does not exist")
    if path.exists() and not path.is_file():
        # A device or pipe (/dev/null, a FIFO): write into it, never rename over it.
        with path.open("wb") as f:
            f.write(data)
        return
    fsutil.atomic_write(path, data, mode=0o600)


# ------------------------------------------------------------------ fast rendering
#
# A 10k-component export is tens of MB of tool schemas. Generic YAML emitters take seconds for
# that, so the stored metadata JSON text is spliced in as is: JSON is valid YAML flow style.
# Everything else is written explicitly in block style, deterministic by construction.

_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./@+-]*\Z")  # \Z: `$` would let "info\n" through
_YAML_SPECIAL = {
    "y",
    "n",
    "yes",
    "no",
    "on",
    "off",
    "true",
    "false",
    "null",
    "~",
}
# YAML 1.1 reads 1e5 (no dot) as a string: such JSON goes through the generic emitter.
# Numbers follow ':', '[' or ','; a match inside a string only costs the slow path.
_EXPONENT = re.compile(r"[:\[,] ?-?[0-9]+(?:\.[0-9]+)?[eE]")
# Stored metadata text comes from Python's JSON encoder, whose floats always write a signed
# exponent ("1e+16"): without "e+"/"e-" before a digit the text has no exponent number, and
# this search is three times faster than the one above.
_EXPONENT_HINT = re.compile(r"e[+-][0-9]")


def _yq(text: str) -> str:
    """A YAML scalar for `text`: plain when unambiguous, else a JSON (double-quoted) string."""
    if _PLAIN.match(text) and text.lower() not in _YAML_SPECIAL:
        return text
    return _escape(json.dumps(text, ensure_ascii=False))


def _escape(json_text: str) -> str:
    if json_text.isascii() and "\x7f" not in json_text:  # both run at memory speed
        return json_text
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json_text)


def _block_ok(text: str) -> bool:
    if not text.endswith("\n") or text.endswith("\n\n") or text[:1] in (" ", "\t", "\n"):
        return False
    return all(line.isprintable() or line == "" for line in text[:-1].split("\n")) and (
        "\r" not in text
    )


def _yaml_flow(value: Any) -> str:
    raw = json.dumps(value, ensure_ascii=False)
    if _EXPONENT.search(raw):
        import yaml

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        return yaml.dump(
            value, Dumper=dumper, default_flow_style=True, width=1 << 30, sort_keys=False
        ).strip()
    return _escape(raw)


def render_state_yaml(doc: dict[str, Any]) -> bytes:
    """A `state_doc(..., lazy=True)` document as YAML, metadata text spliced undecoded."""
    out: list[str] = [
        f"version: {_yq(doc['version'])}",
        f"exported_at: {doc['exported_at']}",
    ]
    comps = doc["components"]
    out.append("components:" if comps else "components: []")
    for c in comps:
        cid = c["component_id"]
        out.append(f"- component_id: {_yq(cid)}")
        meta = c["metadata"]
        if not isinstance(meta, Metadata):
            out.append(f"  metadata: {_yaml_flow(meta)}")
        elif _EXPONENT_HINT.search(meta.raw) and _EXPONENT.search(meta.raw):
            out.append(f"  metadata: {_yaml_flow(meta.doc)}")
        else:
            out.append(f"  metadata: {_escape(meta.raw)}")
        p = c["policy"]
        if p is None:
            out.append("  policy: null")
        else:
            out.append("  policy:")
            out.append(f"    source_uri: {_yq(p['source_uri'])}")
            content = p["policy_content"]
            if _block_ok(content):
                out.append("    policy_content: |")
                out.extend(f"      {line}" if line else "" for line in content[:-1].split("\n"))
            else:
                out.append(f"    policy_content: {_yq(content)}")
            out.append(f"    attached_at: {p['attached_at']}")
        s = c["secrets"]
        if s is None:
            out.append("  secrets: null")
        else:
            out.append(f"  secrets: {{env_keys: [{', '.join(_yq(k) for k in s['env_keys'])}]}}")
        out.append(f"  source_uri: {_yq(c['source_uri'])}")
        out.append(f"  wasm_sha256: {_yq(c['wasm_sha256'])}")
    env = doc["environment"]
    out.append("environment:" if env else "environment: {}")
    out.extend(f"  {_yq(k)}: {_yq(v)}" for k, v in env.items())
    out.append("paths:")
    out.append(f"  component_dir: {_yq(doc['paths']['component_dir'])}")
    out.append(f"  secrets_dir: {_yq(doc['paths']['secrets_dir'])}")
    a = doc["as_of"]
    out.append("as_of:")
    out.append(f"  seq: {a['seq']}")
    out.append(f"  recorded_at: {_yq(a['recorded_at'])}")
    out.append(f"  tag: {'null' if a['tag'] is None else _yq(a['tag'])}")
    st = doc["store"]
    out.append("store:")
    out.append(f"  lineage: {_yq(st['lineage'])}")
    out.append(f"  serial: {st['serial']}")
    return ("\n".join(out) + "\n").encode()


def render_state_json(doc: dict[str, Any]) -> bytes:
    """Pretty JSON with each component's metadata spliced in as stored (one line each)."""
    parts: list[str] = []
    for c in doc["components"]:
        meta = c["metadata"]
        body = {**c, "metadata": None}
        text = json.dumps(body, indent=2, ensure_ascii=False)
        raw = meta.raw if isinstance(meta, Metadata) else json.dumps(meta, ensure_ascii=False)
        text = text.replace('"metadata": null', f'"metadata": {raw}', 1)
        parts.append("\n".join("    " + line for line in text.split("\n")))
    head = {k: v for k, v in doc.items() if k != "components"}
    head_text = json.dumps(head, indent=2, ensure_ascii=False)
    comps = "[\n" + ",\n".join(parts) + "\n  ]" if parts else "[]"
    # Components go back to their canonical place, right after exported_at (never last).
    lines = head_text.split("\n")
    at = next(i for i, ln in enumerate(lines) if ln.startswith('  "exported_at"'))
    lines.insert(at + 1, f'  "components": {comps},')
    return ("\n".join(lines) + "\n").encode()
