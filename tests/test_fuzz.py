"""Hostile input: the parsers of everything a user hands the tool raise `ValidationError` and
nothing else, whatever the bytes; huge inputs are refused or parsed in bounded memory.

Parsers: the state file reader (`parse_snapshot`), the policy parser (`parse_policy`), the WHEN
parser (`parse_when`) and KEY=VALUE arguments (`parse_assignments`).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.conftest import CONFORMANCE, REPO
from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.policy_text import parse_policy
from wassette_state.store.domain.snapshot_parse import parse_snapshot
from wassette_state.store.domain.when import parse_when
from wassette_state.store.usecases.inputs import parse_assignment_lines, parse_assignments

FIXTURES = REPO / "tests" / "fixtures" / "snapshots"
VALID_POLICIES = sorted((CONFORMANCE / "policies" / "valid").glob("*.yaml"))
NOW_US = 1_764_067_200_000_000

EXAMPLES: Counter[str] = Counter()

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    total = sum(EXAMPLES.values())
    print(f"\nfuzz: {total} examples tried: " + ", ".join(f"{k} {v}" for k, v in EXAMPLES.items()))


def only_validation_errors(what: str, call: Callable[[], object]) -> None:
    """Run the parser; refusing is fine, anything but ValidationError is a bug."""
    EXAMPLES[what] += 1
    try:
        call()
    except ValidationError as e:
        message = str(e)
        assert message, "a refusal must say why"
        assert "Traceback" not in message


# ------------------------------------------------------------------------------ strategies

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["...", "", "0.1.0", "1.0", "weather", "a" * 200, "\x00", "\u2028", "~"])
)
keys = st.text(max_size=20) | st.sampled_from(
    [
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
        "source_uri",
        "wasm_sha256",
        "tool_schemas",
        "function_identifiers",
        "tool_names",
        "validation_stamp",
        "created_at",
        "policy_content",
        "attached_at",
        "permissions",
        "network",
        "storage",
        "allow",
        "deny",
        "host",
        "cidr",
        "uri",
        "access",
        "environment",
        "key",
        "resources",
        "limits",
        "memory",
        "cpu",
        "<<",
        "values",
    ]
)
json_like = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=30,
)


def base_snapshots() -> list[tuple[str, dict[str, Any]]]:
    """Valid documents to mutate (the shared conformance files and the test fixtures)."""
    out = []
    for path in [*sorted(FIXTURES.glob("*")), *sorted((CONFORMANCE / "state").glob("*"))]:
        if path.suffix in (".yaml", ".yml"):
            out.append((path.name, yaml.safe_load(path.read_text())))
        elif path.suffix == ".json":
            out.append((path.name, json.loads(path.read_text())))
    return out


BASES = base_snapshots()
POLICY_DOCS = [yaml.safe_load(p.read_text()) for p in VALID_POLICIES]


def paths_of(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a nested document (the root included)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(paths_of(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(paths_of(v, (*prefix, i)))
    return out


@st.composite
def mutated(draw: st.DrawFn, bases: list[Any]) -> Any:
    """A valid document with one to three places replaced, deleted, duplicated or extended."""
    doc = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        targets = paths_of(doc)
        path = draw(st.sampled_from(targets))
        op = draw(st.sampled_from(["replace", "delete", "add", "wrap", "duplicate"]))
        if not path:
            if op == "replace":
                doc = draw(json_like)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if op == "replace":
            parent[last] = draw(json_like)
        elif op == "delete":
            del parent[last]
        elif op == "wrap":
            parent[last] = draw(st.sampled_from([[parent[last]], {"x": parent[last]}]))
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(json_like)
        else:
            parent.insert(last, draw(json_like))
    return doc


def dump(doc: Any, fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps(doc, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass")


HOSTILE_YAML = [
    b"a: &a [1, 2]\nb: *a\n",
    b"a: &a ['x','x','x']\nb: &b [*a,*a,*a]\nc: &c [*b,*b,*b]\nd: [*c,*c,*c]\n",
    b"!!python/object/apply:os.system ['echo pwned']\n",
    b"version: !!python/name:os.system\n",
    b"<<: {version: '0.1.0'}\n",
    b"version: '0.1.0'\n---\nversion: '0.1.0'\n",
    b"? [a, b]\n: c\n",
    b"version: !!binary aGVsbG8=\n",
    b"version: !!timestamp 2001-13-45\n",
    b"version: !!int 0x\n",
    b"version: !!float nan\n",
    b"exported_at: 1e999\n",
    b"exported_at: " + b"9" * 5000 + b"\n",
    b"version: '0.1.0'\nexported_at: .inf\n",
    b"%YAML 9.9\n---\na: 1\n",
    b"[" * 10000,
    b"{" * 10000,
    b"- " * 5000 + b"x",
    b"\xef\xbb\xbf\xef\xbb\xbfversion: x",
    b"\xff\xfe\x00v",
    b'version: "\\ud800"\n',
    b"\t\x00\x01",
    b"",
]
HOSTILE_JSON = [
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": -Infinity}',
    b'{"version": "0.1.0", "version": "0.2.0"}',
    b'{"a": 1' + b"0" * 5000 + b"}",
    b'{"a": 1e99999}',
    b'{"a": "\\ud800"}',
    b'"\\udfff"',
    b"[" * 100000 + b"]" * 100000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b'["' + b"\\" * 10001 + b'"]',
    b'{"components": [' + b"{}," * 1000 + b"{}]}",
    b"\xef\xbb\xbf{}",
    b"\x00",
    b"null",
    b"1",
]


# ------------------------------------------------------------------------------ snapshot


@FUZZ
@given(data=st.binary(max_size=2000), fmt=st.sampled_from(["json", "yaml"]))
@example(data=b"", fmt="json")
def test_snapshot_arbitrary_bytes(data: bytes, fmt: str) -> None:
    only_validation_errors("snapshot bytes", lambda: parse_snapshot(data, fmt))  # type: ignore


@FUZZ
@given(text=st.text(max_size=2000), fmt=st.sampled_from(["json", "yaml"]))
def test_snapshot_arbitrary_text(text: str, fmt: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    only_validation_errors("snapshot text", lambda: parse_snapshot(data, fmt))  # type: ignore


@FUZZ
@given(doc=json_like, fmt=st.sampled_from(["json", "yaml"]))
def test_snapshot_json_like_documents(doc: Any, fmt: str) -> None:
    data = dump(doc, fmt)
    only_validation_errors("snapshot structures", lambda: parse_snapshot(data, fmt))  # type: ignore


@FUZZ
@given(doc=mutated([b for _, b in BASES]), fmt=st.sampled_from(["json", "yaml"]))
def test_snapshot_near_valid(doc: Any, fmt: str) -> None:
    data = dump(doc, fmt)
    only_validation_errors("snapshot near-valid", lambda: parse_snapshot(data, fmt))  # type: ignore


@FUZZ
@given(
    doc=mutated([b for _, b in BASES]),
    policy=st.one_of(st.text(max_size=300), mutated(POLICY_DOCS).map(yaml.safe_dump)),
)
def test_snapshot_with_hostile_policy_content(doc: Any, policy: str) -> None:
    """The importer runs every embedded policy through the policy parser too."""
    comps = doc.get("components") if isinstance(doc, dict) else None
    for comp in comps if isinstance(comps, list) else []:
        if isinstance(comp, dict) and isinstance(comp.get("policy"), dict):
            comp["policy"]["policy_content"] = policy
    data = dump(doc, "json")

    def check(content: str, where: str) -> None:
        parse_policy(content)

    only_validation_errors(
        "snapshot policies", lambda: parse_snapshot(data, "json", policy_check=check)
    )


@pytest.mark.parametrize("data", HOSTILE_YAML, ids=range(len(HOSTILE_YAML)))
def test_snapshot_hostile_yaml(data: bytes) -> None:
    only_validation_errors("snapshot hostile", lambda: parse_snapshot(data, "yaml"))
    with pytest.raises(ValidationError):
        parse_snapshot(data, "yaml")


@pytest.mark.parametrize("data", HOSTILE_JSON, ids=range(len(HOSTILE_JSON)))
def test_snapshot_hostile_json(data: bytes) -> None:
    only_validation_errors("snapshot hostile", lambda: parse_snapshot(data, "json"))
    with pytest.raises(ValidationError):
        parse_snapshot(data, "json")


def test_the_bases_are_valid() -> None:
    """The mutation bases must parse, or the near-valid fuzzing tests nothing."""
    assert BASES and POLICY_DOCS
    for name, doc in BASES:
        assert isinstance(doc, dict), name
        for fmt in ("json", "yaml"):
            parse_snapshot(dump(doc, fmt), fmt)  # type: ignore[arg-type]
    for path in VALID_POLICIES:
        parse_policy(path.read_text())


# ------------------------------------------------------------------------------ policy


@FUZZ
@given(text=st.text(max_size=1500) | st.binary(max_size=1500))
def test_policy_arbitrary_input(text: str | bytes) -> None:
    only_validation_errors("policy text", lambda: parse_policy(text))


@FUZZ
@given(doc=json_like)
def test_policy_json_like_documents(doc: Any) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True)
    only_validation_errors("policy structures", lambda: parse_policy(text))


@FUZZ
@given(doc=mutated(POLICY_DOCS), as_json=st.booleans())
def test_policy_near_valid(doc: Any, as_json: bool) -> None:
    text = json.dumps(doc, allow_nan=True) if as_json else yaml.safe_dump(doc, allow_unicode=True)
    only_validation_errors("policy near-valid", lambda: parse_policy(text))


@FUZZ
@given(
    section=st.sampled_from(["storage", "network", "environment", "resources"]),
    value=json_like,
    scalar=st.text(max_size=40)
    | st.sampled_from(
        ["***", "**", "*.*", "*", "fs://**/x", "1/", "0Ki", "-5Mi", "500m", "1e999", "0x10"]
    ),
)
def test_policy_field_values(section: str, value: Any, scalar: str) -> None:
    """Plausible shapes with hostile leaves, where the field rules live."""
    shapes = {
        "storage": {"allow": [{"uri": scalar, "access": value}]},
        "network": {"allow": [{"host": scalar}, {"cidr": scalar}], "deny": value},
        "environment": {"allow": [{"key": scalar}, value]},
        "resources": {"limits": {"cpu": scalar, "memory": value}, "memory": scalar},
    }
    doc = {"version": "1.0", "permissions": {section: shapes[section]}}
    text = yaml.safe_dump(doc, allow_unicode=True)
    only_validation_errors("policy fields", lambda: parse_policy(text))


@pytest.mark.parametrize("data", HOSTILE_YAML, ids=range(len(HOSTILE_YAML)))
def test_policy_hostile_yaml(data: bytes) -> None:
    only_validation_errors("policy hostile", lambda: parse_policy(data))


# ------------------------------------------------------------------------------ WHEN


when_structured = st.one_of(
    st.builds(
        lambda p, s: p + s,
        st.sampled_from(["seq:", "tx:", "tag:", "", " ", "SEQ:", "seq: "]),
        st.text(max_size=30) | st.integers(-(10**20), 10**20).map(str),
    ),
    st.builds(
        lambda n, u: f"{n}{u}",
        st.integers(-(10**12), 10**12),
        st.sampled_from(["s", "m", "h", "d", "w", "y", "", "S", "ms", ".5s"]),
    ),
    st.datetimes().map(lambda d: d.isoformat()),
    st.builds(
        lambda d, off: d.isoformat() + off,
        st.datetimes(),
        st.sampled_from(["Z", "z", "+99:99", "+23:59", "-24:00", "+00:00:01", "+0530", "Zulu"]),
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "9999-12-31T23:59:59+14:00",
            "0001-01-01T00:00:00-14:00",
            "0001-01-01",
            "999999999999.999999",
            "1e308",
            "-1",
            "seq:" + "9" * 16,
            "tx:0",
            "tag:-x",
            "tag:" + "a" * 101,
            "\x00",
            "2026-11-25T10:00:00\x00",
            "٣٣",
            "１２",
            "2026-W48-3",
        ]
    ),
)


@FUZZ
@given(text=st.text(max_size=200) | when_structured, now=st.integers(0, 2**62))
def test_when_any_text(text: str, now: int) -> None:
    only_validation_errors("when", lambda: parse_when(text, now))


# ------------------------------------------------------------------------------ KEY=VALUE


assignment = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda k, sep, v: k + sep + v,
        st.text(max_size=20) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,10}", fullmatch=True),
        st.sampled_from(["=", "==", " = ", ""]),
        st.text(max_size=40),
    ),
)


@FUZZ
@given(items=st.lists(assignment, max_size=8), as_tuple=st.booleans())
def test_assignments_any_arguments(items: list[str], as_tuple: bool) -> None:
    args = tuple(items) if as_tuple else items
    only_validation_errors("assignments", lambda: parse_assignments(args, "secrets"))


@FUZZ
@given(text=st.text(max_size=500))
def test_assignment_lines_any_stdin(text: str) -> None:
    only_validation_errors("assignment lines", lambda: parse_assignment_lines(text, "secrets"))


@FUZZ
@given(key=st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True), value=st.text())
def test_assignments_keep_values_exactly(key: str, value: str) -> None:
    """The value after the first '=' is kept as given (or refused if it holds NUL)."""
    EXAMPLES["assignments exact"] += 1
    assume("\x00" not in value)
    assert parse_assignments([f"{key}={value}"], "secrets") == {key: value}


# ------------------------------------------------------------------------------ huge inputs

MEMORY_LIMIT_BYTES = 2 * 1024**3  # the bound on peak RSS
SAFETY_NET_BYTES = 4 * 1024**3  # address-space cap, so a blow-up cannot take the machine down
HUGE = r"""
import json, resource, sys, time

limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.snapshot_parse import parse_snapshot

kind = sys.argv[1]
MiB = 1024 * 1024
head = ('{"version": "0.1.0", "exported_at": 0, '
        '"paths": {"component_dir": "/c", "secrets_dir": "/s"}, "environment": {}, ')
if kind == "json-60MiB-deep-wide":
    # Objects nested 60 levels (just under the limit of 64), side by side: 60 MiB.
    one = '{"":' * 60 + "1" + "}" * 60
    n = 60 * MiB // (len(one) + 1)
    data = (head + '"components": [], "x": [' + ",".join([one] * n) + "]}").encode()
    fmt = "json"
elif kind == "json-8MiB-deep":
    data = b"[" * (4 * MiB) + b"]" * (4 * MiB)
    fmt = "json"
elif kind == "json-7MiB-of-empty-components":
    # 2.5 million `{}` components: each one is invalid.
    data = (head + '"components": [' + ",".join(["{}"] * 2_500_000) + "]}").encode()
    fmt = "json"
elif kind == "yaml-million-items":
    data = (b"version: '0.1.0'\nexported_at: 0\nenvironment: {}\n"
            b"paths: {component_dir: /c, secrets_dir: /s}\ncomponents:\n" + b"- 1\n" * 10**6)
    fmt = "yaml"
else:
    raise SystemExit(f"unknown kind {kind}")

size = len(data)
start = time.process_time()
try:
    snap = parse_snapshot(data, fmt)
    outcome = f"accepted ({len(snap.components)} components, {len(snap.environment)} env)"
except ValidationError as e:
    outcome = "refused: " + str(e)[:160]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"kind": kind, "bytes": size, "peak_rss_mib": peak // 2**20,
                  "outcome": outcome, "cpu_seconds": round(time.process_time() - start, 1)}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        "json-60MiB-deep-wide",
        "json-8MiB-deep",
        "json-7MiB-of-empty-components",
        "yaml-million-items",
    ],
)
def test_huge_inputs_bounded_memory(kind: str) -> None:
    """A huge file is parsed or refused with ValidationError, in bounded memory, and finishes.

    Runs in a child process (its own peak RSS via getrusage) with an address-space cap as a
    safety net: hitting the cap (MemoryError or an abort) is a failure too.
    """
    proc = subprocess.run(
        [sys.executable, "-c", HUGE, kind, str(SAFETY_NET_BYTES)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    EXAMPLES["huge inputs"] += 1
    assert proc.returncode == 0, (
        f"{kind}: the parser died (exit {proc.returncode}) under a "
        f"{SAFETY_NET_BYTES // 2**30} GiB address-space cap: {proc.stderr[-1500:]}"
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nhuge input {result}")
    assert result["peak_rss_mib"] * 2**20 < MEMORY_LIMIT_BYTES, result
