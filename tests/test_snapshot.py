"""Tests for store/domain/snapshot_*: Wassette-compatible state files (parse, validate, render)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError as PydanticValidationError

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.snapshot_messages import check_id
from wassette_state.store.domain.snapshot_model import (
    MAX_NESTING_DEPTH,
    MAX_SNAPSHOT_BYTES,
    SUPPORTED_MAJOR,
    Format,
    Snapshot,
    format_for,
)
from wassette_state.store.domain.snapshot_parse import parse_snapshot
from wassette_state.store.domain.snapshot_render import render_snapshot
from wassette_state.store.domain.state import valid_id

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "state"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "snapshots"
SECRET = "hunter2-s3cr3t-v4lue"
HASH = "e5e72beb4e3c6926d3dc9e3e2ef7833ba50cd919c2460a782b244fd071e920de"


def fake_policy_check(content: str, where: str) -> None:
    """Stands in for the lead's policy module: content "bad" is an invalid policy."""
    if content == "bad":
        raise ValidationError("bad policy: missing 'permissions'")


def base_doc() -> dict[str, Any]:
    return {
        "version": "0.1.0",
        "exported_at": 1764067200,
        "components": [
            {
                "component_id": "weather",
                "metadata": {
                    "component_id": "weather",
                    "tool_schemas": [
                        {
                            "name": "get-weather",
                            "description": "Weather for a city",
                            "inputSchema": {"type": "object"},
                        }
                    ],
                    "function_identifiers": [
                        {"package_name": None, "interface_name": None, "function_name": "get"}
                    ],
                    "tool_names": ["get-weather"],
                    "validation_stamp": {"file_size": 10, "mtime": 20, "content_hash": None},
                    "created_at": 30,
                },
                "policy": {
                    "source_uri": "file:///etc/wassette/weather.policy.yaml",
                    "policy_content": 'version: "1.0"\npermissions: {}\n',
                    "attached_at": 40,
                },
                "secrets": {"env_keys": ["API_KEY"]},
            }
        ],
        "environment": {"LOG_LEVEL": "info"},
        "paths": {"component_dir": "/srv/components", "secrets_dir": "/srv/secrets"},
    }


def as_json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def mutate(change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = base_doc()
    change(doc)
    return as_json(doc)


def comp(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = doc["components"][0]
    return result


def meta(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = comp(doc)["metadata"]
    return result


def nested_json(levels: int) -> str:
    return "[" * levels + "]" * levels


BILLION_LAUGHS = b"""\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

MINIMAL_YAML = b"""\
version: "0.1.0"
exported_at: 1
components: []
environment: {}
paths: {component_dir: /c, secrets_dir: /s}
"""


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting a dotted path (ints index lists) in the base document."""

    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _del(path: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]

    return change


def _two_components(doc: dict[str, Any]) -> None:
    doc["components"].append(copy.deepcopy(comp(doc)))


M = "components.0.metadata"

# (id, data, fmt, substrings expected in the message)
HOSTILE: list[Any] = [
    pytest.param(b'{"version": "0.1.0",', "json", ["invalid JSON at line 1"], id="invalid-json"),
    pytest.param(b"version: [1, 2\n", "yaml", ["invalid YAML (line"], id="invalid-yaml"),
    pytest.param(b'{"version": "\xff\xfe"}', "json", ["not valid UTF-8"], id="non-utf8"),
    pytest.param(b"[]", "json", ["top level: expected a mapping, got a list"], id="top-list"),
    pytest.param(b"just text\n", "yaml", ["top level: expected a mapping"], id="top-scalar"),
    pytest.param(b"", "json", ["empty"], id="empty-file"),
    pytest.param(b"# only a comment\n", "yaml", ["empty"], id="comment-only-yaml"),
    pytest.param(mutate(_del("version")), "json", ["version: missing required"], id="no-version"),
    pytest.param(
        mutate(_set("version", "")), "json", ["version: must be a non-empty"], id="v-empty"
    ),
    pytest.param(
        mutate(_set("version", "2.0.0")), "json", ["newer than this tool supports"], id="v-2.0.0"
    ),
    pytest.param(mutate(_set("version", "1.0.0")), "json", ["newer than this tool"], id="v-1.0.0"),
    pytest.param(mutate(_set("version", "2.3")), "json", ["newer than this tool"], id="v-2.3"),
    pytest.param(
        mutate(_set("version", 1)),
        "json",
        ["version: expected a string, got an integer"],
        id="v-int",
    ),
    pytest.param(mutate(_set("version", "abc")), "json", ["invalid version 'abc'"], id="v-junk"),
    pytest.param(
        mutate(_set("exported_at", "1764067200")),
        "json",
        ["exported_at: expected an integer, got a string"],
        id="exported-at-string",
    ),
    pytest.param(
        mutate(_set("exported_at", 2**63)), "json", ["exported_at: must be <="], id="exported-huge"
    ),
    pytest.param(
        mutate(_set("components", {"a": 1})),
        "json",
        ["components: expected a list, got a mapping"],
        id="components-not-list",
    ),
    pytest.param(
        mutate(_del("components.0.component_id")),
        "json",
        ["components[0].component_id: missing required field"],
        id="no-component-id",
    ),
    pytest.param(
        mutate(_set("components.0.component_id", "../x")),
        "json",
        ["components[0].component_id: invalid id '../x' (no '/'"],
        id="id-dotdot",
    ),
    pytest.param(
        mutate(_set("components.0.component_id", "a/b")),
        "json",
        ["invalid id 'a/b'"],
        id="id-slash",
    ),
    pytest.param(
        mutate(_set("components.0.component_id", "")), "json", ["invalid id ''"], id="id-empty"
    ),
    pytest.param(
        mutate(_set("components.0.component_id", "a" * 300)),
        "json",
        ["components[0].component_id: invalid id", "(300 chars)"],
        id="id-300-chars",
    ),
    pytest.param(
        mutate(_set("components.0.component_id", "a\x00b")), "json", ["invalid id"], id="id-nul"
    ),
    pytest.param(
        mutate(_set("components.0.component_id", 7)),
        "json",
        ["components[0].component_id: expected a string"],
        id="id-int",
    ),
    pytest.param(
        mutate(_two_components),
        "json",
        ["components[1].component_id: duplicate component id 'weather' (also at components[0])"],
        id="duplicate-ids",
    ),
    pytest.param(
        b'{"version": "0.1.0", "version": "0.1.0"}',
        "json",
        ["top level: duplicate key 'version'"],
        id="duplicate-json-key-top",
    ),
    pytest.param(
        b'{"version": "0.1.0", "components": [{"component_id": "a", "component_id": "b"}]}',
        "json",
        ["components[0]: duplicate key 'component_id'"],
        id="duplicate-json-key-nested",
    ),
    pytest.param(
        MINIMAL_YAML + b"environment: {}\n",
        "yaml",
        ["duplicate key 'environment'", "line 6"],
        id="duplicate-yaml-key",
    ),
    pytest.param(
        mutate(_set(f"{M}.tool_schemas", "get-weather")),
        "json",
        ["components[0].metadata.tool_schemas: expected a list, got a string"],
        id="tool-schemas-not-list",
    ),
    pytest.param(
        mutate(_del(f"{M}.tool_schemas.0.inputSchema")),
        "json",
        ["components[0].metadata.tool_schemas[0].inputSchema: missing required field"],
        id="tool-schema-no-input",
    ),
    pytest.param(
        mutate(_set(f"{M}.function_identifiers", ["get"])),
        "json",
        ["components[0].metadata.function_identifiers[0]: expected a mapping, got a string"],
        id="function-identifiers-strings",
    ),
    pytest.param(
        mutate(_set(f"{M}.validation_stamp.file_size", True)),
        "json",
        ["components[0].metadata.validation_stamp.file_size: expected an integer, got a boolean"],
        id="file-size-bool",
    ),
    pytest.param(
        mutate(_set(f"{M}.validation_stamp.file_size", -1)),
        "json",
        ["components[0].metadata.validation_stamp.file_size: must be >= 0"],
        id="file-size-negative",
    ),
    pytest.param(
        mutate(_set(f"{M}.validation_stamp.file_size", 1.5)),
        "json",
        ["file_size: expected an integer, got a number"],
        id="file-size-float",
    ),
    pytest.param(
        mutate(_set(f"{M}.validation_stamp.content_hash", "xyz")),
        "json",
        ["validation_stamp.content_hash: expected 64 lowercase hex characters, got 'xyz'"],
        id="content-hash-not-hex",
    ),
    pytest.param(
        mutate(_set(f"{M}.component_id", "other")),
        "json",
        ["components[0].metadata.component_id: 'other' does not match component_id 'weather'"],
        id="metadata-id-mismatch",
    ),
    pytest.param(
        mutate(_del("components.0.policy.policy_content")),
        "json",
        ["components[0].policy.policy_content: missing required field"],
        id="policy-no-content",
    ),
    pytest.param(
        mutate(_set("components.0.policy.policy_content", "bad")),
        "json",
        ["components[0].policy.policy_content: bad policy: missing 'permissions'"],
        id="policy-check-refuses",
    ),
    pytest.param(
        mutate(
            _set("components.0.secrets", {"env_keys": ["API_KEY"], "values": {"API_KEY": SECRET}})
        ),
        "json",
        ["components[0].secrets: contains secret values", "wassette-state secret set"],
        id="secrets-values",
    ),
    pytest.param(
        mutate(_set("components.0.secrets", {"env": {"API_KEY": SECRET}})),
        "json",
        ["components[0].secrets: contains secret values"],
        id="secrets-env",
    ),
    pytest.param(
        mutate(_set("components.0.secrets", {"env_keys": {"API_KEY": SECRET}})),
        "json",
        ["components[0].secrets: contains secret values"],
        id="secrets-env-keys-mapping",
    ),
    pytest.param(
        mutate(_set("components.0.secrets", {"env_keys": [{"API_KEY": SECRET}]})),
        "json",
        ["components[0].secrets: contains secret values"],
        id="secrets-env-keys-items-mappings",
    ),
    pytest.param(
        mutate(_set("components.0.secrets.env_keys", [f"API_KEY={SECRET}"])),
        "json",
        ["components[0].secrets.env_keys[0]: invalid environment variable name"],
        id="env-key-with-value",
    ),
    pytest.param(
        mutate(_set("components.0.secrets.env_keys", ["A", "A"])),
        "json",
        ["components[0].secrets.env_keys[1]: duplicate key 'A'"],
        id="env-key-duplicate",
    ),
    pytest.param(
        mutate(_set("environment", {"LOG_LEVEL": 3})),
        "json",
        ["environment.LOG_LEVEL: expected a string, got an integer"],
        id="environment-int-value",
    ),
    pytest.param(
        mutate(_set("environment", {"OK": "1", f"TOKEN={SECRET}": "x"})),
        "json",
        ["environment: key #2 is not a valid environment variable name"],
        id="environment-key-with-equals",
    ),
    pytest.param(
        mutate(_set("environment", {"LOG_LEVEL": "a\x00b"})),
        "json",
        ["environment.LOG_LEVEL: value contains a NUL character"],
        id="environment-nul-value",
    ),
    pytest.param(
        mutate(_set("paths", ["/srv/components", "/srv/secrets"])),
        "json",
        ["paths: expected a mapping, got a list"],
        id="paths-list",
    ),
    pytest.param(
        mutate(_del("paths.secrets_dir")),
        "json",
        ["paths.secrets_dir: missing required field"],
        id="paths-missing-dir",
    ),
    pytest.param(
        mutate(_set("surprise", 1)), "json", ["surprise: unknown field"], id="unknown-top-field"
    ),
    pytest.param(
        mutate(_set("components.0.placeholders", ["x"])),
        "json",
        ["components[0].placeholders: unknown field"],
        id="placeholders-not-settable",
    ),
    pytest.param(
        b"version: !!python/object/apply:os.system ['echo pwned']\n",
        "yaml",
        ["YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"],
        id="yaml-python-tag",
    ),
    pytest.param(
        b"version: !foo bar\n",
        "yaml",
        ["YAML tag '!foo' is not allowed", "version"],
        id="yaml-!foo",
    ),
    pytest.param(
        b"version: !!binary aGVsbG8=\n", "yaml", ["YAML tag", "not allowed"], id="yaml-binary"
    ),
    pytest.param(b"x: !!set {a, b}\n", "yaml", ["YAML tag", "not allowed"], id="yaml-set"),
    pytest.param(
        BILLION_LAUGHS, "yaml", ["aliases are not allowed in state files"], id="billion-laughs"
    ),
    pytest.param(
        MINIMAL_YAML.replace(b"environment: {}", b"environment: &e {}\nx: *e"),
        "yaml",
        ["aliases are not allowed in state files"],
        id="yaml-alias",
    ),
    pytest.param(
        b"a: 1\n---\nb: 2\n", "yaml", ["expected a single YAML document"], id="yaml-multi"
    ),
    pytest.param(
        MINIMAL_YAML + b"1: one\n", "yaml", ["mapping keys must be strings"], id="yaml-int-key"
    ),
    pytest.param(
        MINIMAL_YAML + b"<<: {a: 1}\n",
        "yaml",
        ["merge keys ('<<') are not allowed"],
        id="yaml-merge",
    ),
    pytest.param(
        ('{"version": "0.1.0", "x": ' + nested_json(10_000) + "}").encode(),
        "json",
        ["nests deeper than 64 levels"],
        id="json-deep-10000",
    ),
    pytest.param(
        ('{"a":' * 10_000 + "1" + "}" * 10_000).encode(),
        "json",
        ["nests deeper than 64 levels"],
        id="json-deep-objects",
    ),
    pytest.param(
        ("x: " + nested_json(10_000) + "\n").encode(),
        "yaml",
        ["nests deeper than 64 levels"],
        id="yaml-deep-flow",
    ),
    pytest.param(
        ("- " * 10_000 + "x\n").encode(),
        "yaml",
        ["nests deeper than 64 levels"],
        id="yaml-deep-block",
    ),
    pytest.param(
        b'{"version": "0.1.0", "exported_at": NaN}',
        "json",
        ["'NaN' is not allowed (numbers must be finite)"],
        id="json-nan",
    ),
    pytest.param(b'{"x": -Infinity}', "json", ["numbers must be finite"], id="json-infinity"),
    pytest.param(b'{"x": 1e999}', "json", ["numbers must be finite"], id="json-overflow-float"),
    pytest.param(MINIMAL_YAML + b"x: .nan\n", "yaml", ["numbers must be finite"], id="yaml-nan"),
    pytest.param(
        b'{"x": ' + b"9" * 5000 + b"}", "json", ["invalid JSON"], id="json-int-too-many-digits"
    ),
    pytest.param(
        MINIMAL_YAML + b"x: !!bool " + SECRET.encode() + b"\n",
        "yaml",
        ["invalid bool value (line 6, column 4)"],
        id="yaml-bad-explicit-bool",
    ),
    pytest.param(
        MINIMAL_YAML + b"x: " + b"9" * 5000 + b"\n",
        "yaml",
        ["invalid int value"],
        id="yaml-huge-int",
    ),
    pytest.param(b'version: "0.1.0"\x00\n', "yaml", ["invalid YAML"], id="yaml-nul-char"),
    pytest.param(
        b'{"version": "0.1.0", "x": "\\ud800"}',
        "json",
        ["x: string contains an unpaired surrogate"],
        id="json-lone-surrogate",
    ),
    pytest.param(
        mutate(_set("components.0.wasm_sha256", "3F" * 32)),
        "json",
        ["components[0].wasm_sha256: expected 64 lowercase hex characters"],
        id="wasm-sha256-upper",
    ),
    pytest.param(
        mutate(_set("components.0.wasm_sha256", "nothex")),
        "json",
        ["components[0].wasm_sha256: expected 64 lowercase hex"],
        id="wasm-sha256-not-hex",
    ),
    pytest.param(
        mutate(_set("as_of", {"seq": -1, "recorded_at": "2026-11-25T10:00:00.000000Z"})),
        "json",
        ["as_of.seq: must be >= 0"],
        id="as-of-seq-negative",
    ),
    pytest.param(
        mutate(_set("as_of", {"seq": 1, "recorded_at": "yesterday"})),
        "json",
        ["as_of.recorded_at: expected a UTC timestamp"],
        id="as-of-bad-time",
    ),
    pytest.param(
        mutate(_set("as_of", {"seq": 1, "recorded_at": "2026-13-45T10:00:00Z"})),
        "json",
        ["as_of.recorded_at: expected a UTC timestamp"],
        id="as-of-impossible-date",
    ),
    pytest.param(
        mutate(_set("as_of", {"seq": 1, "recorded_at": "2026-11-25T10:00:00Z", "tag": "../t"})),
        "json",
        ["as_of.tag: invalid tag '../t'"],
        id="as-of-bad-tag",
    ),
    pytest.param(
        mutate(_set("store", {"lineage": "not-a-uuid", "serial": 1})),
        "json",
        ["store.lineage: expected a lowercase UUID"],
        id="store-bad-lineage",
    ),
    pytest.param(
        mutate(_set("components.0.metadata", [])),
        "json",
        ["components[0].metadata: expected a mapping, got a list"],
        id="metadata-list",
    ),
]


@pytest.mark.parametrize(("data", "fmt", "expected"), HOSTILE)
def test_hostile_input_is_refused(data: bytes, fmt: Any, expected: list[str]) -> None:
    started = time.perf_counter()
    with pytest.raises(ValidationError) as info:
        parse_snapshot(data, fmt, policy_check=fake_policy_check)
    elapsed = time.perf_counter() - started
    message = str(info.value)
    for part in expected:
        assert part in message, message
    assert "\n" not in message
    assert len(message) < 300, message
    assert SECRET not in message
    # (a quadratic or exponential path takes minutes here; 3 s leaves room for a loaded machine)
    assert elapsed < 3.0, f"took {elapsed:.2f}s"


def test_there_are_enough_hostile_cases() -> None:
    assert len(HOSTILE) >= 30


def test_oversized_input_is_refused_before_parsing() -> None:
    data = b" " * (MAX_SNAPSHOT_BYTES + 1)
    started = time.perf_counter()
    with pytest.raises(ValidationError, match="too large"):
        parse_snapshot(data, "yaml")
    assert time.perf_counter() - started < 1.5


def test_secret_values_never_appear_in_yaml_messages() -> None:
    text = MINIMAL_YAML.replace(
        b"components: []",
        b"components:\n- component_id: a\n  secrets:\n    env_keys:\n      API_KEY: "
        + SECRET.encode(),
    )
    with pytest.raises(ValidationError) as info:
        parse_snapshot(text, "yaml")
    assert "components[0].secrets: contains secret values" in str(info.value)
    assert SECRET not in str(info.value)


def test_secret_values_refused_even_next_to_a_placeholder() -> None:
    doc = base_doc()
    comp(doc)["secrets"] = {"env_keys": ["..."], "values": {"A": SECRET}}
    with pytest.raises(ValidationError, match="contains secret values") as info:
        parse_snapshot(as_json(doc), "json")
    assert SECRET not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Conformance files (read in place, never copied)
# ---------------------------------------------------------------------------------------------


def test_wassette_written_json() -> None:
    data = (CONFORMANCE / "wassette-written.json").read_bytes()
    snap = parse_snapshot(data, "json", policy_check=fake_policy_check)
    assert snap.version == "0.1.0"
    assert snap.exported_at == 1763000000
    assert [c.component_id for c in snap.components] == ["fetch_rs", "get-weather-js"]
    fetch, weather = snap.components
    assert fetch.policy is None
    assert fetch.secrets is None
    assert fetch.placeholders == []
    assert fetch.metadata is not None
    assert fetch.metadata.validation_stamp.content_hash is None
    assert fetch.metadata.validation_stamp.file_size == 2051237
    assert fetch.metadata.tool_names == ["fetch"]
    assert fetch.metadata.function_identifiers[0].package_name is None
    assert fetch.metadata.function_identifiers[0].function_name == "fetch"
    assert fetch.metadata.tool_schemas[0].output_schema is not None
    assert weather.metadata is not None
    assert weather.metadata.function_identifiers[0].interface_name == "component:weather/weather"
    assert weather.metadata.validation_stamp.content_hash == (
        "9f2c4d0a6b7e8f90112233445566778899aabbccddeeff00112233445566778a"
    )
    assert weather.policy is not None
    assert weather.policy.source_uri == (
        "file:///home/dev/wassette/examples/get-weather-js/policy.yaml"
    )
    assert weather.policy.attached_at == 1762990200
    assert weather.policy.policy_content.startswith("$schema: ")
    assert weather.secrets is not None
    assert weather.secrets.env_keys == ["OPENWEATHER_API_KEY"]
    assert snap.environment == {}
    assert snap.paths.component_dir == "/home/dev/.local/share/wassette/components"
    assert snap.as_of is None
    assert snap.store is None


def test_wassette_written_json_renders_byte_identical() -> None:
    data = (CONFORMANCE / "wassette-written.json").read_bytes()
    snap = parse_snapshot(data, "json")
    rendered = render_snapshot(snap.to_doc(), "json")
    assert rendered.rstrip(b"\n") == data.rstrip(b"\n")
    # No additive keys appear on a Wassette-written file.
    doc = json.loads(rendered)
    assert set(doc) == {"version", "exported_at", "components", "environment", "paths"}
    assert all("source_uri" not in c and "wasm_sha256" not in c for c in doc["components"])


def test_wassette_docs_example_placeholders() -> None:
    data = (CONFORMANCE / "wassette-docs-example.yaml").read_bytes()
    calls: list[tuple[str, str]] = []

    def recording_check(content: str, where: str) -> None:
        calls.append((content, where))
        raise ValidationError("a placeholder must never reach the policy checker")

    snap = parse_snapshot(data, "yaml", policy_check=recording_check)
    assert calls == []
    assert snap.version == "0.3.4"
    assert snap.exported_at == 1699123456
    (example,) = snap.components
    assert example.component_id == "example-component"
    assert example.placeholders == [
        "components[0].metadata.tool_schemas",
        "components[0].metadata.function_identifiers",
        "components[0].policy.policy_content",
    ]
    assert example.metadata is None
    assert example.policy is None
    assert example.secrets is not None
    assert example.secrets.env_keys == ["API_KEY", "SECRET_TOKEN"]
    assert snap.paths.secrets_dir == "/home/user/.config/wassette/secrets"


def test_placeholder_component_cannot_be_rendered() -> None:
    doc = base_doc()
    meta(doc)["tool_schemas"] = ["..."]
    with pytest.raises(ValidationError, match=r"components\[0\].metadata.tool_schemas: cannot"):
        render_snapshot(doc, "yaml")
    # ...nor its parsed form: the metadata it stands for is unknown, and Wassette's reader
    # requires it.
    snap = parse_snapshot(as_json(doc), "json")
    assert snap.components[0].metadata is None
    with pytest.raises(ValidationError, match=r"components\[0\]\.metadata: expected a mapping"):
        render_snapshot(snap.to_doc(), "json")


def test_placeholder_in_validation_stamp_and_scalar_sections() -> None:
    doc = base_doc()
    meta(doc)["validation_stamp"]["file_size"] = "..."
    comp(doc)["source_uri"] = "..."
    snap = parse_snapshot(as_json(doc), "json")
    assert snap.components[0].placeholders == [
        "components[0].metadata.validation_stamp.file_size",
        "components[0].source_uri",
    ]
    assert snap.components[0].metadata is None
    assert snap.components[0].source_uri is None
    assert snap.components[0].policy is not None


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wassette-0.3.4.yaml", "minimal.json", "additive.yaml"])
def test_fixtures_are_canonical(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    fmt = format_for(name)
    snap = parse_snapshot(data, fmt, policy_check=fake_policy_check)
    assert render_snapshot(snap.to_doc(), fmt) == data
    other: Format = "json" if fmt == "yaml" else "yaml"
    assert parse_snapshot(render_snapshot(snap.to_doc(), other), other) == snap


def test_fixture_wassette_yaml_values() -> None:
    snap = parse_snapshot((FIXTURES / "wassette-0.3.4.yaml").read_bytes(), "yaml")
    assert snap.version == "0.3.4"
    assert [c.component_id for c in snap.components] == ["fetch-rs", "weather"]
    weather = snap.components[1]
    assert weather.policy is not None
    assert weather.policy.source_uri == "file:///etc/wassette/weather.policy.yaml"
    assert weather.policy.policy_content.endswith('- key: "OPENWEATHER_API_KEY"\n')
    assert weather.metadata is not None
    assert weather.metadata.validation_stamp.content_hash is None
    assert snap.environment == {"LOG_LEVEL": "info", "RUST_LOG": "wassette=debug"}


def test_fixture_minimal() -> None:
    snap = parse_snapshot((FIXTURES / "minimal.json").read_bytes(), "json")
    assert snap.components == []
    assert snap.environment == {}
    assert snap.exported_at == 0


def test_fixture_additive_fields() -> None:
    snap = parse_snapshot((FIXTURES / "additive.yaml").read_bytes(), "yaml")
    assert snap.as_of is not None
    assert snap.store is not None
    assert snap.as_of.seq == 1234
    assert snap.as_of.recorded_at == "2026-11-25T10:00:00.000000Z"
    assert snap.as_of.tag == "release-1.2"
    assert snap.store.lineage == "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
    assert snap.store.serial == 1234
    echo, weather = snap.components
    assert echo.wasm_sha256 == "0" * 64  # quoted in YAML, so it stays a string
    assert echo.source_uri == "oci://ghcr.io/example/echo:2.0.0"
    assert echo.secrets is not None
    assert echo.secrets.env_keys == ["A_TOKEN", "Z_KEY"]
    assert weather.wasm_sha256 == HASH
    assert weather.source_uri == "file:///srv/weather.wasm"
    assert weather.metadata is not None
    tool = weather.metadata.tool_schemas[0]
    assert tool.model_extra == {"title": "Weather", "annotations": {"readOnlyHint": True}}


# ---------------------------------------------------------------------------------------------
# Behaviour details
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("state.yaml", "yaml"),
        ("STATE.YML", "yaml"),
        ("dir.yaml/state.Yaml", "yaml"),
        ("state.json", "json"),
        ("state", "json"),
        ("-", "json"),
        ("state.yaml.bak", "json"),
    ],
)
def test_format_for(path: str, fmt: str) -> None:
    assert format_for(path) == fmt


def test_check_id() -> None:
    # Every file stem Wassette 0.8.0 accepts, but nothing that cannot be a safe file name.
    for good in ["a", "A9._-" + "z" * 123, "Weird+Name@1", "a b", "é", "_x", "a" * 238]:
        check_id(good, "x")
    for bad in ["", ".a", "-a", "a/b", "a\\b", "a\x00b", "a\nb", ".", "..", "a" * 239, "_instance"]:
        with pytest.raises(ValidationError, match=r"^where: invalid id"):
            check_id(bad, "where")
    assert not valid_id("é" * 120)  # 240 bytes in UTF-8
    assert SUPPORTED_MAJOR == 0


def test_supported_versions() -> None:
    for version in ["0.1.0", "0.3.4", "0.99", "0", "0.4.0-rc.1"]:
        doc = base_doc()
        doc["version"] = version
        assert parse_snapshot(as_json(doc), "json").version == version


def test_bom_and_crlf_are_tolerated() -> None:
    data = b"\xef\xbb\xbf" + MINIMAL_YAML.replace(b"\n", b"\r\n")
    assert parse_snapshot(data, "yaml").paths.component_dir == "/c"
    assert parse_snapshot(b"\xef\xbb\xbf" + as_json(base_doc()), "json").version == "0.1.0"


def test_unquoted_yaml_timestamp_stays_a_string() -> None:
    data = MINIMAL_YAML + b"as_of: {seq: 1, recorded_at: 2026-11-25T10:00:00.000000Z}\n"
    snap = parse_snapshot(data, "yaml")
    assert snap.as_of is not None
    assert snap.as_of.recorded_at == "2026-11-25T10:00:00.000000Z"


def test_absent_optional_fields_are_null() -> None:
    """What Wassette's reader takes as absent (its `Option` fields) may be left out."""
    doc = base_doc()
    del meta(doc)["validation_stamp"]["content_hash"]
    del comp(doc)["policy"]
    del comp(doc)["secrets"]
    snap = parse_snapshot(as_json(doc), "json")
    metadata = snap.components[0].metadata
    assert metadata is not None
    assert metadata.validation_stamp.content_hash is None
    assert snap.components[0].policy is None
    assert snap.components[0].secrets is None


@pytest.mark.parametrize(
    "path",
    [
        ("metadata",),
        ("metadata", "component_id"),
        ("metadata", "tool_schemas"),
        ("metadata", "function_identifiers"),
        ("metadata", "tool_names"),
        ("metadata", "validation_stamp"),
        ("metadata", "validation_stamp", "file_size"),
        ("metadata", "validation_stamp", "mtime"),
        ("metadata", "created_at"),
    ],
    ids=".".join,
)
def test_fields_wassettes_reader_requires_are_required(path: tuple[str, ...]) -> None:
    """Wassette's own reader (serde, no defaults) refuses a file without any of these."""
    doc = base_doc()
    node: Any = comp(doc)
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    where = "components[0]." + ".".join(path)
    with pytest.raises(ValidationError, match=re.escape(f"{where}: missing required field")):
        parse_snapshot(as_json(doc), "json")
    comp(doc)["metadata"] = None
    with pytest.raises(ValidationError, match=r"components\[0\]\.metadata: expected a mapping"):
        parse_snapshot(as_json(doc), "json")


def test_order_is_normalized() -> None:
    doc = base_doc()
    second = copy.deepcopy(comp(doc))
    second["component_id"] = "alpha"
    second["metadata"]["component_id"] = "alpha"
    second["secrets"] = {"env_keys": ["Z", "B", "M"]}
    doc["components"].append(second)
    doc["environment"] = {"Z": "1", "A": "2"}
    snap = parse_snapshot(as_json(doc), "json")
    assert [c.component_id for c in snap.components] == ["alpha", "weather"]
    assert snap.components[0].secrets is not None
    assert snap.components[0].secrets.env_keys == ["B", "M", "Z"]
    assert list(snap.environment) == ["A", "Z"]
    assert list(snap.to_doc()) == ["version", "exported_at", "components", "environment", "paths"]


def test_policy_check_paths_use_file_positions() -> None:
    doc = base_doc()
    second = copy.deepcopy(comp(doc))
    second["component_id"] = "alpha"  # sorts first, but sits at index 1 in the file
    second["metadata"]["component_id"] = "alpha"
    second["policy"]["policy_content"] = "bad"
    doc["components"].append(second)
    seen: list[str] = []

    def check(content: str, where: str) -> None:
        seen.append(where)
        fake_policy_check(content, where)

    with pytest.raises(ValidationError) as info:
        parse_snapshot(as_json(doc), "json", policy_check=check)
    assert seen == [
        "components[0].policy.policy_content",
        "components[1].policy.policy_content",
    ]
    assert str(info.value).startswith("components[1].policy.policy_content: bad policy")


def test_policy_check_message_already_prefixed_is_kept() -> None:
    def check(content: str, where: str) -> None:
        raise ValidationError(f"{where}: permissions.network: expected a mapping\n(details)")

    with pytest.raises(ValidationError) as info:
        parse_snapshot(as_json(base_doc()), "json", policy_check=check)
    assert str(info.value) == (
        "components[0].policy.policy_content: permissions.network: expected a mapping (details)"
    )


def test_nesting_limit_boundary() -> None:
    # Containers above the inputSchema value: document, components, component, metadata,
    # tool_schemas, tool, inputSchema -> 7 levels; 57 more lists reach exactly 64.
    for fmt in ("json", "yaml"):
        doc = base_doc()
        meta(doc)["tool_schemas"][0]["inputSchema"] = {"x": json.loads(nested_json(57))}
        data = render_snapshot(doc, fmt)
        parse_snapshot(data, fmt)
        meta(doc)["tool_schemas"][0]["inputSchema"] = {"x": json.loads(nested_json(58))}
        with pytest.raises(ValidationError, match=f"deeper than {MAX_NESTING_DEPTH}"):
            render_snapshot(doc, fmt)
        text = json.dumps(doc)
        with pytest.raises(ValidationError, match=f"deeper than {MAX_NESTING_DEPTH}"):
            parse_snapshot(text.encode(), fmt)  # JSON is valid YAML too


def test_json_depth_check_ignores_brackets_in_strings() -> None:
    doc = base_doc()
    doc["environment"] = {"BRACKETS": "[" * 500 + "{" * 500 + '\\"'}
    assert parse_snapshot(as_json(doc), "json").environment["BRACKETS"].startswith("[[[")


def test_unterminated_string_with_escapes_is_fast() -> None:
    data = b'{"x": "' + b'\\"' * 2_000_000
    started = time.perf_counter()
    with pytest.raises(ValidationError, match="invalid JSON"):
        parse_snapshot(data, "json")
    assert time.perf_counter() - started < 6.0


def test_render_json_and_yaml_shapes() -> None:
    doc = base_doc()
    doc["as_of"] = {"seq": 5, "recorded_at": "2026-11-25T10:00:00.000000Z", "tag": None}
    doc["store"] = {"lineage": "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", "serial": 5}
    comp(doc)["wasm_sha256"] = HASH
    comp(doc)["source_uri"] = "file:///srv/weather.wasm"
    # Keys given out of canonical order come back in canonical order.
    shuffled = dict(reversed(list(doc.items())))
    rendered = render_snapshot(shuffled, "json")
    assert rendered.endswith(b"}\n")
    loaded = json.loads(rendered)
    assert list(loaded) == [
        "version",
        "exported_at",
        "components",
        "environment",
        "paths",
        "as_of",
        "store",
    ]
    assert list(loaded["components"][0]) == [
        "component_id",
        "metadata",
        "policy",
        "secrets",
        "source_uri",
        "wasm_sha256",
    ]
    text = render_snapshot(shuffled, "yaml").decode()
    assert '    policy_content: |\n      version: "1.0"\n      permissions: {}\n' in text
    assert "recorded_at: '2026-11-25T10:00:00.000000Z'" in text
    assert yaml.safe_load(text) == loaded


def test_render_never_emits_anchors() -> None:
    doc = base_doc()
    shared: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}
    tool = meta(doc)["tool_schemas"][0]
    tool["inputSchema"] = shared
    tool["outputSchema"] = shared
    second = dict(tool, name="other")
    meta(doc)["tool_schemas"].append(second)
    meta(doc)["tool_names"].append("other")
    text = render_snapshot(doc, "yaml")
    assert b"&id" not in text
    assert b"*id" not in text
    parse_snapshot(text, "yaml")


def test_render_validates_the_document() -> None:
    doc = base_doc()
    comp(doc)["component_id"] = "../x"
    with pytest.raises(ValidationError, match=r"components\[0\].component_id: invalid id"):
        render_snapshot(doc, "json")
    doc = base_doc()
    doc["environment"] = {"A": float("nan")}
    with pytest.raises(ValidationError, match="finite"):
        render_snapshot(doc, "yaml")
    doc = base_doc()
    doc["environment"] = {"A": ("tuple",)}
    with pytest.raises(ValidationError, match="not a JSON value"):
        render_snapshot(doc, "json")
    with pytest.raises(ValidationError, match="unknown state file format"):
        render_snapshot(base_doc(), "toml")  # type: ignore[arg-type]


TRICKY_STRINGS = [
    "tab\there",
    "cr\r\nlf",
    "nel\x85x",
    "ls\u2028ps\u2029",
    "  leading\nspaces",
    "trailing  \nspaces  ",
    "no final newline\nx",
    "two final newlines\n\n",
    "\n",
    "",
    " ",
    "- looks: [like, yaml]",
    "# comment",
    "'quotes' and \"quotes\"",
    "\ufeffbom",
    "null",
    "0x1F",
    "1_000",
    "2026-11-25",
    "yes",
    "~",
    "é ü 日本 😀",
    "\x00nul",
    "x" * 300,
]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_tricky_strings_round_trip(fmt: Any) -> None:
    doc = base_doc()
    env_values = [text for text in TRICKY_STRINGS if "\x00" not in text]  # NUL: refused
    doc["environment"] = {f"K{i}": text for i, text in enumerate(env_values)}
    comp(doc)["policy"]["policy_content"] = "\n".join(TRICKY_STRINGS)
    meta(doc)["tool_schemas"][0]["inputSchema"] = {text: text for text in TRICKY_STRINGS}
    first = render_snapshot(doc, fmt)
    snap = parse_snapshot(first, fmt)
    assert [snap.environment[f"K{i}"] for i in range(len(env_values))] == env_values
    assert snap.components[0].metadata is not None
    assert list(snap.components[0].metadata.tool_schemas[0].input_schema) == TRICKY_STRINGS
    assert render_snapshot(snap.to_doc(), fmt) == first


PURE_PYTHON_YAML = """
import sys
import yaml
del yaml.CSafeLoader, yaml.CSafeDumper  # as on a machine without libyaml
sys.path.insert(0, "tests")
import test_snapshot as t
from wassette_state.store.domain.snapshot_yaml import _StateLoader
assert _StateLoader.__mro__[1] is yaml.SafeLoader
for case in t.HOSTILE:
    data, fmt, expected = case.values
    if fmt == "yaml":
        t.test_hostile_input_is_refused(data, fmt, expected)
t.test_wassette_docs_example_placeholders()
for name in ("wassette-0.3.4.yaml", "additive.yaml"):
    t.test_fixtures_are_canonical(name)
t.test_tricky_strings_round_trip("yaml")
t.test_render_never_emits_anchors()
t.test_render_parse_render_is_a_fixed_point()
print("ok")
"""


def test_pure_python_yaml_fallback() -> None:
    """The module must behave the same where PyYAML has no libyaml (SafeLoader/SafeDumper)."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", PURE_PYTHON_YAML],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_to_doc_is_a_copy() -> None:
    snap = parse_snapshot(as_json(base_doc()), "json")
    doc = snap.to_doc()
    doc["components"][0]["metadata"]["tool_schemas"][0]["inputSchema"]["type"] = "changed"
    doc["environment"]["NEW"] = "x"
    assert snap.to_doc() == parse_snapshot(as_json(base_doc()), "json").to_doc()


def test_snapshot_is_frozen() -> None:
    snap = parse_snapshot(as_json(base_doc()), "json")
    with pytest.raises(PydanticValidationError, match="frozen"):
        snap.version = "0.2.0"
    assert isinstance(snap, Snapshot)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

texts = st.text(max_size=30).filter(lambda s: s != "...")
non_empty = st.text(min_size=1, max_size=30).filter(lambda s: s != "..." and "\x00" not in s)
multiline = st.lists(
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=20), max_size=5
).map("\n".join)
ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")
env_names = st.text(
    st.characters(blacklist_characters="=\x00", blacklist_categories=["Cs"]),
    min_size=1,
    max_size=12,
).filter(lambda s: s != "...")
ints = st.integers(min_value=0, max_value=2**63 - 1)
hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def tool_schemas(draw: st.DrawFn) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": draw(non_empty)}
    if draw(st.booleans()):
        tool["description"] = draw(multiline.filter(lambda s: s != "..."))
    tool["inputSchema"] = draw(st.dictionaries(texts, json_values, max_size=3))
    if draw(st.booleans()):
        tool["outputSchema"] = draw(st.dictionaries(texts, json_values, max_size=3))
    if draw(st.booleans()):
        tool["annotations"] = draw(json_values)
    return tool


@st.composite
def components(draw: st.DrawFn) -> dict[str, Any]:
    cid = draw(ids)
    metadata = {
        "component_id": cid,
        "tool_schemas": draw(st.lists(tool_schemas(), max_size=2)),
        "function_identifiers": draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "package_name": st.none() | texts,
                        "interface_name": st.none() | texts,
                        "function_name": non_empty,
                    }
                ),
                max_size=2,
            )
        ),
        "tool_names": draw(st.lists(non_empty, max_size=2)),
        "validation_stamp": {
            "file_size": draw(ints),
            "mtime": draw(ints),
            "content_hash": draw(st.none() | hexes),
        },
        "created_at": draw(ints),
    }
    # Wassette's reader requires a component's metadata
    doc: dict[str, Any] = {
        "component_id": cid,
        "metadata": metadata,
        "policy": None,
        "secrets": None,
    }
    if draw(st.booleans()):
        doc["policy"] = {
            "source_uri": draw(non_empty),
            "policy_content": draw(multiline.filter(lambda s: s != "...")),
            "attached_at": draw(ints),
        }
    if draw(st.booleans()):
        doc["secrets"] = {"env_keys": draw(st.lists(env_names, unique=True, max_size=3))}
    if draw(st.booleans()):
        doc["source_uri"] = draw(non_empty)
    if draw(st.booleans()):
        doc["wasm_sha256"] = draw(hexes)
    return doc


@st.composite
def snapshot_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": draw(st.from_regex(r"\A0\.[0-9]{1,3}\.[0-9]{1,3}\Z")),
        "exported_at": draw(ints),
        "components": draw(
            st.lists(components(), max_size=3, unique_by=lambda c: c["component_id"])
        ),
        "environment": draw(
            st.dictionaries(env_names, texts.filter(lambda s: "\x00" not in s), max_size=3)
        ),
        "paths": {"component_dir": draw(non_empty), "secrets_dir": draw(non_empty)},
    }
    if draw(st.booleans()):
        moment = draw(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)))
        doc["as_of"] = {
            "seq": draw(ints),
            "recorded_at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "tag": draw(st.none() | ids),
        }
    if draw(st.booleans()):
        doc["store"] = {"lineage": str(draw(st.uuids())), "serial": draw(ints)}
    return doc


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(snapshot_docs())
def test_render_parse_render_is_a_fixed_point(doc: dict[str, Any]) -> None:
    parsed: dict[str, Snapshot] = {}
    fmt: Format
    for fmt in ("json", "yaml"):
        first = render_snapshot(doc, fmt)
        snap = parse_snapshot(first, fmt)
        second = render_snapshot(snap.to_doc(), fmt)
        assert second == first
        assert parse_snapshot(second, fmt) == snap
        parsed[fmt] = snap
    assert parsed["json"] == parsed["yaml"]


FIELD_NAMES = [
    "version",
    "exported_at",
    "components",
    "environment",
    "paths",
    "as_of",
    "store",
    "component_id",
    "metadata",
    "policy",
    "secrets",
    "env_keys",
]
garbage_docs = st.dictionaries(st.sampled_from(FIELD_NAMES) | texts, json_values, max_size=6)


def _parse_or_refuse(data: bytes, fmt: Any) -> None:
    message = ""
    try:
        parse_snapshot(data, fmt, policy_check=fake_policy_check)
    except ValidationError as exc:
        message = str(exc)
    assert "\n" not in message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["json", "yaml"]))
def test_random_bytes_raise_only_validation_error(data: bytes, fmt: str) -> None:
    _parse_or_refuse(data, fmt)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="[]{}:-&*!|>'\"#%@`,?~ \n\tab01.=\\", max_size=80))
def test_random_yaml_ish_text_raises_only_validation_error(text: str) -> None:
    _parse_or_refuse(text.encode(), "yaml")
    _parse_or_refuse(text.encode(), "json")


@settings(max_examples=200, deadline=None)
@given(garbage_docs, st.sampled_from(["json", "yaml"]))
def test_random_documents_raise_only_validation_error(doc: dict[str, Any], fmt: str) -> None:
    _parse_or_refuse(json.dumps(doc).encode(), fmt)
    _parse_or_refuse(json.dumps({**base_doc(), **doc}).encode(), fmt)


@settings(max_examples=100, deadline=None)
@given(snapshot_docs(), st.data())
def test_mutated_documents_raise_only_validation_error(doc: dict[str, Any], data: Any) -> None:
    rendered = render_snapshot(doc, "json")
    if len(rendered) < 2:
        return
    cut = data.draw(st.integers(min_value=0, max_value=len(rendered) - 1))
    junk = data.draw(st.binary(max_size=4))
    _parse_or_refuse(rendered[:cut] + junk + rendered[cut + 1 :], "json")
    yaml_text = render_snapshot(doc, "yaml")
    cut = data.draw(st.integers(min_value=0, max_value=len(yaml_text) - 1))
    _parse_or_refuse(yaml_text[:cut] + junk + yaml_text[cut + 1 :], "yaml")
