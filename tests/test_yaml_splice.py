"""Metadata lines of an exported YAML file are read with `json`: always exactly what the YAML
reader gives, and every case where it might not is left to the YAML reader."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.snapshot_parse import parse_snapshot
from wassette_state.store.domain.snapshot_yaml import _load_yaml, _load_yaml_spliced
from wassette_state.store.domain.state import Component, Metadata, Paths, Policy, State
from wassette_state.store.usecases.exporter import AsOf, render_state_yaml, state_doc

HASH = "c" * 64


def metadata(cid: str, description: str, extra: Any = 1) -> dict[str, Any]:
    return {
        "component_id": cid,
        "tool_schemas": [
            {
                "name": f"tool-{i}",
                "description": description,
                "inputSchema": {
                    "type": "object",
                    "properties": {"x": {"type": "number", "maximum": extra}},
                    "required": ["x"],
                },
            }
            for i in range(3)
        ],
        "function_identifiers": [
            {"package_name": None, "interface_name": None, "function_name": f"tool-{i}"}
            for i in range(3)
        ],
        "tool_names": [f"tool-{i}" for i in range(3)],
        "validation_stamp": {"file_size": 10, "mtime": 20, "content_hash": HASH},
        "created_at": 30,
    }


def exported(description: str = "Fetch a page.", extra: Any = 1, policy: str = "a: 1\n") -> str:
    comps = {
        cid: Component(
            cid,
            f"file:///srv/{cid}.wasm",
            HASH,
            Metadata(metadata(cid, description, extra)),
            Policy(policy, "file:///p.yaml", 5),
            ("API_KEY",),
        )
        for cid in ("alpha", "beta")
    }
    doc = state_doc(
        State(comps, {"LOG": "debug"}, Paths("/c", "/s")),
        component_dir="/c",
        secrets_dir="/s",
        as_of=AsOf(7, "2026-11-25T10:00:00.000000Z", None),
        lineage="0b6f1a52-93c4-4a0c-8a8e-3a43d0a8b6a1",
        at=1764067200,
        lazy=True,
    )
    return render_state_yaml(doc).decode()


def outcome(text: str, splice: bool) -> Any:
    try:
        return ("ok", _load_yaml(text, splice=splice))
    except ValidationError as e:
        return ("error", str(e))


def same_as_yaml(text: str) -> Any:
    fast, slow = outcome(text, True), outcome(text, False)
    assert fast == slow
    return fast


def test_an_export_takes_the_json_path_and_reads_the_same() -> None:
    text = exported()
    spliced = _load_yaml_spliced(text)
    assert spliced is not None
    assert spliced == outcome(text, splice=False)[1]
    assert parse_snapshot(text.encode(), "yaml").components[0].component_id == "alpha"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    description=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",))),
    extra=st.one_of(
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.none(),
        st.text(max_size=5),
    ),
)
def test_any_exported_text_reads_as_the_yaml_reader_reads_it(description: str, extra: Any) -> None:
    same_as_yaml(exported(description, extra))


@pytest.mark.parametrize("number", [1e16, 1e-7, 1.5e-7, -2.5e300])
def test_exponent_numbers_are_left_to_the_yaml_reader(number: float) -> None:
    text = exported()
    line = next(ln for ln in text.splitlines() if ln.startswith("  metadata: "))
    doc = json.loads(line[len("  metadata: ") :])
    doc["created_at"] = number  # YAML 1.1 reads "1e+16" as a string
    edited = text.replace(line, "  metadata: " + json.dumps(doc, separators=(",", ":")), 1)
    kind, value = same_as_yaml(edited)
    read = value["components"][0]["metadata"]["created_at"]
    # Without a dot YAML 1.1 sees no float: the spliced path must not have turned it into one.
    assert kind == "ok" and isinstance(read, str) == ("." not in repr(number))


def replace_first_metadata(text: str, new: str) -> str:
    line = next(ln for ln in text.splitlines() if ln.startswith("  metadata: "))
    return text.replace(line, "  metadata: " + new, 1)


def long_json(**extra: Any) -> str:
    doc = {**metadata("alpha", "x" * 300), **extra}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(
    "new",
    [
        long_json().replace(",", ", ", 3),  # not the exporter's compact form
        long_json()[:-1] + ',"created_at":31}',  # a repeated key
        long_json(note="line\u2028break"),  # a YAML line break inside a string
        long_json(note="bom\ufeffin"),
        long_json(note="del\x7f"),
        long_json(note="nel\x85"),
        long_json(deep=json.loads("[" * 70 + "]" * 70)),  # deeper than the limit
        long_json(deep=json.loads("[" * 58 + "]" * 58)),  # just within it
        long_json()[:-1],  # broken JSON
    ],
)
def test_doubtful_lines_read_exactly_as_yaml_reads_them(new: str) -> None:
    same_as_yaml(replace_first_metadata(exported(), new))


def test_a_metadata_lookalike_inside_a_block_scalar_stays_text() -> None:
    lookalike = "  metadata: " + long_json()
    text = exported(policy=f"version: '1.0'\n{lookalike}\n")
    kind, value = same_as_yaml(text)
    assert kind == "ok"
    assert lookalike.strip() in value["components"][0]["policy"]["policy_content"]


def test_a_metadata_line_elsewhere_is_not_mistaken_for_a_component() -> None:
    text = exported().replace("environment:\n", "environment:\n  metadata: " + long_json() + "\n")
    # Not a component's metadata: the YAML reader decides (a mapping where a string belongs).
    same_as_yaml(text)
    with pytest.raises(ValidationError):
        parse_snapshot(text.encode(), "yaml")
