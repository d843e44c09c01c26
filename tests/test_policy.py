"""store/domain/policy_*: Wassette's policy documents, their validation rules, and grant/revoke."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wassette_state.store.domain.errors import ValidationError
from wassette_state.store.domain.policy_edit import PERMISSION_KINDS, grant, revoke
from wassette_state.store.domain.policy_text import dump_policy, parse_policy, wassette_form
from wassette_state.store.domain.policy_validate import validate_policy

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "policies" / "valid"
CONFORMANCE_FILES = sorted(CONFORMANCE.glob("*.yaml")) if CONFORMANCE.is_dir() else []


def granted_nothing(permissions: dict[str, Any]) -> bool:
    """No allow entry and no memory limit left (sections may stay, emptied, as in Wassette)."""
    for name, section in permissions.items():
        if section is None:
            continue
        if name == "resources":
            if (section.get("limits") or {}).get("memory") is not None:
                return False
        elif section.get("allow"):
            return False
    return True


def as_wassette(permissions: dict[str, Any]) -> dict[str, Any]:
    """Permissions as Wassette writes them after an edit (every section, absent ones null)."""
    out: dict[str, Any] = wassette_form({"version": "1.0", "permissions": permissions})
    return out["permissions"]  # type: ignore[no-any-return]


HEAD = 'version: "1.0"\npermissions:\n'


def refused(text: str | bytes) -> str:
    """The message of the ValidationError parse_policy raises (which must be one line)."""
    with pytest.raises(ValidationError) as info:
        parse_policy(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("policy: ")
    return message


def perms(text: str) -> str:
    """A document whose permissions section is `text` (indented YAML, two spaces)."""
    return HEAD + text


# --------------------------------------------------------------------------- conformance


def test_conformance_directory_is_not_empty() -> None:
    assert CONFORMANCE.is_dir(), CONFORMANCE
    assert len(CONFORMANCE_FILES) >= 10


@pytest.mark.parametrize("path", CONFORMANCE_FILES, ids=lambda p: p.name)
def test_every_conformance_policy_is_accepted(path: Path) -> None:
    raw = path.read_bytes()
    doc = parse_policy(raw)
    assert doc == parse_policy(raw.decode("utf-8"))
    assert doc["version"].startswith("1.")
    if b"$schema" in raw:
        assert doc["$schema"].startswith("https://")
    # Dumping is deterministic and what it writes reads back to the same document.
    text = dump_policy(doc)
    assert text == dump_policy(parse_policy(raw))
    assert parse_policy(text) == doc


def test_conformance_details_survive() -> None:
    doc = parse_policy((CONFORMANCE / "comprehensive.yaml").read_text())
    assert list(doc) == ["$schema", "version", "description", "permissions"]
    assert doc["permissions"]["runtime"]["hyperlight"] is None
    assert doc["permissions"]["resources"] == {"limits": {"cpu": "50", "memory": "1Gi"}, "io": 1000}
    assert doc["permissions"]["network"]["allow"][2] == {"cidr": "10.0.0.0/8"}


@pytest.mark.parametrize(
    "section",
    [
        "  storage:\n",
        "  storage:\n    allow:\n",
        "  network:\n    deny:\n",
        "  environment:\n",
        "  runtime:\n",
        "  runtime:\n    hyperlight:\n",
        "  resources:\n",
        "  resources:\n    limits:\n",
        "  resources:\n    limits:\n      cpu:\n      memory:\n",
        "  ipc:\n    allow: []\n",
    ],
)
def test_empty_sections_are_accepted(section: str) -> None:
    parse_policy(perms(section))


@pytest.mark.parametrize(
    "limits",
    [
        "cpu: 500m",
        "cpu: '50'",
        "cpu: '0.5'",
        "cpu: 2",
        "cpu: 0.25",
        "memory: 512Mi",
        "memory: 1.5Gi",
        "memory: 64Ki",
        "memory: 2Ti",
        "memory: 1048576",
        "memory: '1048576'",
    ],
)
def test_resource_limit_forms_are_accepted(limits: str) -> None:
    parse_policy(perms(f"  resources:\n    limits:\n      {limits}\n"))


def test_legacy_resources_are_accepted() -> None:
    doc = parse_policy(perms("  resources:\n    cpu: 10.0\n    memory: 128\n    io: 100\n"))
    assert doc["permissions"]["resources"] == {"cpu": 10.0, "memory": 128, "io": 100}


@pytest.mark.parametrize(
    "host", ["*", "*.example.com", "example.com", "https://api.search.brave.com/", "localhost"]
)
def test_hosts_wassette_accepts(host: str) -> None:
    parse_policy(perms(f"  network:\n    allow:\n    - host: '{host}'\n"))


@pytest.mark.parametrize(
    "uri",
    ["fs://work/agent/**", "fs://work/*/data", "fs://var/log/*.log", "fs:///", "fs://a/*/b/**"],
)
def test_storage_uris_wassette_accepts(uri: str) -> None:
    parse_policy(perms(f"  storage:\n    allow:\n    - uri: '{uri}'\n      access: [read]\n"))


def test_parse_accepts_a_utf8_bom_and_returns_plain_data() -> None:
    doc = parse_policy(b"\xef\xbb\xbf" + perms("  {}\n").encode())
    assert doc == {"version": "1.0", "permissions": {}}


# --------------------------------------------------------------------------- rule violations


def storage(uri: str, access: str = "[read]") -> str:
    return perms(f"  storage:\n    allow:\n    - uri: '{uri}'\n      access: {access}\n")


def host(value: str, which: str = "allow") -> str:
    return perms(f"  network:\n    {which}:\n    - host: '{value}'\n")


def test_storage_uri_empty() -> None:
    message = refused(storage(""))
    assert "permissions.storage.allow[0].uri ''" in message
    assert "must not be empty" in message


def test_storage_uri_triple_star() -> None:
    message = refused(storage("fs://work/***"))
    assert "'fs://work/***'" in message and "'***' is not allowed" in message


@pytest.mark.parametrize("uri", ["fs://work/agent/**file", "fs://a/file**.txt", "fs://a/**/**.txt"])
def test_storage_uri_double_star_not_a_whole_segment(uri: str) -> None:
    message = refused(storage(uri))
    assert repr(uri) in message and "'**' only as a whole path segment" in message


def test_storage_uri_two_stars_in_a_segment() -> None:
    message = refused(storage("fs://work/*a*/x"))
    assert "'fs://work/*a*/x'" in message and "at most one '*' per path segment" in message


def test_storage_deny_list_is_checked_too() -> None:
    text = perms("  storage:\n    deny:\n    - uri: 'fs://x/**y'\n      access: [read]\n")
    assert "permissions.storage.deny[0].uri" in refused(text)


def test_storage_access_empty() -> None:
    message = refused(storage("fs://a", "[]"))
    assert "permissions.storage.allow[0].access []" in message
    assert "non-empty list of 'read'/'write'" in message


def test_storage_access_missing() -> None:
    message = refused(perms("  storage:\n    allow:\n    - uri: fs://a\n"))
    assert "missing required key 'access'" in message


def test_storage_access_unknown() -> None:
    message = refused(storage("fs://a", "[read, exec]"))
    assert "permissions.storage.allow[0].access[1] 'exec'" in message
    assert "must be 'read' or 'write'" in message


def test_host_empty() -> None:
    message = refused(host(""))
    assert "permissions.network.allow[0].host ''" in message and "must not be empty" in message


def test_host_wildcard_example_from_the_design() -> None:
    text = perms(
        "  network:\n    allow:\n    - host: a.com\n    - host: b.com\n    - host: '*.*.x.com'\n"
    )
    message = refused(text)
    assert message.startswith(
        "policy: permissions.network.allow[2].host '*.*.x.com': "
        "wildcard only as a '*.' prefix or bare '*'"
    )


@pytest.mark.parametrize("value", ["example*.com", "exam*ple.com", "api.*", "*example.com"])
def test_host_wildcard_position(value: str) -> None:
    message = refused(host(value))
    assert repr(value) in message and "wildcard only as a '*.' prefix or bare '*'" in message


@pytest.mark.parametrize("value", ["**", "**example.com", "*.a.*"])
def test_host_at_most_one_star(value: str) -> None:
    message = refused(host(value, "deny"))
    assert repr(value) in message and "at most one '*'" in message
    assert "permissions.network.deny[0].host" in message


@pytest.mark.parametrize("value", ["*.", "*.example."])
def test_host_wildcard_domain(value: str) -> None:
    message = refused(host(value))
    assert repr(value) in message and "followed by a domain" in message


def test_network_entry_with_host_and_cidr() -> None:
    text = perms("  network:\n    allow:\n    - host: a.com\n      cidr: 10.0.0.0/8\n")
    assert "exactly one of 'host' or 'cidr'" in refused(text)


def test_network_entry_with_neither() -> None:
    message = refused(perms("  network:\n    allow:\n    - {}\n"))
    assert "permissions.network.allow[0] {}" in message
    assert "exactly one of 'host' or 'cidr'" in message


def test_cidr_without_slash() -> None:
    message = refused(perms("  network:\n    allow:\n    - cidr: 10.0.0.0\n"))
    assert "permissions.network.allow[0].cidr '10.0.0.0'" in message
    assert "CIDR must contain '/'" in message


@pytest.mark.parametrize("cidr", ["10.0.0.300/8", "10.0.0.0/33", "not-a-net/8", "/"])
def test_cidr_not_a_network(cidr: str) -> None:
    message = refused(perms(f"  network:\n    allow:\n    - cidr: '{cidr}'\n"))
    assert repr(cidr) in message and "not a valid IPv4/IPv6 CIDR network" in message


def test_environment_key_empty() -> None:
    message = refused(perms("  environment:\n    allow:\n    - key: ''\n"))
    assert "permissions.environment.allow[0].key ''" in message and "must not be empty" in message


@pytest.mark.parametrize("key", ["PATH_*", "*", "PA*TH"])
def test_environment_key_wildcard(key: str) -> None:
    message = refused(perms(f"  environment:\n    allow:\n    - key: '{key}'\n"))
    assert repr(key) in message and "no '*' wildcard in environment keys" in message


def test_environment_has_no_deny() -> None:
    message = refused(perms("  environment:\n    deny:\n    - key: X\n"))
    assert "permissions.environment: unknown key 'deny'" in message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("512MB", "'512MB'"),
        ("0Mi", "'0Mi'"),
        ("-1Gi", "'-1Gi'"),
        ("1 Gi", "'1 Gi'"),
        ("'0'", "'0'"),
        ("0", "0"),
        ("-5", "-5"),
        ("1.5", "1.5"),
        ("true", "True"),
    ],
)
def test_memory_limit(value: str, shown: str) -> None:
    message = refused(perms(f"  resources:\n    limits:\n      memory: {value}\n"))
    assert f"permissions.resources.limits.memory {shown}:" in message
    assert "Ki/Mi/Gi/Ti suffix or a positive integer of bytes" in message


@pytest.mark.parametrize("value", ["0m", "1.5m", "-2m", "m"])
def test_cpu_millicores(value: str) -> None:
    message = refused(perms(f"  resources:\n    limits:\n      cpu: '{value}'\n"))
    assert repr(value) in message and "positive integer of millicores" in message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("'abc'", "'abc'"),
        ("0", "0"),
        ("-1", "-1"),
        (".nan", "nan"),
        ("'inf'", "'inf'"),
        ("[1]", "[1]"),
    ],
)
def test_cpu_cores(value: str, shown: str) -> None:
    message = refused(perms(f"  resources:\n    limits:\n      cpu: {value}\n"))
    assert f"permissions.resources.limits.cpu {shown}:" in message
    assert "millicores ('500m') or a positive number of cores" in message


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("cpu", "'x'", "legacy cpu must be a non-negative number"),
        ("memory", "-1", "legacy memory must be a non-negative integer"),
        ("io", "1.5", "legacy io must be a non-negative integer"),
    ],
)
def test_legacy_resources(field: str, value: str, rule: str) -> None:
    message = refused(perms(f"  resources:\n    {field}: {value}\n"))
    assert f"permissions.resources.{field}" in message and rule in message


def test_ipc_uri_empty() -> None:
    message = refused(perms("  ipc:\n    allow:\n    - uri: ''\n"))
    assert "permissions.ipc.allow[0].uri ''" in message


def test_runtime_must_be_a_mapping() -> None:
    assert "permissions.runtime 5: must be a mapping" in refused(perms("  runtime: 5\n"))


def test_unknown_permission_kind_is_named() -> None:
    message = refused(perms("  network: {}\n  filesystem: {}\n"))
    assert "permissions: unknown key 'filesystem'" in message
    assert "storage, network, environment, runtime, resources, ipc" in message


def test_unknown_entry_key_is_named() -> None:
    message = refused(perms("  network:\n    allow:\n    - host: a.com\n      port: 80\n"))
    assert "permissions.network.allow[0]: unknown key 'port'" in message


def test_unknown_list_name_is_named() -> None:
    message = refused(perms("  storage:\n    alow: []\n"))
    assert "permissions.storage: unknown key 'alow'" in message


def test_unknown_document_key_is_named() -> None:
    assert "document: unknown key 'name'" in refused('name: x\nversion: "1.0"\npermissions: {}\n')


def test_section_must_be_a_mapping() -> None:
    assert "permissions.storage [1]: must be a mapping" in refused(perms("  storage: [1]\n"))


def test_allow_must_be_a_list() -> None:
    message = refused(perms("  network:\n    allow: {host: a.com}\n"))
    assert "permissions.network.allow {'host': 'a.com'}: must be a list" in message


def test_entry_must_be_a_mapping() -> None:
    message = refused(perms("  environment:\n    allow:\n    - PATH\n"))
    assert "permissions.environment.allow[0] 'PATH': must be a mapping" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "document ['a', 'b']: must be a mapping"),
        ("just text\n", "document 'just text': must be a mapping"),
        ("", "document: is empty"),
        ("# only a comment\n", "document: is empty"),
    ],
)
def test_not_a_mapping(text: str, expected: str) -> None:
    assert expected in refused(text)


def test_yaml_syntax_error_names_the_position() -> None:
    message = refused('version: "1.0"\npermissions: {storage: [\n')
    assert "YAML syntax error" in message and "line 3" in message


def test_yaml_syntax_error_bad_indentation() -> None:
    message = refused("invalid: yaml: content\n  - malformed\n")
    assert "YAML syntax error" in message and "line 1" in message


def test_several_documents_are_refused() -> None:
    assert "YAML syntax error" in refused(HEAD + "  {}\n---\n" + HEAD + "  {}\n")


def test_impossible_timestamp_is_a_validation_error() -> None:
    assert "month must be in 1..12" in refused("version: 2001-13-45\npermissions: {}\n")


@pytest.mark.parametrize(
    "scalar", ["!!timestamp x", "!!bool maybe", "!!int ''", "!!float ''", "!!int abc", "!!binary é"]
)
def test_scalars_that_do_not_fit_their_tag(scalar: str) -> None:
    assert "YAML" in refused(f"version: {scalar}\npermissions: {{}}\n")


def test_not_utf8() -> None:
    message = refused(b'version: "1.0"\ndescription: "caf\xe9"\npermissions: {}\n')
    assert "not valid UTF-8" in message and "0xe9" in message and "offset 32" in message


def test_version_missing() -> None:
    message = refused("permissions: {}\n")
    assert message == "policy: version: required (a string starting with '1.', e.g. \"1.0\")"


@pytest.mark.parametrize(
    ("value", "shown"), [("'2.0'", "'2.0'"), ("'v1.0'", "'v1.0'"), ("'1'", "'1'"), ("''", "''")]
)
def test_version_must_start_with_1_dot(value: str, shown: str) -> None:
    message = refused(f"version: {value}\npermissions: {{}}\n")
    assert f"version {shown}: unsupported version: must start with '1.'" in message


def test_version_must_be_a_string() -> None:
    message = refused("version: 1.0\npermissions: {}\n")
    assert "version 1.0: must be a string" in message and 'quote it: "1.0"' in message


@pytest.mark.parametrize("text", ['version: "1.0"\n', 'version: "1.0"\npermissions:\n'])
def test_permissions_missing_or_null(text: str) -> None:
    assert "permissions: required (use 'permissions: {}' for none)" in refused(text)


def test_permissions_not_a_mapping() -> None:
    assert "permissions ['storage']: must be a mapping" in refused(HEAD + "  - storage\n")


def test_description_must_be_a_string() -> None:
    assert "description [1]: must be a string" in refused(HEAD + "  {}\ndescription: [1]\n")


def test_long_offending_values_are_truncated() -> None:
    value = "a" * 300 + "*" + "b" * 300
    message = refused(host(value))
    assert "…" in message and "b" * 100 not in message
    assert len(message) < 200
    many = perms("  environment: " + str(list(range(500))) + "\n")
    assert len(refused(many)) < 200


def test_messages_stay_on_one_line() -> None:
    message = refused(perms('  environment:\n    allow:\n    - key: "A\\nB*"\n'))
    assert "'A\\nB*'" in message


def test_validate_policy_takes_parsed_documents() -> None:
    validate_policy({"version": "1.0", "permissions": {}})
    with pytest.raises(ValidationError, match="must be a mapping"):
        validate_policy(["version"])
    with pytest.raises(ValidationError, match="at most one '\\*' per path segment"):
        validate_policy(
            {
                "version": "1.1",
                "permissions": {"storage": {"deny": [{"uri": "fs://*x*", "access": ["read"]}]}},
            }
        )


def test_parse_policy_refuses_non_text() -> None:
    with pytest.raises(ValidationError, match="expected text"):
        parse_policy(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- dump


def test_dump_keeps_order_and_quotes_what_needs_it() -> None:
    doc = {
        "version": "1.0",
        "description": "x: y",
        "permissions": {"network": {"allow": [{"host": "*.a.com"}, {"cidr": "10.0.0.0/8"}]}},
    }
    assert dump_policy(doc) == (
        "version: '1.0'\n"
        "description: 'x: y'\n"
        "permissions:\n"
        "  network:\n"
        "    allow:\n"
        "    - host: '*.a.com'\n"
        "    - cidr: 10.0.0.0/8\n"
    )


def test_dump_does_not_fold_long_or_unicode_strings() -> None:
    doc = {"version": "1.0", "description": "ü𝄞 " * 200, "permissions": {}}
    text = dump_policy(doc)
    assert len(text.splitlines()) == 3
    assert "𝄞" in text
    assert parse_policy(text) == doc


# --------------------------------------------------------------------------- grant


def test_grant_on_no_policy_creates_one() -> None:
    text, change = grant(None, "fetch_rs", "network", "api.x.com")
    assert text == (
        "version: '1.0'\n"
        "description: 'Auto-generated policy for component: fetch_rs'\n"
        "permissions:\n"
        "  storage: null\n"
        "  network:\n"
        "    allow:\n"
        "    - host: api.x.com\n"
        "    deny: null\n"
        "  environment: null\n"
        "  runtime: null\n"
        "  resources: null\n"
        "  ipc: null\n"
    )  # byte for byte what Wassette 0.8.0 writes for the same grant
    assert change == {"op": "grant", "kind": "network", "host": "api.x.com"}
    assert parse_policy(text)["permissions"] == as_wassette(
        {"network": {"allow": [{"host": "api.x.com"}]}}
    )


def test_grant_cidr_when_the_value_has_a_slash() -> None:
    text, change = grant(None, "c", "network", "10.0.0.0/8")
    assert change == {"op": "grant", "kind": "network", "cidr": "10.0.0.0/8"}
    assert parse_policy(text)["permissions"]["network"]["allow"] == [{"cidr": "10.0.0.0/8"}]


def test_grant_url_style_host_is_a_host() -> None:
    _, change = grant(None, "c", "network", "https://api.search.brave.com/")
    assert change == {"op": "grant", "kind": "network", "host": "https://api.search.brave.com/"}


def test_grant_network_deduplicates() -> None:
    once, change1 = grant(None, "c", "network", "api.x.com")
    twice, change2 = grant(once, "c", "network", "api.x.com")
    assert twice == once
    assert change1 == change2


@pytest.mark.parametrize(
    ("kind", "value", "access"),
    [
        ("network", "api.openai.com", None),
        ("network", "10.0.0.0/8", None),
        ("environment-variable", "API_KEY", None),
        ("storage", "fs://workspace/**", ["write"]),
        ("memory", "1Gi", None),
    ],
)
def test_a_grant_that_changes_nothing_returns_the_text_unchanged(
    kind: str, value: str, access: list[str] | None
) -> None:
    source = (CONFORMANCE / "comprehensive.yaml").read_text()
    text, change = grant(source, "c", kind, value, access)
    assert text is source
    assert change["op"] == "grant" and change["kind"] == kind


def test_grant_environment_variable() -> None:
    text, change = grant(None, "c", "environment-variable", "API_KEY")
    text, _ = grant(text, "c", "environment-variable", "API_KEY")
    text, _ = grant(text, "c", "environment-variable", "HOME")
    assert change == {"op": "grant", "kind": "environment-variable", "key": "API_KEY"}
    assert parse_policy(text)["permissions"] == as_wassette(
        {"environment": {"allow": [{"key": "API_KEY"}, {"key": "HOME"}]}}
    )


def test_grant_storage_merges_access() -> None:
    text, change = grant(None, "c", "storage", "fs://work/**", ["write"])
    assert change == {"op": "grant", "kind": "storage", "uri": "fs://work/**", "access": ["write"]}
    text, change = grant(text, "c", "storage", "fs://work/**", ["read", "read"])
    assert change["access"] == ["read"]
    allow = parse_policy(text)["permissions"]["storage"]["allow"]
    assert allow == [{"uri": "fs://work/**", "access": ["read", "write"]}]
    again, _ = grant(text, "c", "storage", "fs://work/**", ["write"])
    assert again == text


def test_grant_storage_canonical_access_order() -> None:
    _, change = grant(None, "c", "storage", "fs://a", ["write", "read"])
    assert change["access"] == ["read", "write"]


@pytest.mark.parametrize("access", [None, [], ["exec"], ["read", "x"]])
def test_grant_storage_needs_access(access: list[str] | None) -> None:
    with pytest.raises(ValidationError, match="access must be"):
        grant(None, "c", "storage", "fs://a", access)


@pytest.mark.parametrize(
    ("kind", "value", "rule"),
    [
        ("network", "*.*.x.com", "wildcard only as a '*.' prefix or bare '*'"),
        ("network", "", "host must not be empty"),
        ("network", "10.0.0.1/99", "not a valid IPv4/IPv6 CIDR network"),
        ("environment-variable", "A*", "no '*' wildcard in environment keys"),
        ("environment-variable", "", "environment key must not be empty"),
        ("memory", "512MB", "Ki/Mi/Gi/Ti suffix"),
        ("memory", "0", "Ki/Mi/Gi/Ti suffix"),
        ("storage", "fs://a/**b", "'**' only as a whole path segment"),
        ("storage", "", "storage URI must not be empty"),
    ],
)
def test_grant_validates_the_value(kind: str, value: str, rule: str) -> None:
    access = ["read"] if kind == "storage" else None
    with pytest.raises(ValidationError) as info:
        grant(None, "c", kind, value, access)
    assert rule in str(info.value) and repr(value) in str(info.value)


def test_grant_unknown_kind() -> None:
    with pytest.raises(ValidationError, match="unknown kind"):
        grant(None, "c", "environment", "PATH")


def test_grant_access_only_for_storage() -> None:
    with pytest.raises(ValidationError, match="access applies only to storage"):
        grant(None, "c", "network", "a.com", ["read"])


def test_grant_refuses_an_invalid_existing_policy() -> None:
    with pytest.raises(ValidationError, match="unsupported version"):
        grant('version: "2.0"\npermissions: {}\n', "c", "network", "a.com")


def test_grant_memory_sets_the_limit() -> None:
    base = perms("  resources:\n    limits:\n      cpu: 500m\n      memory: 1Gi\n    io: 5\n")
    text, change = grant(base, "c", "memory", "512Mi")
    assert change == {"op": "grant", "kind": "memory", "limit": "512Mi"}
    resources = parse_policy(text)["permissions"]["resources"]
    assert resources == {"limits": {"cpu": "500m", "memory": "512Mi"}, "io": 5}
    fresh, _ = grant(None, "c", "memory", "1048576")
    assert parse_policy(fresh)["permissions"] == as_wassette(
        {"resources": {"limits": {"cpu": None, "memory": "1048576"}}}
    )


def test_grant_keeps_everything_else() -> None:
    source = (CONFORMANCE / "comprehensive.yaml").read_text()
    before = parse_policy(source)
    text, _ = grant(source, "c", "network", "new.example.com")
    after = parse_policy(text)
    added = after["permissions"]["network"]["allow"].pop()
    assert added == {"host": "new.example.com"}
    assert after == wassette_form(before)  # `$schema` and comments go, as with Wassette


def test_grant_does_not_leak_through_yaml_aliases() -> None:
    source = perms("  network:\n    allow: &hosts\n    - host: a.com\n    deny: *hosts\n")
    text, _ = grant(source, "c", "network", "b.com")
    network = parse_policy(text)["permissions"]["network"]
    assert network == {"allow": [{"host": "a.com"}, {"host": "b.com"}], "deny": [{"host": "a.com"}]}


def test_grant_with_a_self_referential_runtime_section() -> None:
    source = perms("  runtime: &r\n    docker:\n      loop: *r\n")
    text, _ = grant(source, "c", "environment-variable", "PATH")
    doc = parse_policy(text)
    runtime = doc["permissions"]["runtime"]
    assert runtime["docker"]["loop"]["docker"] is runtime["docker"]
    assert doc["permissions"]["environment"] == {"allow": [{"key": "PATH"}]}


def test_edits_are_deterministic() -> None:
    source = (CONFORMANCE / "web-service.yaml").read_text()
    assert grant(source, "c", "storage", "fs://x", ["read"]) == grant(
        source, "c", "storage", "fs://x", ["read"]
    )
    assert revoke(source, "c", "environment-variable", "PORT") == revoke(
        source, "c", "environment-variable", "PORT"
    )


# --------------------------------------------------------------------------- revoke / reset


def test_revoke_on_no_policy() -> None:
    with pytest.raises(ValidationError, match="component 'c' has no policy"):
        revoke(None, "c", "network", "a.com")


@pytest.mark.parametrize(
    ("kind", "value", "access"),
    [
        ("network", "other.com", None),
        ("network", "10.0.0.0/8", None),
        ("environment-variable", "HOME", None),
        ("storage", "fs://other", None),
        ("storage", "fs://a", ["write"]),
        ("memory", "1Gi", None),
    ],
)
def test_revoke_what_is_not_granted(kind: str, value: str, access: list[str] | None) -> None:
    source, _ = grant(None, "c", "network", "a.com")
    source, _ = grant(source, "c", "storage", "fs://a", ["read"])
    with pytest.raises(ValidationError) as info:
        revoke(source, "c", kind, value, access)
    assert "is not granted" in str(info.value)
    assert repr(value) in str(info.value) or repr(access) in str(info.value)


def test_revoke_host_that_is_only_denied_is_not_granted() -> None:
    with pytest.raises(ValidationError, match="is not granted"):
        revoke(host("a.com", "deny"), "c", "network", "a.com")


def test_revoke_network_keeps_the_rest() -> None:
    source = (CONFORMANCE / "network-only.yaml").read_text()
    text, change = revoke(source, "c", "network", "192.168.1.0/24")
    assert change == {"op": "revoke", "kind": "network", "cidr": "192.168.1.0/24"}
    before, after = parse_policy(source), parse_policy(text)
    before["permissions"]["network"]["allow"].remove({"cidr": "192.168.1.0/24"})
    assert after == wassette_form(before)


def test_revoke_last_allow_keeps_deny() -> None:
    source = perms("  network:\n    allow:\n    - host: a.com\n    deny:\n    - host: '*'\n")
    text, _ = revoke(source, "c", "network", "a.com")
    assert parse_policy(text)["permissions"] == as_wassette(
        {"network": {"allow": None, "deny": [{"host": "*"}]}}
    )


def test_revoke_storage_access_then_entry() -> None:
    source, _ = grant(None, "c", "storage", "fs://a", ["read", "write"])
    source, _ = grant(source, "c", "storage", "fs://b", ["read"])
    text, change = revoke(source, "c", "storage", "fs://a", ["write"])
    assert change == {"op": "revoke", "kind": "storage", "uri": "fs://a", "access": ["write"]}
    assert parse_policy(text)["permissions"]["storage"]["allow"] == [
        {"uri": "fs://a", "access": ["read"]},
        {"uri": "fs://b", "access": ["read"]},
    ]
    text, change = revoke(text, "c", "storage", "fs://a", ["read"])
    assert parse_policy(text)["permissions"]["storage"]["allow"] == [
        {"uri": "fs://b", "access": ["read"]}
    ]
    text, change = revoke(text, "c", "storage", "fs://b")
    assert change == {"op": "revoke", "kind": "storage", "uri": "fs://b", "access": ["read"]}
    assert parse_policy(text)["permissions"] == as_wassette({"storage": {"allow": None}})


def test_revoke_memory() -> None:
    source = perms("  resources:\n    limits:\n      cpu: 500m\n      memory: 512Mi\n")
    text, change = revoke(source, "c", "memory", "512Mi")
    assert change == {"op": "revoke", "kind": "memory", "limit": "512Mi"}
    assert parse_policy(text)["permissions"] == as_wassette(
        {"resources": {"limits": {"cpu": "500m", "memory": None}}}
    )
    with pytest.raises(ValidationError, match="is not granted"):
        revoke(text, "c", "memory", "512Mi")


def test_revoke_memory_any_value_and_empty_parents() -> None:
    source, _ = grant(None, "c", "memory", "1Gi")
    with pytest.raises(ValidationError, match="current limit: '1Gi'"):
        revoke(source, "c", "memory", "2Gi")
    text, change = revoke(source, "c", "memory", "")
    assert change["limit"] == "1Gi"
    assert granted_nothing(parse_policy(text)["permissions"])


def test_revoke_memory_numeric_limit() -> None:
    source = perms("  resources:\n    limits:\n      memory: 1048576\n")
    text, change = revoke(source, "c", "memory", "1048576")
    assert change["limit"] == "1048576"
    assert granted_nothing(parse_policy(text)["permissions"])


def test_permission_kinds() -> None:
    assert PERMISSION_KINDS == ("storage", "network", "environment-variable", "memory")


# --------------------------------------------------------------------------- properties

_LABEL = st.text(alphabet=string.ascii_lowercase + string.digits + "-", min_size=1, max_size=12)
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)
HOSTS = st.one_of(
    _DOMAIN,
    _DOMAIN.map(lambda d: "*." + d),
    st.just("*"),
    # anything Wassette takes as a host: no '*' and no '/', any characters
    st.text(min_size=1, max_size=20).filter(lambda s: "*" not in s and "/" not in s),
)
KEYS = st.text(min_size=1, max_size=20).filter(lambda s: "*" not in s)
GRANTS = st.lists(
    st.one_of(
        st.tuples(st.just("network"), HOSTS), st.tuples(st.just("environment-variable"), KEYS)
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(GRANTS, st.booleans())
def test_random_grants_each_appear_exactly_once(
    grants: list[tuple[str, str]], start_empty: bool
) -> None:
    content: str | None = None if start_empty else HEAD + "  {}\n"
    for kind, value in grants:
        content, change = grant(content, "comp", kind, value)
        assert change["op"] == "grant"
        parse_policy(content)
    if content is None:
        return
    doc = parse_policy(content)
    hosts = [e["host"] for e in (doc["permissions"].get("network") or {}).get("allow", [])]
    keys = [e["key"] for e in (doc["permissions"].get("environment") or {}).get("allow", [])]
    for kind, value in grants:
        assert (hosts if kind == "network" else keys).count(value) == 1
    assert len(hosts) + len(keys) == len(set(grants))
    # Granting everything again changes nothing.
    again = content
    for kind, value in grants:
        again, _ = grant(again, "comp", kind, value)
    assert again == content


GRANT_ONE = st.one_of(
    st.tuples(st.just("network"), HOSTS, st.none()),
    st.tuples(
        st.just("network"), st.sampled_from(["10.0.0.0/8", "::1/128", "0.0.0.0/0"]), st.none()
    ),
    st.tuples(st.just("environment-variable"), KEYS, st.none()),
    st.tuples(
        st.just("storage"),
        st.sampled_from(["fs://a", "fs://work/**", "fs://x/*.log", "fs:///"]),
        st.lists(st.sampled_from(["read", "write"]), min_size=1, max_size=3),
    ),
    st.tuples(st.just("memory"), st.sampled_from(["512Mi", "1Gi", "1048576", "1.5Ti"]), st.none()),
)


@settings(max_examples=150, deadline=None)
@given(GRANT_ONE, st.text(alphabet=string.ascii_letters + "_-.", min_size=1, max_size=10))
def test_revoke_after_grant_on_a_fresh_policy_is_empty(
    item: tuple[str, str, list[str] | None], component_id: str
) -> None:
    kind, value, access = item
    granted, _ = grant(None, component_id, kind, value, access)
    text, change = revoke(granted, component_id, kind, value)
    assert change["op"] == "revoke" and change["kind"] == kind
    doc = parse_policy(text)
    assert granted_nothing(doc["permissions"])
    assert doc["description"] == f"Auto-generated policy for component: {component_id}"


_FRAGMENTS = [
    'version: "1.0"\n',
    "version: '2'\n",
    "permissions:\n",
    "permissions: {}\n",
    "  storage:\n",
    "  network:\n",
    "  environment:\n",
    "  resources:\n",
    "    limits:\n",
    "      memory: 0\n",
    "      cpu: 5m\n",
    "    allow:\n",
    "    deny:\n",
    "    - host: '*.a'\n",
    "    - cidr: x\n",
    "    - key: K\n",
    "    - uri: fs://**x\n",
    "      access: []\n",
    "  runtime: &a [*a]\n",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    "&x ",
    "*x ",
    "!!binary ",
    "!!timestamp ",
    "? ",
    "|\n",
    "\t",
    "\n",
    "---\n",
    "2001-13-45",
    ".nan",
    "~",
    "'",
    '"',
    "#",
    "%YAML 1.1\n",
    "\x00",
    "\ufeff",
]
YAMLISH = st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=5), max_size=30).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.binary(), YAMLISH, YAMLISH.map(str.encode)))
def test_parse_random_input_raises_only_validation_error(text: str | bytes) -> None:
    try:
        doc = parse_policy(text)
    except ValidationError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(doc, dict)
    assert parse_policy(dump_policy(doc)) == doc


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),  # NaN != NaN would break the round-trip comparison
    st.text(max_size=10),
    st.sampled_from(
        [
            "read",
            "write",
            "fs://a",
            "*.a.com",
            "10.0.0.0/8",
            "512Mi",
            "5m",
            "host",
            "cidr",
            "uri",
            "access",
            "key",
            "allow",
            "deny",
            "limits",
            "memory",
            "cpu",
        ]
    ),
)
TREES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "allow",
                    "deny",
                    "host",
                    "cidr",
                    "uri",
                    "access",
                    "key",
                    "limits",
                    "memory",
                    "cpu",
                    "io",
                    "x",
                ]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["storage", "network", "environment", "runtime", "resources", "ipc", "other"]
        ),
        TREES,
        max_size=4,
    )
)
def test_validate_random_structures_raises_only_validation_error(permissions: Any) -> None:
    doc = {"version": "1.0", "permissions": permissions}
    try:
        validate_policy(doc)
    except ValidationError as e:
        assert "\n" not in str(e)
        return
    text = dump_policy(doc)
    assert parse_policy(text) == doc
    assert yaml.safe_load(text) == doc


def test_rule_changes_name_what_was_added_and_removed() -> None:
    from wassette_state.store.domain.policy_diff import rule_changes

    source = (CONFORMANCE / "comprehensive.yaml").read_text()
    text, _ = grant(source, "c", "network", "new.example.com")
    text, _ = revoke(text, "c", "environment-variable", "HOME")
    text, _ = grant(text, "c", "memory", "2Gi")
    assert rule_changes(source, text) == {
        "added": ["allow network host=new.example.com", "limit memory=2Gi"],
        "removed": ["allow environment key=HOME", "limit memory=1Gi"],
    }
    assert rule_changes(source, source) == {"added": [], "removed": []}
    assert rule_changes(None, source)["removed"] == []
    assert (
        "deny storage uri=fs://system/** access=read,write" in rule_changes(None, source)["added"]
    )
