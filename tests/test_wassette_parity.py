"""Metadata parity with the real Wassette 0.8.0 (DESIGN §4.2 and §7; issue 11, point 2).

For every component the tests use - each WAT fixture kind of tests/wasm_fixtures.py,
examples/weather.wasm and a componentize-py build - the `<id>.metadata.json` this store writes
on `component attach` must equal the one Wassette writes on `component load` of the same bytes,
in every field and in key order, except:
- `created_at` and `validation_stamp.mtime` (times), and `validation_stamp.content_hash`
  (Wassette writes null, this store the sha256);
- the heap address Wassette prints in the description of a resource handle
  (`ResourceType { kind: Uninstantiated { component: 94…, ...`), different on every Wassette
  run, so no writer can reproduce it: it is compared as `component: <address>`.
The state export must carry the same metadata as the file. Wassette writes its file as
`json.dumps(doc, indent=2, ensure_ascii=False)` would (no trailing newline); so does this store.

Our side is attached into one store (one CLI call per component plus one export); Wassette loads
each component into a directory of its own (about 20 ms a call).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Env, ok
from real_wassette import TOOL, RealWassette

from tests import wasm_fixtures as fx

EXAMPLE = REPO / "examples" / "weather.wasm"

# Fields whose values legitimately differ (see the module docstring).
IGNORED = {("created_at",), ("validation_stamp", "mtime"), ("validation_stamp", "content_hash")}
_RESOURCE_ADDRESS = re.compile(r"(ResourceType \{ kind: Uninstantiated \{ component: )\d+")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 160 else text[:157] + "..."


def _path(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path) or "."


def differences(ours: Any, theirs: Any, path: tuple[str | int, ...] = ()) -> list[str]:
    """Every field where `ours` differs from Wassette's `theirs`: values, key sets, key order,
    list lengths (one line each, with its path), except the IGNORED fields."""
    if path in IGNORED:
        return []
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out: list[str] = []
        for key in theirs:
            if key not in ours and (*path, key) not in IGNORED:
                out.append(f"{_path((*path, key))}: missing (Wassette: {_show(theirs[key])})")
        for key in ours:
            if key not in theirs:
                out.append(f"{_path((*path, key))}: not written by Wassette ({_show(ours[key])})")
        if [k for k in ours if k in theirs] != [k for k in theirs if k in ours]:
            out.append(f"{_path(path)}: key order {list(ours)} != Wassette's {list(theirs)}")
        for key in ours:
            if key in theirs:
                out += differences(ours[key], theirs[key], (*path, key))
        return out
    if isinstance(ours, list) and isinstance(theirs, list):
        out = []
        if len(ours) != len(theirs):
            out.append(f"{_path(path)}: {len(ours)} items != Wassette's {len(theirs)}")
        for index, (mine, its) in enumerate(zip(ours, theirs, strict=False)):
            out += differences(mine, its, (*path, index))
        return out
    if isinstance(ours, str) and isinstance(theirs, str):
        ours, theirs = (_RESOURCE_ADDRESS.sub(r"\1<address>", s) for s in (ours, theirs))
    if type(ours) is not type(theirs) or ours != theirs:
        return [f"{_path(path)}: {_show(ours)} != Wassette's {_show(theirs)}"]
    return []


def assert_same_metadata(ours: Any, theirs: Any, what: str) -> None:
    found = differences(ours, theirs)
    assert not found, f"{what}: {len(found)} field(s) differ from Wassette 0.8.0's:\n" + "\n".join(
        found
    )


def test_differences_lists_every_differing_field() -> None:
    theirs = {
        "component_id": "x",
        "tool_schemas": [{"name": "a", "description": "d", "inputSchema": {"type": "object"}}],
        "tool_names": ["a", "b"],
        "validation_stamp": {"file_size": 1, "mtime": 5, "content_hash": None},
        "created_at": 5,
    }
    ours = {
        "tool_schemas": [{"description": "D", "name": "a", "inputSchema": {"type": "object"}}],
        "component_id": "x",
        "tool_names": ["a"],
        "validation_stamp": {"file_size": 1, "mtime": 6, "content_hash": "ab"},
        "created_at": 6,
        "extra": 1,
    }
    found = differences(ours, theirs)
    assert found[0] == ".extra: not written by Wassette (1)"
    assert found[1].startswith(".: key order ['tool_schemas', 'component_id'")
    assert found[2:] == [
        ".tool_schemas[0]: key order ['description', 'name', 'inputSchema'] != Wassette's "
        "['name', 'description', 'inputSchema']",
        '.tool_schemas[0].description: "D" != Wassette\'s "d"',
        ".tool_names: 1 items != Wassette's 2",
    ]
    address = "ResourceType { kind: Uninstantiated { component: %s, index: ResourceIndex(1) } }"
    assert differences(address % 0, address % 93825955841664) == []
    assert differences(address % 0, (address % 9).replace("(1)", "(2)")) != []


def with_their_unreproducible_values(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    """Our document with Wassette's values in the IGNORED fields and resource addresses,
    pretty-printed as Wassette prints: equal to Wassette's file when everything else is."""
    doc = json.loads(json.dumps(ours))
    doc["created_at"] = theirs["created_at"]
    for key in ("mtime", "content_hash"):
        doc["validation_stamp"][key] = theirs["validation_stamp"][key]
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    addresses = iter(m.group(0) for m in _RESOURCE_ADDRESS.finditer(json.dumps(theirs)))
    return _RESOURCE_ADDRESS.sub(lambda _: next(addresses), text)


# ---------------------------------------------------------------------------------------------
# the components, both sides

CASES: dict[str, Path | str] = {kind: kind for kind in fx.COMPONENT_KINDS}
CASES["examples/weather.wasm"] = EXAMPLE


def test_every_fixture_kind_is_covered() -> None:
    """Every kind is either compared here or refused by both (test_what_wassette_cannot_load)."""
    assert set(fx.KINDS) == set(fx.COMPONENT_KINDS) | set(REFUSED)
    assert set(fx.COMPONENT_KINDS) < set(CASES)


@dataclass
class Side:
    raw: str  # the metadata file's text
    doc: dict[str, Any]


@dataclass
class Sites:
    ours: Env
    wasm_paths: dict[str, Path] = field(default_factory=dict)
    attached: dict[str, Any] = field(default_factory=dict)  # case -> CLI Result
    exported: dict[str, Any] = field(default_factory=dict)  # component id -> metadata
    theirs: dict[str, Any] = field(default_factory=dict)  # case -> Side or a failed Result


def component_id(case: str) -> str:
    return Path(case).stem if case.endswith(".wasm") else f"fx-{case}"


def read_side(path: Path) -> Side:
    raw = path.read_text(encoding="utf-8")
    return Side(raw, json.loads(raw))


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Sites:
    root = tmp_path_factory.mktemp("parity")
    (root / "ours").mkdir()
    src = root / "src"
    src.mkdir()
    out = Sites(Env(root / "ours"))
    for case, source in CASES.items():
        if isinstance(source, Path):
            path = source
        else:
            path = src / f"{component_id(case)}.wasm"
            fx.write_component(path, source)
        out.wasm_paths[case] = path
        out.attached[case] = out.ours.run("component", "attach", str(path))
        (root / case.replace("/", "_")).mkdir()
        wassette = RealWassette(Env(root / case.replace("/", "_")))
        loaded = wassette.run("component", "load", path.as_uri())
        metadata = wassette.env.component_dir / f"{component_id(case)}.metadata.json"
        out.theirs[case] = read_side(metadata) if loaded.code == 0 else loaded
    exported = json.loads(ok(out.ours.run("state", "export", "-")).out)
    out.exported = {c["component_id"]: c["metadata"] for c in exported["components"]}
    return out


def ours_and_theirs(sites: Sites, case: str) -> tuple[Side, Side]:
    ok(sites.attached[case])
    theirs = sites.theirs[case]
    assert isinstance(theirs, Side), f"Wassette could not load {case}: {theirs.err[-2000:]}"
    return read_side(sites.ours.component_dir / f"{component_id(case)}.metadata.json"), theirs


@pytest.mark.parametrize("case", CASES)
def test_metadata_file_matches_wassette(sites: Sites, case: str) -> None:
    ours, theirs = ours_and_theirs(sites, case)
    assert_same_metadata(ours.doc, theirs.doc, f"{case}: {component_id(case)}.metadata.json")
    # the stamp's size is compared above; the two values that differ by design:
    assert theirs.doc["validation_stamp"]["content_hash"] is None
    digest = hashlib.sha256(sites.wasm_paths[case].read_bytes()).hexdigest()
    assert ours.doc["validation_stamp"]["content_hash"] == digest


@pytest.mark.parametrize("case", CASES)
def test_export_carries_the_same_metadata(sites: Sites, case: str) -> None:
    ours, theirs = ours_and_theirs(sites, case)
    exported = sites.exported[component_id(case)]
    assert exported == ours.doc
    assert json.dumps(exported) == json.dumps(ours.doc)  # key order too
    assert_same_metadata(exported, theirs.doc, f"{case}: exported metadata")


@pytest.mark.parametrize("case", CASES)
def test_metadata_bytes_match_wassette(sites: Sites, case: str) -> None:
    """Wassette's file is `json.dumps(indent=2, ensure_ascii=False)` of its document; ours is
    written the same way, so with the unreproducible values swapped in the bytes are equal."""
    ours, theirs = ours_and_theirs(sites, case)
    assert theirs.raw == json.dumps(theirs.doc, indent=2, ensure_ascii=False)
    assert ours.raw == json.dumps(ours.doc, indent=2, ensure_ascii=False)
    assert with_their_unreproducible_values(ours.doc, theirs.doc) == theirs.raw


# ---------------------------------------------------------------------------------------------
# what both refuse


def long_tool_name_component() -> bytes:
    """`a_b_ccc…_dd`, 129 characters: Wassette panics (ToolNameTooLong)."""
    return fx.build_component(interfaces={"a:b/" + "c" * 122: [("dd", [], None)]})


REFUSED: dict[str, Callable[[], bytes]] = {
    "core-module": fx.KINDS["core-module"],
    "invalid": fx.KINDS["invalid"],
}


@pytest.mark.parametrize("kind", [*REFUSED, "tool-name-over-128"])
def test_what_wassette_cannot_load_is_refused(
    env_factory: Callable[[str], Env], tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"{kind}.wasm"
    path.write_bytes(REFUSED.get(kind, long_tool_name_component)())
    wassette = RealWassette(env_factory("wassette"))
    assert wassette.run("component", "load", path.as_uri()).code != 0
    assert not (wassette.env.component_dir / f"{kind}.metadata.json").exists()
    ours = env_factory("ours")
    result = ours.run("component", "attach", str(path))
    assert result.code == 2, result.text
    assert "Traceback" not in result.text
    assert not (ours.component_dir / f"{kind}.metadata.json").exists()


# ---------------------------------------------------------------------------------------------
# a componentize-py build (18 MB: Wassette compiles it in ~10 s, while we attach it)


@pytest.mark.slow
def test_componentize_py_metadata_matches_wassette(
    env_factory: Callable[[str], Env], tmp_path: Path
) -> None:
    env = env_factory("ours")
    wassette = RealWassette(env_factory("wassette"))
    path = tmp_path / "calc.wasm"
    path.write_bytes(fx.componentize_py_component())
    loading = subprocess.Popen(
        [str(TOOL), "component", "load", path.as_uri()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=wassette.environ(),
        cwd=tmp_path,
    )
    try:
        ok(env.run("component", "attach", str(path)))
        exported = json.loads(ok(env.run("state", "export", "-")).out)
    finally:
        _, err = loading.communicate(timeout=600)
    assert loading.returncode == 0, err[-2000:]
    ours = read_side(env.component_dir / "calc.metadata.json")
    theirs = read_side(wassette.env.component_dir / "calc.metadata.json")
    assert "add" in theirs.doc["tool_names"]
    assert_same_metadata(ours.doc, theirs.doc, "componentize-py calc.metadata.json")
    assert with_their_unreproducible_values(ours.doc, theirs.doc) == theirs.raw
    (component,) = exported["components"]
    assert component["metadata"] == ours.doc
    assert_same_metadata(component["metadata"], theirs.doc, "componentize-py exported metadata")
