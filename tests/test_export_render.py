"""The fast export renderers (metadata text spliced in) read back exactly like the generic
renderer's output, for awkward strings too."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wassette_state.store.domain.snapshot_parse import parse_snapshot
from wassette_state.store.domain.snapshot_render import render_snapshot
from wassette_state.store.domain.state import Component, Metadata, Paths, Policy, State
from wassette_state.store.usecases.exporter import (
    AsOf,
    render_state_json,
    render_state_yaml,
    state_doc,
)

LINEAGE = "0b6f1a52-93c4-4a0c-8a8e-3a43d0a8b6a1"
HASH = "a" * 64

text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=30
)


def metadata(cid: str, description: str, number: Any) -> dict[str, Any]:
    return {
        "component_id": cid,
        "tool_schemas": [
            {
                "name": "t",
                "description": description,
                "inputSchema": {
                    "type": "object",
                    "properties": {"x": {"type": "number", "maximum": number}},
                    "required": ["x"],
                },
            }
        ],
        "function_identifiers": [
            {"package_name": None, "interface_name": None, "function_name": "t"}
        ],
        "tool_names": ["t"],
        "validation_stamp": {"file_size": 10, "mtime": 20, "content_hash": HASH},
        "created_at": 30,
    }


def state(description: str, policy_text: str | None, env_value: str, number: Any) -> State:
    comps = {
        "a": Component(
            "a",
            "file:///srv/a.wasm",
            HASH,
            Metadata(raw=Metadata(metadata("a", description, number)).raw),
            Policy(policy_text, "file:///p.yaml", 5) if policy_text is not None else None,
            ("API_KEY", "Z"),
        ),
        "b": Component("b", "file:///srv/b.wasm", "b" * 64, metadata("b", "plain", 1)),
    }
    return State(comps, {"LOG": env_value, "yes": "no"}, Paths("/c", "/s"))


def docs(s: State) -> tuple[dict[str, Any], dict[str, Any]]:
    common: dict[str, Any] = {
        "component_dir": "/c",
        "secrets_dir": "/s",
        "as_of": AsOf(7, "2026-11-25T10:00:00.000000Z", "t1"),
        "lineage": LINEAGE,
        "at": 1764067200,
    }
    return state_doc(s, **common), state_doc(s, **common, lazy=True)


def check(s: State) -> None:
    plain, lazy = docs(s)
    for fmt, fast in (("yaml", render_state_yaml), ("json", render_state_json)):
        expected = parse_snapshot(render_snapshot(plain, fmt), fmt)  # type: ignore[arg-type]
        got = parse_snapshot(fast(lazy), fmt)  # type: ignore[arg-type]
        assert got == expected, fmt
        assert got.to_doc() == plain


def test_typical_state_reads_back_identically() -> None:
    check(state("Fetch a URL", 'version: "1.0"\npermissions: {}\n', "info", 5))


def test_exponent_numbers_and_yaml_keywords() -> None:
    # YAML 1.1 reads 1e+20 as a string; `yes`/`no`/`null` must stay strings.
    check(state("null", "yes\n", "off", 1e20))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    description=text,
    policy=text,
    env_value=text.filter(lambda v: "\x00" not in v),
    number=st.integers() | st.floats(allow_nan=False, allow_infinity=False),
)
def test_any_strings_read_back_identically(
    description: str, policy: str, env_value: str, number: Any
) -> None:
    if isinstance(number, int) and abs(number) > 2**53:
        number = 0
    check(state(description, policy, env_value, number))
