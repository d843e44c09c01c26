"""Provisioning manifests shared by tests/test_manifest.py and tests/test_manifest_wassette.py.

Each case is a template: `{fetch}` / `{weather}` / `{iface}` are the paths of real components
(tests/wasm_fixtures.py) written by `Fixture`, `{fetch_sha}` is the sha256 of the first one. What
the real Wassette 0.8.0 does with each case was measured with `serve --manifest` and is checked
again by test_manifest_wassette.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tests.wasm_fixtures import write_component

NET = "    permissions:\n      network:\n        allow:\n          - host: api.example.com\n"


def one(body: str = NET, uri: str = "file://{fetch}", extra: str = "") -> str:
    return f"version: 1\ncomponents:\n  - uri: {uri}\n{extra}{body}"


def perms(text: str) -> str:
    return "    permissions:\n" + text


def storage(uri: str, access: str) -> str:
    return perms(
        f"      storage:\n        allow:\n          - uri: {uri}\n            access: {access}\n"
    )


@dataclass(frozen=True)
class Fixture:
    """Real components in a dir, for the templates."""

    root: Path

    def make(self) -> Fixture:
        self.root.mkdir(parents=True, exist_ok=True)
        write_component(self.root / "fetch.wasm", "simple")
        write_component(self.root / "weather.wasm", "weather")
        write_component(self.root / "iface.wasm", "interface")
        write_component(self.root / "a.b.wasm", "simple")
        write_component(self.root / "we ird#1.wasm", "top-level")
        (self.root / "bad.wasm").write_bytes(b"\x00asm\x0d\x00\x01\x00garbage")
        (self.root / "dir.wasm").mkdir(exist_ok=True)
        write_component(self.root / "-bad.wasm", "simple")
        (self.root / "sub").mkdir(exist_ok=True)
        write_component(self.root / "sub" / "fetch.wasm", "weather")
        return self

    @property
    def fetch_sha(self) -> str:
        return hashlib.sha256((self.root / "fetch.wasm").read_bytes()).hexdigest()

    def text(self, template: str) -> str:
        return (
            template.replace("{fetch_sha}", self.fetch_sha)
            .replace("{fetch}", str(self.root / "fetch.wasm"))
            .replace("{weather}", str(self.root / "weather.wasm"))
            .replace("{iface}", str(self.root / "iface.wasm"))
            .replace("{root}", str(self.root))
        )


# name → (template, what our import says: a fragment of the one `Error:` line)
# Wassette refuses every one of these too, except those in WASSETTE_ACCEPTS.
BAD: dict[str, tuple[str, str]] = {
    "version-2": (one().replace("version: 1", "version: 2"), "unsupported version 2"),
    "version-string": (one().replace("version: 1", "version: '1'"), "version: expected an integer"),
    "version-float": (one().replace("version: 1", "version: 1.0"), "version: expected an integer"),
    "version-bool": (one().replace("version: 1", "version: true"), "version: expected an integer"),
    "version-missing": (one().replace("version: 1\n", ""), "missing field `version`"),
    "no-components": ("version: 1\ncomponents: []\n", "at least one component"),
    "components-missing": ("version: 1\nuri: x\n", "missing field `components`"),
    "component-not-mapping": (
        "version: 1\ncomponents:\n  - file://{fetch}\n",
        "components[0]: expected a component",
    ),
    "permissions-missing": (one(body=""), "missing field `permissions`"),
    "permissions-null": (one(body="    permissions: null\n"), "got null"),
    "permissions-unknown-kind": (one(body=NET + "      runtime: {}\n"), "unknown field `runtime`"),
    "network-cidr": (
        one(body=perms("      network:\n        allow:\n          - cidr: 10.0.0.0/8\n")),
        "missing field `host`",
    ),
    "network-allow-empty": (
        one(body=perms("      network:\n        allow: []\n")),
        "network.allow: must not be empty",
    ),
    "network-allow-null": (
        one(body=perms("      network:\n        allow: null\n")),
        "network.allow: expected a list",
    ),
    "network-host-empty": (
        one(body=perms("      network:\n        allow:\n          - host: ''\n")),
        "host: empty",
    ),
    "network-host-wildcard": (
        one(body=perms("      network:\n        allow:\n          - host: 'a.*.com'\n")),
        "Wassette refuses the policy",
    ),
    "storage-not-fs": (
        one(body=storage("/tmp/x", "[read]")),
        "must start with 'fs://'",
    ),
    "storage-no-access": (
        one(body=storage("fs:///x", "[]")),
        "at least one of read, write",
    ),
    "storage-bad-access": (
        one(body=storage("fs:///x", "[execute]")),
        "unknown variant `execute`",
    ),
    "storage-access-string": (
        one(body=storage("fs:///x", "read")),
        "access: expected a list",
    ),
    "storage-triple-star": (
        one(body=storage("fs:///tmp/***", "[read]")),
        "'***' is not allowed",
    ),
    "env-duplicate": (
        one(
            body=perms(
                "      environment:\n        allow:\n          - key: A\n          - key: A\n"
            )
        ),
        'duplicate key "A"',
    ),
    "env-wildcard": (
        one(body=perms("      environment:\n        allow:\n          - key: 'A*'\n")),
        "no '*' wildcard",
    ),
    "env-key-empty": (
        one(body=perms("      environment:\n        allow:\n          - key: ''\n")),
        "key: empty",
    ),
    "resources-negative": (
        one(body=perms("      resources:\n        memory_bytes: -1\n")),
        "expected an unsigned integer",
    ),
    "resources-float": (
        one(body=perms("      resources:\n        memory_bytes: 1.5\n")),
        "expected an unsigned integer",
    ),
    "resources-string": (
        one(body=perms("      resources:\n        cpu_time_ms: '100'\n")),
        "expected an unsigned integer",
    ),
    "digest-not-sha256": (one(extra="    digest: md5:abc\n"), "must be 'sha256:<hex>'"),
    "digest-short": (one(extra="    digest: sha256:abc\n"), "64 hex characters, got 3"),
    "digest-not-hex": (one(extra=f"    digest: sha256:{'g' * 64}\n"), "only hex characters"),
    "duplicate-uri": (one() + one().split("components:\n", 1)[1], "duplicate component URIs"),
    "scheme-ftp": (one(uri="ftp://x/y.wasm"), "must start with one of file://"),
    "plain-path": (one(uri="{fetch}"), "must start with one of file://"),
    "file-host": (one(uri="file://localhost{fetch}"), "is not an absolute path"),
    "no-wasm-extension": (one(uri="file://{root}/sub"), "must end in .wasm"),
    "duplicate-field": (one(extra="    name: a\n    name: b\n"), "duplicate field `name`"),
    "duplicate-top-field": ("version: 1\n" + one(), "duplicate field `version`"),
    "retry-no-backoff": (
        one(extra="    retry_policy:\n      attempts: 3\n"),
        "missing field `backoff`",
    ),
    "retry-bad-backoff": (
        one(extra="    retry_policy:\n      attempts: 3\n      backoff:\n        type: constant\n"),
        "unknown variant `constant`",
    ),
    "yaml-syntax": ("version: 1\ncomponents: [\n", "invalid YAML"),
    "not-a-component": (one(uri="file://{root}/bad.wasm"), "bad.wasm"),
    "uri-is-a-directory": (one(uri="file://{root}/dir.wasm"), "is a directory"),
    # Refused here, accepted by Wassette (see WASSETTE_ACCEPTS for why).
    "digest-mismatch": (one(extra=f"    digest: sha256:{'0' * 64}\n"), "not the manifest's"),
    "same-id-twice": (
        "version: 1\ncomponents:\n  - uri: file://{fetch}\n"
        + NET
        + "  - uri: file://{root}/sub/fetch.wasm\n"
        + NET,
        "component id 'fetch' (the file stem) is also components[0]'s",
    ),
    "id-refused": (one(uri="file://{root}/-bad.wasm"), "invalid id '-bad'"),
}

# Accepted by Wassette 0.8.0 but refused by this project: a digest Wassette does not check
# ("Digest verification is not yet implemented"), two components one id (the last silently
# replaces the first), an id that cannot be a safe file name everywhere (DESIGN §4.2).
WASSETTE_ACCEPTS = {"digest-mismatch", "same-id-twice", "id-refused"}

# name → template; both Wassette and this project provision/import them.
GOOD: dict[str, str] = {
    "all-kinds-named": one(
        extra="    name: myfetch\n    digest: sha256:{fetch_sha}\n",
        body=perms(
            "      network:\n        allow:\n          - host: api.example.com\n"
            "          - host: '*.example.org'\n"
            "      storage:\n        allow:\n          - uri: fs:///tmp/data\n"
            "            access: [read, write]\n"
            "      environment:\n        allow:\n          - key: API_KEY\n"
            "          - key: DB_URL\n            value_from: SOURCE_DB\n"
        ),
    ),
    "three-components": (
        "version: 1\ncomponents:\n"
        "  - uri: file://{fetch}\n" + NET + "  - uri: file://{weather}\n    name: wx\n"
        "    permissions:\n      resources:\n        memory_bytes: 1048576\n"
        "        cpu_time_ms: 500\n"
        "  - uri: file://{iface}\n" + storage("fs:///srv", "[read]")
    ),
    "unknown-fields-ignored": (
        "version: 1\nowner: ops\ncomponents:\n  - uri: file://{fetch}\n    color: blue\n"
        + perms(
            "      network:\n        allow:\n          - host: a.com\n            port: 443\n"
            "        deny:\n          - host: b.com\n"
            "      resources:\n        cpu: 1\n"
        )
    ),
    "permissions-empty": one(body="    permissions: {}\n"),
    "kinds-null": one(body=perms("      network: null\n      storage: null\n")),
    "resources-only": one(body=perms("      resources:\n        memory_bytes: 1000\n")),
    "duplicate-access": one(body=storage("fs:///x", "[read, read]")),
    "bare-star-host": one(body=perms("      network:\n        allow:\n          - host: '*'\n")),
    "digest-uppercase": one(extra="    digest: sha256:{FETCH_SHA}\n"),
    "retry-policy": one(
        extra="    retry_policy:\n      attempts: 3\n      backoff:\n        type: linear\n"
        "        increment_ms: 10\n"
    ),
    "name-null-digest-null": one(extra="    name: null\n    digest: null\n"),
    "scalars-as-strings": one(
        extra="    name: yes\n",
        body=perms("      network:\n        allow:\n          - host: 42\n          - host: on\n"),
    ),
    "version-hex": one().replace("version: 1", "version: 0x1"),
    "dotted-stem": one(uri="file://{root}/a.b.wasm"),
    "space-and-hash-in-path": one(uri="file://{root}/we ird#1.wasm"),
    "json": json.dumps(
        {
            "version": 1,
            "components": [
                {
                    "uri": "file://{fetch}",
                    "permissions": {"environment": {"allow": [{"key": "TOKEN"}]}},
                }
            ],
        }
    ),
}
# Where serde's YAML writer and PyYAML's quote differently (`host: on` vs `host: 'on'`): the
# policy texts are compared as YAML then, not byte for byte.
QUOTING_DIFFERS = {"scalars-as-strings"}


def render(fixture: Fixture, template: str) -> str:
    return fixture.text(template).replace("{FETCH_SHA}", fixture.fetch_sha.upper())
