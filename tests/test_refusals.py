"""Every refusal: exit 2, exactly one `Error:` line, no traceback, and the database (with its WAL),
the blob store, the component dir and the secrets dir byte-identical afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import wasm_fixtures as fx
from tests.conftest import Env, assert_refused, tree_bytes

SECRET = "s3cr3t-never-echoed"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """A store with a component (policy, secret), a bare component and an env var."""
    env = Env(tmp_path_factory.mktemp("refusals"))
    inputs = env.root / "inputs"
    inputs.mkdir()
    fx.write_component(inputs / "weather.wasm", kind="weather")
    fx.write_component(inputs / "bare.wasm", kind="simple")
    fx.write_component(inputs / "fresh.wasm", kind="mixed")
    fx.write_component(inputs / "core.wasm", kind="core-module")
    fx.write_component(inputs / "truncated.wasm", kind="invalid")
    fx.write_component(inputs / ".hidden.wasm", kind="simple")
    (inputs / "garbage.wasm").write_bytes(os.urandom(64) + b"\x00asm")
    (inputs / "empty.wasm").write_bytes(b"")
    (inputs / "adir.wasm").mkdir()
    (inputs / "good.policy.yaml").write_text('version: "1.0"\npermissions: {}\n')
    for args in (
        (
            "component",
            "attach",
            str(inputs / "weather.wasm"),
            "--policy",
            str(inputs / "good.policy.yaml"),
        ),
        ("component", "attach", str(inputs / "bare.wasm")),
        ("secret", "set", "weather", "API_KEY=v"),
        ("permission", "grant", "network", "weather", "api.example.com"),
        ("env", "set", "LOG_LEVEL=info"),
    ):
        r = env.run(*args)
        assert r.code == 0, (args, r.out, r.err)
    assert (env.component_dir / "weather.wasm").is_file()
    assert (env.secrets_dir / "weather.yaml").is_file()
    return env


def refused(env: Env, *args: str, contains: str | None = None, stdin: str | None = None) -> str:
    """Run a command that must be refused; the whole site must be byte-identical after it."""
    before = tree_bytes(env.root)
    result = env.run(*args, input=stdin)
    assert_refused(env, result, 2, contains)
    assert result.out == ""
    after = tree_bytes(env.root)
    assert after.keys() == before.keys(), sorted(after.keys() ^ before.keys())
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, changed
    return result.err


# --------------------------------------------------------------------------- component files

FILE_CASES = {
    "core-module": ("inputs/core.wasm", "core module"),
    "truncated-component": ("inputs/truncated.wasm", None),
    "garbage": ("inputs/garbage.wasm", None),
    "empty": ("inputs/empty.wasm", None),
    "directory": ("inputs/adir.wasm", "directory"),
    "missing": ("inputs/nope.wasm", "not found"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_attach_bad_file(site: Env, case: str) -> None:
    rel, contains = FILE_CASES[case]
    if case == "core-module":
        # Through a file:// URI, over an existing component's id: the old one stays.
        uri = (site.root / rel).as_uri()
        refused(site, "component", "attach", uri, "--id", "weather", contains=contains)
    else:
        refused(site, "component", "attach", str(site.root / rel), contains=contains)


@pytest.mark.parametrize(
    "source",
    ["https://example.com/weather.wasm", "file://otherhost/x.wasm"],
)
def test_attach_non_local_source(site: Env, source: str) -> None:
    refused(site, "component", "attach", source)


# --------------------------------------------------------------------------- ids

BAD_IDS = {
    "dotdot": "../x",
    "slash": "a/b",
    "empty": "",
    "too-long": "a" * 239,  # `<id>.policy.meta.json` would pass NAME_MAX (255 bytes)
    "leading-dash": "-x",
    "control": "a\tb",
    "instance-stream": "_instance",
    "hidden": ".hidden",
}


@pytest.mark.parametrize("name", sorted(BAD_IDS))
def test_bad_id_attach(site: Env, name: str) -> None:
    bad = BAD_IDS[name]
    err = refused(
        site,
        "component",
        "attach",
        str(site.root / "inputs" / "fresh.wasm"),
        "--id",
        bad,
        contains="invalid id",
    )
    assert len(err) < 400  # a 200-character id is clipped in the message


def test_bad_id_from_file_stem(site: Env) -> None:
    refused(
        site,
        "component",
        "attach",
        str(site.root / "inputs" / ".hidden.wasm"),
        contains="invalid id",
    )


@pytest.mark.parametrize(
    "args",
    [
        ("component", "detach", "../x"),
        ("secret", "set", "../weather", "K=v"),
    ],
    ids=lambda a: "-".join(a[:2]),
)
def test_bad_id_everywhere(site: Env, args: tuple[str, ...]) -> None:
    refused(site, *args, contains="invalid id")


# --------------------------------------------------------------------------- policies

BAD_POLICIES = {  # permissions section → the rule its message must name
    "uri-triple-star": (
        "storage:\n  allow:\n  - uri: fs://a/***\n    access: [read]\n",
        "'***' is not allowed",
    ),
    "uri-double-star-in-segment": (
        "storage:\n  allow:\n  - uri: fs://a/b**\n    access: [read]\n",
        "'**' only as a whole path segment",
    ),
    "uri-two-stars-in-segment": (
        "storage:\n  allow:\n  - uri: fs://a/*x*\n    access: [read]\n",
        "at most one '*' per path segment",
    ),
    "access-empty": (
        "storage:\n  allow:\n  - uri: fs://a\n    access: []\n",
        "access must be a non-empty list",
    ),
    "access-bad-word": (
        "storage:\n  allow:\n  - uri: fs://a\n    access: [execute]\n",
        "access must be 'read' or 'write'",
    ),
    "host-wildcard-middle": ("network:\n  allow:\n  - host: api.*.com\n", "wildcard only as"),
    "host-two-stars": ("network:\n  allow:\n  - host: '*.*.com'\n", "at most one '*'"),
    "cidr-no-slash": ("network:\n  allow:\n  - cidr: 10.0.0.0\n", "must contain '/'"),
    "env-key-star": ("environment:\n  allow:\n  - key: API_*\n", "no '*' wildcard"),
    "memory-bad-suffix": ("resources:\n  limits:\n    memory: 12Xi\n", "memory must be"),
    "memory-zero": ("resources:\n  limits:\n    memory: 0\n", "memory must be"),
}


def _policy_file(site: Env, name: str, text: str) -> Path:
    path = site.root / "inputs" / f"bad-{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(BAD_POLICIES))
def test_invalid_policy_rule(site: Env, name: str) -> None:
    section, rule = BAD_POLICIES[name]
    body = "\n".join("  " + ln for ln in section.splitlines())
    path = _policy_file(site, name, f'version: "1.0"\npermissions:\n{body}\n')
    refused(site, "policy", "attach", "weather", str(path), contains=rule)


@pytest.mark.parametrize(
    ("name", "text", "rule"),
    [
        ("version-2", 'version: "2.0"\npermissions: {}\n', "must start with '1.'"),
        ("missing-permissions", 'version: "1.0"\ndescription: x\n', "permissions: required"),
        ("not-yaml", 'version: "1.0"\npermissions: {storage: [\n', "YAML"),
    ],
)
def test_invalid_policy_document(site: Env, name: str, text: str, rule: str) -> None:
    path = _policy_file(site, name, text)
    refused(site, "policy", "attach", "bare", path.as_uri(), contains=rule)


def test_invalid_policy_with_new_component_attaches_nothing(site: Env) -> None:
    path = _policy_file(site, "v2", 'version: "2.0"\npermissions: {}\n')
    refused(
        site, "component", "attach", str(site.root / "inputs" / "fresh.wasm"), "--policy", str(path)
    )
    refused(
        site,
        "component",
        "attach",
        str(site.root / "inputs" / "fresh.wasm"),
        "--policy",
        str(site.root / "inputs" / "no-such.yaml"),
    )


@pytest.mark.parametrize(
    "args",
    [
        ("network", "weather", "api.*.com"),
        ("storage", "weather", "fs://a", "--access", "execute"),
    ],
    ids=lambda a: "-".join(a[:1] + a[2:3]),
)
def test_invalid_grant(site: Env, args: tuple[str, ...]) -> None:
    refused(site, "permission", "grant", *args)


# --------------------------------------------------------------------------- unknown component

UNKNOWN: list[tuple[str, ...]] = [
    ("component", "detach", "ghost"),
    ("component", "inspect", "ghost"),
    ("policy", "attach", "ghost", "inputs/good.policy.yaml"),
    ("policy", "get", "ghost"),
    ("policy", "detach", "ghost"),
    ("permission", "grant", "network", "ghost", "api.example.com"),
    ("secret", "set", "ghost", f"K={SECRET}"),
    ("secret", "list", "ghost"),
    ("secret", "delete", "ghost", "K"),
]


@pytest.mark.parametrize("args", UNKNOWN, ids=lambda a: "-".join(a[:3]))
def test_unknown_component(site: Env, args: tuple[str, ...]) -> None:
    err = refused(site, *args, contains="ghost")
    assert SECRET not in err


def test_nothing_to_remove(site: Env) -> None:
    refused(site, "policy", "detach", "bare", contains="no policy")
    refused(site, "secret", "delete", "weather", "NOT_THERE", contains="NOT_THERE")
    # One unset key refuses the whole command: LOG_LEVEL stays set.
    refused(site, "env", "unset", "LOG_LEVEL", "NOT_SET", contains="NOT_SET")


# --------------------------------------------------------------------------- KEY=VALUE

MALFORMED: dict[str, tuple[str, ...]] = {
    "no-equals": (f"NOEQUALS{SECRET}",),
    "empty-key": (f"={SECRET}",),
    "digit-first": (f"1BAD={SECRET}",),
    "duplicate": (f"K={SECRET}", f"K={SECRET}2"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_assignments(site: Env, name: str) -> None:
    items = MALFORMED[name]
    err = refused(site, "secret", "set", "weather", *items)
    assert SECRET not in err


def test_malformed_assignments_stdin_and_env(site: Env) -> None:
    # A good line before a bad one: nothing at all is set.
    stdin = f"GOOD=1\n1BAD={SECRET}\n"
    err = refused(site, "secret", "set", "weather", "--stdin", stdin=stdin)
    assert SECRET not in err
    err = refused(site, "env", "set", "GOOD=1", f"BAD KEY={SECRET}")
    assert SECRET not in err


def test_no_assignments(site: Env) -> None:
    refused(site, "secret", "set", "weather", "--stdin", stdin="# nothing\n\n")


def test_refusals_left_the_store_consistent(site: Env) -> None:
    # After all of the above (whatever order they ran in), the store still verifies and holds
    # exactly the setup's state.
    r = site.run("state", "verify")
    assert r.code == 0, r.err
    r = site.run("component", "list")
    assert [ln.split()[0] for ln in r.out.splitlines()[1:]] == ["bare", "weather"]
