"""The drift scan's fast paths (store/usecases/drift_scan.py) report exactly what the full
comparison does.

A policy file byte-identical to the state's text, and a secrets file in the shape the tool
writes, are settled without a YAML parser; every other file takes the parse-and-compare path.
Real files in temp dirs throughout; the secrets reader is checked against yaml.load itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import wasm_fixtures as fx
from wassette_state.store.domain import events as ev
from wassette_state.store.domain.policy_text import parse_policy
from wassette_state.store.domain.state import Component, Metadata, Policy, State
from wassette_state.store.files import materialize, secret_keys, wasm
from wassette_state.store.files import secrets as secret_files
from wassette_state.store.files.wasm import Introspection
from wassette_state.store.usecases import drift_scan

MTIME = 1_700_000_000
POLICY = 'version: "1.0"\ndescription: weather\npermissions: {}\n'
# The same document in other bytes: another quoting style, a comment, a blank line.
POLICY_SAME_DOC = "version: '1.0'\n# reformatted by hand\n\ndescription: weather\npermissions: {}\n"
EDITED = (
    'version: "1.0"\ndescription: edited by hand\npermissions:\n  network:\n'
    "    allow:\n    - host: granted.by.server.example.com\n"
)


def introspect(data: bytes, sha: str, label: str) -> Introspection:
    """How the scan reads the tools of new wasm bytes (find() adds an on-disk cache)."""
    return wasm.describe(data, label=label)


class Site:
    """A state and its files, written by the real materialization and secrets writer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cdir = root / "components"
        self.sdir = root / "secrets"
        self.blobs = materialize.BlobStore(root / "blobs")
        self.components: dict[str, Component] = {}

    def add(
        self, cid: str, policy: str | None = POLICY, secrets: dict[str, str] | None = None
    ) -> None:
        data = fx.simple_component()
        sha = self.blobs.put(data)
        stamp = {"file_size": len(data), "mtime": MTIME, "sha256": sha}
        meta = json.dumps({"name": cid, "validation_stamp": stamp}, separators=(",", ":"))
        self.components[cid] = Component(
            cid,
            f"file:///inputs/{cid}.wasm",
            sha,
            Metadata(raw=meta),
            None if policy is None else Policy(policy, "file:///inputs/p.yaml", MTIME),
            tuple(sorted(secrets or {})),
        )
        materialize.materialize(self.state, self.cdir, self.blobs, [cid])
        if secrets:
            secret_files.write_values(self.sdir, cid, secrets)

    @property
    def state(self) -> State:
        return State(components=dict(self.components))

    def detect(self, last_secret_change: Any = None) -> drift_scan.Found:
        return drift_scan.detect(self.state, self.cdir, self.sdir, introspect, last_secret_change)

    def secrets_path(self, cid: str) -> Path:
        return secret_files.secrets_file(self.sdir, cid)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path / "site")
    s.sdir.mkdir(parents=True)
    s.add("weather", secrets={"API_KEY": "api-value-0451", "TOKEN": "tok-0451"})
    s.add("fetch", policy=None)
    return s


def drifts(found: drift_scan.Found) -> list[tuple[str, str, bool]]:
    return [(d.component_id, d.what, d.adoptable) for d in found.drifts]


# ------------------------------------------------------------------ policy files


def test_materialized_files_are_no_drift(site: Site) -> None:
    assert (site.cdir / "weather.policy.yaml").read_text() == POLICY
    found = site.detect()
    assert found.drifts == [] and found.events == [] and found.blobs == {}


def test_policy_with_other_bytes_but_the_same_document_is_still_an_edit(site: Site) -> None:
    """Only byte-identical files skip the parse: a file that parses to the same document in
    other bytes is recorded as an edit of the text, as the full comparison always did."""
    assert parse_policy(POLICY_SAME_DOC) == parse_policy(POLICY)
    path = site.cdir / "weather.policy.yaml"
    path.write_text(POLICY_SAME_DOC)
    found = site.detect()
    assert drifts(found) == [("weather", "policy file edited", True)]
    assert found.events == [
        ev.PolicyChanged(
            component_id="weather",
            policy_content=POLICY_SAME_DOC,
            change={"op": "sync", "source": "filesystem", "added": [], "removed": []},
        )
    ]
    path.write_bytes(POLICY.encode() + b"\n")  # one more newline: other bytes too
    assert drifts(site.detect()) == [("weather", "policy file edited", True)]


def test_a_real_policy_edit_is_reported(site: Site) -> None:
    (site.cdir / "weather.policy.yaml").write_text(EDITED)
    found = site.detect()
    assert drifts(found) == [("weather", "policy file edited", True)]
    [changed] = found.events
    assert isinstance(changed, ev.PolicyChanged) and changed.policy_content == EDITED


def test_policy_added_invalid_deleted_symlinked(site: Site) -> None:
    (site.cdir / "fetch.policy.yaml").write_text(EDITED)
    os.utime(site.cdir / "fetch.policy.yaml", (MTIME + 5, MTIME + 5))
    found = site.detect()
    assert drifts(found) == [("fetch", "policy file added", True)]
    added = found.events[0]
    assert isinstance(added, ev.PolicyAttached)
    assert added.policy_content == EDITED and added.attached_at == MTIME + 5
    assert added.source_uri == (site.cdir / "fetch.policy.yaml").as_uri()
    (site.cdir / "fetch.policy.yaml").unlink()

    weather = site.cdir / "weather.policy.yaml"
    weather.write_text('version: "2.0"\npermissions: {}\n')
    [(cid, what, adoptable)] = drifts(site.detect())
    assert (cid, adoptable) == ("weather", False)
    assert what.startswith("policy file edited but invalid: ")
    weather.write_bytes(b"\xff\xfe not utf-8")
    [(_, what, adoptable)] = drifts(site.detect())
    assert what.startswith("policy file edited but invalid: ") and not adoptable

    weather.unlink()
    assert drifts(site.detect()) == [("weather", "policy file deleted", True)]
    # A symlink is never followed, even to a byte-identical policy, nor taken for a deletion:
    # the policy the log holds is written back. So with a directory.
    (site.root / "elsewhere.yaml").write_text(POLICY)
    weather.symlink_to(site.root / "elsewhere.yaml")
    linked = [("weather", "policy replaced by a link or not a file", False)]
    assert drifts(site.detect()) == linked
    weather.unlink()
    weather.mkdir()
    assert drifts(site.detect()) == linked


def test_an_invalid_policy_in_the_state_is_no_drift_while_the_file_is_unchanged(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path)
    site.add("legacy", policy="version: [unclosed\n")
    assert site.detect().drifts == []
    (site.cdir / "legacy.policy.yaml").write_text("version: [still unclosed\n")
    [(cid, what, adoptable)] = drifts(site.detect())
    assert cid == "legacy" and not adoptable
    assert what.startswith("policy file edited but invalid: ")


# ------------------------------------------------------------------ wasm files


def test_wasm_replaced_deleted_symlinked_and_dropped_in(site: Site) -> None:
    wasm_path = site.cdir / "fetch.wasm"
    replaced = fx.write_component(wasm_path, kind="interface")
    found = site.detect()
    new_sha = hashlib.sha256(replaced).hexdigest()
    assert drifts(found) == [("fetch", f"wasm replaced (sha256 {new_sha[:12]})", True)]
    assert isinstance(found.events[0], ev.ComponentAttached) and found.blobs.keys() == {new_sha}

    fx.write_component(wasm_path, kind="core-module")
    [(_, what, adoptable)] = drifts(site.detect())
    assert what.startswith("wasm replaced by an invalid file") and not adoptable

    wasm_path.unlink()
    wasm_path.symlink_to(site.blobs.path(site.components["fetch"].wasm_sha256))
    found = site.detect()
    # a link is never followed nor taken for a deletion: the bytes are written back
    assert drifts(found) == [("fetch", "wasm replaced by a link or not a file", False)]
    assert found.events == [] and found.relink == {"fetch"}
    wasm_path.unlink()

    # The weather wasm is gone: the component leaves, with no events about its keys after.
    (site.cdir / "weather.wasm").unlink()
    site.secrets_path("weather").write_text("API_KEY: x\nADDED: y\n")
    found = site.detect()
    assert [type(e) for e in found.events] == [ev.ComponentDetached, ev.ComponentDetached]

    # Wasm files of no component: adopted in name order, with their policy; a symlink is
    # ignored; an invalid file and an id we refuse are reported by name; any id Wassette takes
    # (`_bad id`) is adopted.
    site2 = Site(site.root.parent / "site2")
    site2.add("known")
    fx.write_component(site2.cdir / "zz.wasm", kind="top-level")
    fx.write_component(site2.cdir / "aa.wasm", kind="mixed")
    fx.write_component(site2.cdir / "junk.wasm", kind="invalid")
    (site2.cdir / "aa.policy.yaml").write_text(POLICY)
    (site2.cdir / "link.wasm").symlink_to(site2.cdir / "zz.wasm")
    fx.write_component(site2.cdir / "_bad id.wasm", kind="simple")
    fx.write_component(site2.cdir / "-dash.wasm", kind="simple")
    found = site2.detect()
    assert [(cid, what[:30], ok) for cid, what, ok in drifts(found)] == [
        ("-dash", "component id '-dash' refused (", False),
        ("_bad id", "component added by hand", True),
        ("aa", "component added by hand", True),
        ("aa", "policy file added", True),
        ("junk", "unknown file junk.wasm is not ", False),
        ("zz", "component added by hand", True),
    ]


# ------------------------------------------------------------------ secrets files


def test_secret_keys_added_removed_and_unreadable(site: Site) -> None:
    path = site.secrets_path("weather")
    raw = path.read_bytes()
    assert secret_keys.written_keys(raw) == {"API_KEY", "TOKEN"}  # the tool's file: no YAML parse

    path.write_bytes(raw + b"NEW_KEY: by-hand\n")
    found = site.detect()
    assert drifts(found) == [("weather", "secret keys added by hand: NEW_KEY", True)]
    assert found.events == [ev.SecretKeysSet(component_id="weather", keys=["NEW_KEY"])]

    path.write_bytes(b"API_KEY: only-this\n")
    os.utime(path, (MTIME + 100, MTIME + 100))
    found = site.detect(last_secret_change=lambda cid: MTIME * 1_000_000)
    assert drifts(found) == [("weather", "secret keys removed by hand: TOKEN", True)]
    # Written before the last secret event: keys waiting for values, not a removal.
    assert site.detect(last_secret_change=lambda cid: (MTIME + 200) * 1_000_000).drifts == []

    path.write_bytes(b"API_KEY: [unclosed\n")
    [(_, what, adoptable)] = drifts(site.detect())
    assert what.startswith("secrets file unreadable") and not adoptable
    assert "unclosed" not in what  # never echoes the file

    # A key YAML types (`true:` is a bool) or an odd value: the full parse decides, as before.
    path.write_bytes(b"API_KEY: x\nTOKEN: y\ntrue: 1\nN: ~\n")
    assert secret_keys.written_keys(path.read_bytes()) is None
    assert drifts(site.detect()) == [("weather", "secret keys added by hand: N, True", True)]
    path.write_bytes(b"API_KEY: x\nTOKEN: y\nbad key: 1\n")  # not a valid key name: not adopted
    assert site.detect().drifts == []


def test_secrets_file_absent_symlinked_or_a_directory_reads_as_no_keys(site: Site) -> None:
    path = site.secrets_path("weather")
    path.unlink()
    assert site.detect().drifts == []  # waiting for values, not removed (no file to date)
    # A symlink (a mounted Kubernetes Secret) is read through, as Wassette reads it: the same
    # keys are no drift. A directory holds no keys; it counts as edited since they were declared.
    removed = [("weather", "secret keys removed by hand: API_KEY, TOKEN", True)]
    (site.root / "other.yaml").write_text("API_KEY: x\nTOKEN: y\n")
    path.symlink_to(site.root / "other.yaml")
    assert drifts(site.detect()) == []
    path.unlink()
    path.mkdir()
    assert drifts(site.detect()) == removed


@pytest.mark.parametrize(
    "value",
    [
        "plain-token_0451",
        "postgres://user:p%40ss@db.example.com:5432/app?sslmode=require",
        "correct horse battery staple",
        "a#b c:d e-f",
        "12345",  # quoted by the dumper, a string
        "true",
        "",
        "it's quoted",
        "~",
        "-leading-dash",
        ".dotted",
    ],
)
def test_tool_written_secrets_files_take_the_fast_path(tmp_path: Path, value: str) -> None:
    secret_files.write_values(tmp_path, "c", {"KEY": value, "OTHER_KEY": "x"})
    raw = secret_files.secrets_file(tmp_path, "c").read_bytes()
    assert secret_keys.written_keys(raw) == {"KEY", "OTHER_KEY"}
    assert set(secret_files.read_values(tmp_path, "c")) == {"KEY", "OTHER_KEY"}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"KEY: true\n",
        b"KEY: 0b_\n",  # an int that fails to construct
        b"KEY: 2001-13-45\n",  # a date that fails to construct
        b"KEY: =\n",
        b"KEY: ~\n",
        b"KEY: 1.5\n",
        b"yes: x\n",
        b"KEY: a: b\n",
        b"KEY: a #comment\n",
        b"KEY: x\n  continued\n",
        b"KEY: x",
        b"KEY: x\r\n",
        b"\xef\xbb\xbfKEY: x\n",
        b"---\nKEY: x\n",
        b"KEY: 'unclosed\n",
        b'KEY: "double"\n',
        b"KEY: x:\n",
        b"KEY:\n",
        b"- KEY\n",
        b"KEY: caf\xc3\xa9\n",
        b"KEY: *alias\n",
        b"KEY: !!str x\n",
    ],
)
def test_anything_else_goes_to_the_yaml_parser(raw: bytes) -> None:
    assert secret_keys.written_keys(raw) is None


def _yaml_keys(raw: bytes) -> Any:
    try:
        doc = yaml.load(raw, Loader=secret_files._Loader)
    except Exception as e:
        return ("raises", type(e).__name__)
    if doc is None:
        return set()
    if not isinstance(doc, dict):
        return ("not a map",)
    return {str(k) for k in doc}


_PIECES = [*string.printable[:95], "\n", ": ", "''", "true", "null", "0b", "1_0", ".inf", "é"]


def _pieces(max_size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(_PIECES), max_size=max_size).map("".join)


_LINE = st.builds(
    lambda key, value: f"{key}: {value}\n",
    st.sampled_from(["KEY", "a.b-c", "_", "yes", "N", "TRUE", "y", "K9"]) | _pieces(4),
    _pieces(8) | _pieces(6).map(lambda s: f"'{s}'"),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINE, min_size=1, max_size=5).map(lambda ls: "".join(ls).encode()))
def test_fast_secrets_reader_agrees_with_yaml(raw: bytes) -> None:
    keys = secret_keys.written_keys(raw)
    if keys is not None:
        assert keys == _yaml_keys(raw)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,12}", fullmatch=True),
        st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=40),
        min_size=1,
        max_size=6,
    )
)
def test_fast_secrets_reader_on_what_the_tool_writes(values: dict[str, str]) -> None:
    body = yaml.dump(
        dict(sorted(values.items())),
        Dumper=secret_files._Dumper,
        allow_unicode=True,
        default_flow_style=False,
    ).encode()
    keys = secret_keys.written_keys(body)
    if keys is not None:
        assert keys == _yaml_keys(body) == {str(k) for k in values}
