"""Generate large, realistic stores through the project's own API (and cache them).

A generated store is what a busy fleet host accumulates over months: components attached with
realistic tool schemas (3-6 MCP tools with nested `inputSchema`, 2-4 KB of metadata each),
Wassette's own policy files attached, then a long tail of small commands — permission grants and
revokes (`policy.changed`), secret key sets and rotations, environment changes, and the occasional
re-attach of new bytes, policy swap or detach.

Events are written the way `Store.execute` writes them, only more of them per SQLite transaction:
inside one `store.db.write_tx`, every logical command is its own `store.log.append` (one
`transactions` row, a hash-chained event per change) and `store.readmodel.apply` then updates the
temporal read models for the whole batch against the running state (kept in memory with
`store.fold.project`). So the log, the hash chain and the read models are exactly what the CLI
would have produced for the same commands; only commit boundaries differ. After the events, the
component directory and the secrets files are materialized, as on a real host (so `state export`
sees no drift).

Generation is deterministic for a given (components, events, seed): a smaller store is a prefix of
a larger one with the same seed and component count. `recorded_at` advances a fixed 20 s per
command from 2025-01-01, so "as of a time" works on generated stores too.

    python -m bench.generate /tmp/big --components 10000 --events 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 1
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
T0_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
TX_STEP_US = 20_000_000  # one command every 20 s of simulated time
BATCH_EVENTS = 20_000  # events per SQLite transaction while generating
ACTOR = "bench@generator"

# --------------------------------------------------------------------------- vocabulary

# Wassette's own policy files (../shared/conformance/policies/valid), verbatim.
POLICY_TEMPLATES: tuple[str, ...] = (
    """$schema: https://raw.githubusercontent.com/microsoft/policy-mcp/main/schema/policy-v1.0.schema.json
version: "1.0"
description: "Permission policy for wassette weather demo"
permissions:
  network:
    allow:
      - host: "https://rss.nytimes.com/"
""",
    """$schema: https://raw.githubusercontent.com/microsoft/policy-mcp/main/schema/policy-v1.0.schema.json
# file system access policy for wassette project
# https://github.com/microsoft/policy-mcp-rs
version: "1.0"
description: "Permission policy for filesystem access in wassette"
permissions:
  storage:
    allow:
      # Allow read access to the wassette project directory
      - uri: "fs:///Users/USERNAME/github/wassette"
        access: ["read"]
    # Allow read access to the user's home directory
      - uri: "fs:///Users/USERNAME"
        access: ["read"]
      # Allow read access to the root filesystem
      - uri: "fs:///"
        access: ["read"]
""",
    """$schema: https://raw.githubusercontent.com/microsoft/policy-mcp/main/schema/policy-v1.0.schema.json
version: "1.0"
description: "Permission policy for wassette weather demo"
permissions:
  network:
    allow:
      - host: "api.openweathermap.org"
  environment:
    allow:
      - key: "OPENWEATHER_API_KEY"
""",
    """version: "1.0"
description: "Permission policy for context7 component"
permissions:
  network:
    allow:
      - host: "context7.com"
  environment:
    allow:
      - key: "CONTEXT7_API_KEY"
""",
    """$schema: https://raw.githubusercontent.com/microsoft/policy-mcp/main/schema/policy-v1.0.schema.json
version: "1.0"
description: "Network-only policy for API access"
permissions:
  network:
    allow:
    - host: "api.github.com"
    - host: "*.googleapis.com"
    - host: "registry.npmjs.org"
    - cidr: "192.168.1.0/24"
    - cidr: "10.0.0.0/8"
    deny:
    - host: "*.facebook.com"
    - host: "*.doubleclick.net"
    - cidr: "169.254.0.0/16"
""",
    """$schema: https://raw.githubusercontent.com/microsoft/policy-mcp/main/schema/policy-v1.0.schema.json
version: "1.0"
description: "Web service policy for HTTP server deployment"
permissions:
  storage:
    allow:
    - uri: "fs://app/**"
      access: ["read"]
    - uri: "fs://logs/**"
      access: ["write"]
    - uri: "fs://uploads/**"
      access: ["read", "write"]
    deny:
    - uri: "fs://app/config/secrets.yaml"
      access: ["read"]

  network:
    allow:
    - host: "api.stripe.com"
    - host: "api.sendgrid.com"
    - host: "*.amazonaws.com"
    - cidr: "10.0.0.0/8"
    deny:
    - host: "*.internal.admin.com"

  environment:
    allow:
    - key: "PATH"
    - key: "PORT"
    - key: "NODE_ENV"
    - key: "DATABASE_URL"
    - key: "REDIS_URL"
    - key: "JWT_SECRET"
    - key: "STRIPE_API_KEY"

  runtime:
    docker:
      security:
        privileged: false
        no_new_privileges: true
        capabilities:
          drop: ["ALL"]
          add: ["NET_BIND_SERVICE"]

  resources:
    cpu: 75.0
    memory: 512
    io: 500
""",
    """$schema: https://raw.githubusercontent.com/microsoft/policy-mcp/main/schema/policy-v1.0.schema.json
version: "1.0"
description: "Permission policy for memory server"
permissions: {}
""",
)

COMPONENT_NAMES = (
    "fetch-rs",
    "filesystem-rs",
    "get-weather-js",
    "get-open-meteo-weather-js",
    "memory-js",
    "time-server-js",
    "arxiv-rs",
    "brave-search-rs",
    "context7-rs",
    "eval-py",
    "gomodule-go",
    "qr-code-js",
    "calculator-rs",
    "github-issues-py",
    "slack-notify-js",
    "pdf-extract-rs",
)
HOSTS = (
    "api.openai.com",
    "api.anthropic.com",
    "api.github.com",
    "uploads.github.com",
    "*.googleapis.com",
    "api.open-meteo.com",
    "geocoding-api.open-meteo.com",
    "export.arxiv.org",
    "api.search.brave.com",
    "context7.com",
    "registry.npmjs.org",
    "pypi.org",
    "files.pythonhosted.org",
    "*.s3.amazonaws.com",
    "hooks.slack.com",
    "api.stripe.com",
    "api.sendgrid.com",
    "*.blob.core.windows.net",
    "login.microsoftonline.com",
    "graph.microsoft.com",
)
STORAGE_URIS = (
    "fs:///var/lib/wassette/cache/**",
    "fs:///srv/data/reports",
    "fs:///home/agent/workspace/**",
    "fs:///tmp/**",
    "fs:///etc/ssl/certs",
    "fs:///opt/models/*.onnx",
)
SECRET_KEYS = (
    "API_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GITHUB_TOKEN",
    "DATABASE_URL",
    "SLACK_WEBHOOK_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "BRAVE_API_KEY",
    "CONTEXT7_API_KEY",
    "OPENWEATHER_API_KEY",
    "STRIPE_API_KEY",
)
ENV_KEYS = (
    "LOG_LEVEL",
    "RUST_LOG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "WASSETTE_MAX_MEMORY",
    "WASSETTE_BIND_ADDRESS",
    "DEPLOY_ENV",
    "REGION",
    "FEATURE_FLAGS",
)
ACTORS = (
    "alice@ops-01",
    "bob@ops-02",
    "ci@runner-17",
    "agent:planner@host-3",
    "agent:coder@host-3",
    "filesystem",
)
VERBS = ("get", "list", "search", "fetch", "create", "update", "delete", "summarize", "convert")
NOUNS = ("item", "page", "issue", "forecast", "file", "record", "message", "document", "entry")
WORDS = (
    "the target resource",
    "an optional filter expression",
    "maximum number of results to return",
    "ISO-8601 timestamp",
    "identifier of the parent object",
    "free text query",
    "whether to follow redirects",
    "language code such as en-US",
    "page token from a previous call",
)


# --------------------------------------------------------------------------- content


def _schema(rng: random.Random, depth: int) -> dict[str, Any]:
    """One JSON Schema node of a WIT type, as store.wasm would derive it."""
    r = rng.random()
    if depth >= 2 or r < 0.55:
        kind = rng.choice(("string", "number", "boolean", "string", "number"))
        node: dict[str, Any] = {"type": kind}
        if kind == "string" and rng.random() < 0.2:
            node["enum"] = rng.sample(("json", "text", "markdown", "html", "csv"), 3)
        return node
    if r < 0.68:
        return {"type": "array", "items": _schema(rng, depth + 1)}
    if r < 0.78:
        return {"anyOf": [{"type": "null"}, _schema(rng, depth + 1)]}
    if r < 0.84:
        return {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"tag": {"const": tag}, "val": _schema(rng, depth + 1)},
                    "required": ["tag", "val"],
                }
                for tag in ("ok", "err")
            ]
        }
    props = {
        f"{rng.choice(NOUNS)}_{rng.choice(('id', 'name', 'url', 'count', 'kind', 'flags'))}": (
            _schema(rng, depth + 1)
        )
        for _ in range(rng.randint(2, 3))
    }
    return {"type": "object", "properties": props, "required": sorted(props)}


def make_metadata(rng: random.Random, cid: str, sha: str, size: int, mtime: int) -> dict[str, Any]:
    """Wassette's ComponentMetadata with 3-6 tools (2-4 KB of JSON)."""
    package = f"component:{cid.rsplit('-', 1)[0]}"
    interface = f"{package}/{rng.choice(NOUNS)}s" if rng.random() < 0.7 else None
    tools: list[dict[str, Any]] = []
    idents: list[dict[str, Any]] = []
    names: set[str] = set()
    count = rng.randint(3, 6)
    while len(tools) < count:
        fn = f"{rng.choice(VERBS)}-{rng.choice(NOUNS)}"
        base = f"{interface}_{fn}" if interface else fn
        name = "".join(c if c.isalnum() or c == "-" else "_" for c in base.lower())
        if name in names:
            continue
        names.add(name)
        params = {
            f"{rng.choice(NOUNS)}_{rng.choice(('id', 'query', 'limit', 'options', 'url'))}": (
                _schema(rng, 0)
            )
            for _ in range(rng.randint(1, 3))
        }
        tool: dict[str, Any] = {
            "name": name,
            "description": f"{fn.replace('-', ' ').capitalize()}: {rng.choice(WORDS)}, "
            f"{rng.choice(WORDS)} and {rng.choice(WORDS)}.",
            "inputSchema": {"type": "object", "properties": params, "required": sorted(params)},
        }
        if rng.random() < 0.7:
            tool["outputSchema"] = {"type": "object", "properties": {"result": _schema(rng, 1)}}
        tools.append(tool)
        idents.append({"package_name": package, "interface_name": interface, "function_name": fn})
    return {
        "component_id": cid,
        "tool_schemas": tools,
        "function_identifiers": idents,
        "tool_names": [t["name"] for t in tools],
        "validation_stamp": {"file_size": size, "mtime": mtime, "content_hash": sha},
        "created_at": mtime,
    }


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar


def _yaml_lines(obj: Any, pad: str, out: list[str]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict | list) and v:
                out.append(f"{pad}{k}:")
                _yaml_lines(v, pad if isinstance(v, list) else pad + "  ", out)
            elif isinstance(v, dict | list):
                out.append(f"{pad}{k}: {'{}' if isinstance(v, dict) else '[]'}")
            else:
                out.append(f"{pad}{k}: {_scalar(v)}")
        return
    for item in obj:
        if isinstance(item, dict) and item:
            sub: list[str] = []
            _yaml_lines(item, pad + "  ", sub)
            out.append(f"{pad}- {sub[0][len(pad) + 2 :]}")
            out.extend(sub[1:])
        elif isinstance(item, list) and item:
            out.append(f"{pad}- {json.dumps(item)}")
        else:
            out.append(f"{pad}- {_scalar(item)}")


def render_yaml(doc: dict[str, Any]) -> str:
    """Block YAML of a plain document (fast; policies only need dicts, lists and scalars)."""
    out: list[str] = []
    _yaml_lines(doc, "", out)
    return "\n".join(out) + "\n"


_RENDERED: dict[tuple[Any, ...], str] = {}


@dataclass
class PolicyModel:
    """A component's policy: a template (or the auto-generated one) plus grants on top."""

    template: int | None
    source_uri: str
    attached_at: int
    hosts: list[str] = field(default_factory=list)
    storage: list[tuple[str, list[str]]] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    memory: str | None = None

    def render(self, cid: str, docs: list[dict[str, Any]]) -> str:
        if self.template is not None and not (
            self.hosts or self.storage or self.env or self.memory
        ):
            return POLICY_TEMPLATES[self.template]
        key = (
            self.template if self.template is not None else cid,
            tuple(self.hosts),
            tuple((u, tuple(a)) for u, a in self.storage),
            tuple(self.env),
            self.memory,
        )
        text = _RENDERED.get(key)
        if text is None:
            if len(_RENDERED) > 200_000:
                _RENDERED.clear()
            text = _RENDERED[key] = self._render(cid, docs)
        return text

    def _render(self, cid: str, docs: list[dict[str, Any]]) -> str:
        base = (
            docs[self.template]
            if self.template is not None
            else {
                "version": "1.0",
                "description": f"Auto-generated policy for component: {cid}",
                "permissions": {},
            }
        )
        doc = dict(base)
        perms = dict(doc.get("permissions") or {})
        doc["permissions"] = perms
        if self.hosts:
            net = dict(perms.get("network") or {})
            net["allow"] = [*(net.get("allow") or []), *({"host": h} for h in self.hosts)]
            perms["network"] = net
        if self.storage:
            st = dict(perms.get("storage") or {})
            st["allow"] = [
                *(st.get("allow") or []),
                *({"uri": u, "access": a} for u, a in self.storage),
            ]
            perms["storage"] = st
        if self.env:
            en = dict(perms.get("environment") or {})
            en["allow"] = [*(en.get("allow") or []), *({"key": k} for k in self.env)]
            perms["environment"] = en
        if self.memory:
            res = dict(perms.get("resources") or {})
            res["limits"] = {**(res.get("limits") or {}), "memory": self.memory}
            perms["resources"] = res
        return render_yaml(doc)


# --------------------------------------------------------------------------- the workload


@dataclass
class Tx:
    actor: str
    command: str
    kind: str
    events: list[Any]
    at_us: int  # simulated recorded_at
    setup: bool = False  # part of the initial attaches


class Workload:
    """Decides realistic commands against its own model of the state (no database reads)."""

    def __init__(
        self, seed: int, components: int, component_dir: Path, secrets_dir: Path, blobs: Any
    ):
        import yaml

        from wassette_state.store.domain import events as ev

        self.ev = ev
        self.rng = random.Random(seed)
        self.n_components = components
        self.component_dir = component_dir
        self.secrets_dir = secrets_dir
        self.blobs = blobs
        self.docs = [yaml.safe_load(t) for t in POLICY_TEMPLATES]
        self.present: list[str] = []
        self.index: dict[str, int] = {}  # position in self.present
        self.detached: list[str] = []
        self.policies: dict[str, PolicyModel] = {}
        self.secret_keys: dict[str, set[str]] = {}
        self.env: dict[str, str] = {}
        self.tx_count = 0
        self.checked = 0

    # ---------------------------------------------------------------- helpers

    def _now_s(self) -> int:
        return (T0_US + self.tx_count * TX_STEP_US) // 1_000_000

    def _add(self, cid: str) -> None:
        self.index[cid] = len(self.present)
        self.present.append(cid)

    def _remove(self, cid: str) -> None:
        i = self.index.pop(cid)
        last = self.present.pop()
        if last != cid:
            self.present[i] = last
            self.index[last] = i

    def _pick(self) -> str:
        return self.present[self.rng.randrange(len(self.present))]

    def _policy_text(self, cid: str, model: PolicyModel) -> str:
        text = model.render(cid, self.docs)
        if self.checked < 64:  # the fast renderer must write what the project accepts
            from wassette_state.store.domain.policy_text import parse_policy

            parse_policy(text)
            self.checked += 1
        return text

    def _attach(self, cid: str) -> list[Any]:
        rng = self.rng
        wasm = b"\x00asm\x0d\x00\x01\x00" + rng.randbytes(rng.randint(2048, 6144))
        sha = hashlib.sha256(wasm).hexdigest()
        self.blobs.put(wasm, sha)
        meta = make_metadata(rng, cid, sha, len(wasm), self._now_s())
        return [
            self.ev.ComponentAttached(
                component_id=cid,
                source_uri=f"file:///srv/wassette/build/{cid}.wasm",
                wasm_sha256=sha,
                metadata=meta,
            )
        ]

    def _policy_attach(self, cid: str) -> Any:
        t = self.rng.randrange(len(POLICY_TEMPLATES))
        model = PolicyModel(t, f"file:///etc/wassette/policies/{cid}.yaml", self._now_s())
        self.policies[cid] = model
        return self.ev.PolicyAttached(
            component_id=cid,
            source_uri=model.source_uri,
            policy_content=POLICY_TEMPLATES[t],
            attached_at=model.attached_at,
        )

    def _secret_set(self, cid: str) -> Any:
        keys = sorted(self.rng.sample(SECRET_KEYS, self.rng.choice((1, 1, 1, 2))))
        self.secret_keys.setdefault(cid, set()).update(keys)
        return self.ev.SecretKeysSet(component_id=cid, keys=keys)

    def _tx(self, command: str, events: list[Any], kind: str = "change", setup: bool = False) -> Tx:
        self.tx_count += 1
        actor = "filesystem" if kind == "sync" else self.rng.choice(ACTORS[:-1])
        return Tx(actor, command, kind, events, T0_US + self.tx_count * TX_STEP_US, setup)

    # ---------------------------------------------------------------- commands

    def setup(self) -> Iterator[Tx]:
        ev = self.ev
        yield self._tx(
            "env set LOG_LEVEL REGION",
            [
                ev.PathsSet(
                    component_dir=str(self.component_dir), secrets_dir=str(self.secrets_dir)
                ),
                ev.EnvSet(key="LOG_LEVEL", value="info"),
                ev.EnvSet(key="REGION", value="westeurope"),
            ],
            setup=True,
        )
        self.env.update(LOG_LEVEL="info", REGION="westeurope")
        for i in range(self.n_components):
            cid = f"{COMPONENT_NAMES[i % len(COMPONENT_NAMES)]}-{i:05d}"
            events = self._attach(cid)
            command = f"component attach file:///srv/wassette/build/{cid}.wasm"
            if self.rng.random() < 0.7:
                events.append(self._policy_attach(cid))
                command += f" --policy /etc/wassette/policies/{cid}.yaml"
            self._add(cid)
            yield self._tx(command, events, setup=True)
            if self.rng.random() < 0.6:
                e = self._secret_set(cid)
                yield self._tx(f"secret set {cid} {' '.join(e.keys)}", [e], setup=True)

    def steady(self) -> Iterator[Tx]:
        while True:
            r = self.rng.random()
            if r < 0.05:
                # an import: several components brought in line with a handed-over file
                events: list[Any] = []
                for _ in range(self.rng.randint(3, 12)):
                    events.extend(self._one(self._pick(), self.rng.random() * 0.7)[1])
                yield self._tx("state import handoff.yaml", events, kind="import")
                continue
            command, events = self._one(self._pick(), r)
            if events:
                yield self._tx(command, events)

    def _one(self, cid: str, r: float) -> tuple[str, list[Any]]:
        """One command on one component (or the instance), chosen by r in [0, 1)."""
        ev, rng = self.ev, self.rng
        if r < 0.45:
            return self._permission(cid)
        if r < 0.68:
            e = self._secret_set(cid)
            return f"secret set {cid} {' '.join(e.keys)}", [e]
        if r < 0.82:
            keys = sorted(rng.sample(ENV_KEYS, rng.choice((1, 1, 2, 3))))
            out = []
            for k in keys:
                value = f"{k.lower()}-{rng.randrange(10_000)}"
                self.env[k] = value
                out.append(ev.EnvSet(key=k, value=value))
            return f"env set {' '.join(keys)}", out
        if r < 0.87:
            have = sorted(self.secret_keys.get(cid, ()))
            if not have:
                e = self._secret_set(cid)
                return f"secret set {cid} {' '.join(e.keys)}", [e]
            gone = [rng.choice(have)]
            self.secret_keys[cid].difference_update(gone)
            return f"secret delete {cid} {gone[0]}", [
                ev.SecretKeysDeleted(component_id=cid, keys=gone)
            ]
        if r < 0.89 and self.env:
            k = rng.choice(sorted(self.env))
            del self.env[k]
            return f"env unset {k}", [ev.EnvUnset(key=k)]
        if r < 0.925:
            return f"policy attach {cid} policy.yaml", [self._policy_attach(cid)]
        if r < 0.93 and cid in self.policies:
            del self.policies[cid]
            return f"policy detach {cid}", [ev.PolicyDetached(component_id=cid)]
        if r < 0.94:
            return f"component attach {cid}.wasm", self._attach(cid)
        if r < 0.943 and len(self.present) > 1:
            self._remove(cid)
            self.detached.append(cid)
            self.policies.pop(cid, None)
            self.secret_keys.pop(cid, None)
            return f"component detach {cid}", [ev.ComponentDetached(component_id=cid)]
        if r < 0.946 and self.detached:
            back = self.detached.pop(rng.randrange(len(self.detached)))
            self._add(back)
            return f"component attach {back}.wasm", self._attach(back)
        return self._permission(cid)

    def _permission(self, cid: str) -> tuple[str, list[Any]]:
        rng = self.rng
        model = self.policies.get(cid)
        created = model is None
        if model is None:
            model = PolicyModel(
                None, (self.component_dir / f"{cid}.policy.yaml").as_uri(), self._now_s()
            )
            self.policies[cid] = model
        kind = rng.choices(("network", "storage", "environment-variable", "memory"), (6, 2, 2, 1))[
            0
        ]
        change: dict[str, Any]
        if kind == "network":
            if len(model.hosts) >= 6 or (model.hosts and rng.random() < 0.3):
                host = model.hosts.pop(rng.randrange(len(model.hosts)))
                change = {"op": "revoke", "kind": kind, "host": host}
            else:
                host = rng.choice([h for h in HOSTS if h not in model.hosts])
                model.hosts.append(host)
                change = {"op": "grant", "kind": kind, "host": host}
            words = f"{kind} {cid} {host}"
        elif kind == "storage":
            if len(model.storage) >= 3 or (model.storage and rng.random() < 0.3):
                uri, access = model.storage.pop(rng.randrange(len(model.storage)))
                change = {"op": "revoke", "kind": kind, "uri": uri, "access": access}
            else:
                have = {u for u, _ in model.storage}
                uri = rng.choice([u for u in STORAGE_URIS if u not in have])
                access = rng.choice((["read"], ["read", "write"]))
                model.storage.append((uri, access))
                change = {"op": "grant", "kind": kind, "uri": uri, "access": access}
            words = f"{kind} {cid} {uri} --access {','.join(access)}"
        elif kind == "environment-variable":
            if len(model.env) >= 4 or (model.env and rng.random() < 0.3):
                key = model.env.pop(rng.randrange(len(model.env)))
                change = {"op": "revoke", "kind": kind, "key": key}
            else:
                key = rng.choice([k for k in ENV_KEYS if k not in model.env])
                model.env.append(key)
                change = {"op": "grant", "kind": kind, "key": key}
            words = f"{kind} {cid} {key}"
        else:
            limit = rng.choice(("128Mi", "256Mi", "512Mi", "1Gi", "2Gi"))
            model.memory = limit
            change = {"op": "grant", "kind": kind, "limit": limit}
            words = f"{kind} {cid} {limit}"
        event = self.ev.PolicyChanged(
            component_id=cid,
            policy_content=self._policy_text(cid, model),
            change=change,
            source_uri=model.source_uri if created else None,
            attached_at=model.attached_at if created else None,
        )
        return f"permission {change['op']} {words}", [event]

    def transactions(self) -> Iterator[Tx]:
        yield from self.setup()
        yield from self.steady()


# --------------------------------------------------------------------------- generation


@dataclass
class GenStats:
    components: int
    events: int
    transactions: int
    seed: int
    commands_per_tx: int
    readmodels: str
    seconds_events: float
    seconds_rebuild: float
    seconds_files: float
    events_per_second: float  # log.append (+ readmodel.apply in "apply" mode) only
    db_bytes: int
    setup_events: int | None  # events once every component is attached
    setup_db_bytes: int | None  # database size at that point ("apply" mode only)
    by_type: dict[str, int]


def _progress(total: int, label: str, enabled: bool) -> Any:
    """A rich progress bar on stderr, or a plain fallback when rich is missing or disabled."""

    class Plain:
        def __init__(self) -> None:
            self.done = 0
            self.last = 0.0
            self.start = time.perf_counter()

        def __enter__(self) -> Plain:
            return self

        def __exit__(self, *exc: object) -> None:
            if enabled:
                print(f"{label}: {self.done}/{total} done", file=sys.stderr)

        def advance(self, n: int) -> None:
            self.done += n
            now = time.perf_counter()
            if enabled and now - self.last > 5:
                self.last = now
                rate = self.done / max(now - self.start, 1e-9)
                print(f"{label}: {self.done}/{total} ({rate:,.0f}/s)", file=sys.stderr)

    if not enabled:
        return Plain()
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
    except ImportError:
        return Plain()

    class Rich:
        def __init__(self) -> None:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self.task = self.progress.add_task(label, total=total, rate="")
            self.start = time.perf_counter()
            self.done = 0

        def __enter__(self) -> Rich:
            self.progress.__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self.progress.__exit__(None, None, None)

        def advance(self, n: int) -> None:
            self.done += n
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            self.progress.update(self.task, advance=n, rate=f"{rate:,.0f}/s")

    return Rich()


def _grouped(txs: Iterator[Tx], size: int) -> Iterator[Tx]:
    """Several commands recorded as one transaction (faster generation, fewer `transactions`)."""
    if size <= 1:
        yield from txs
        return
    while True:
        group = [next(txs) for _ in range(size)]
        head = group[0]
        kind = "import" if any(t.kind == "import" for t in group) else head.kind
        yield Tx(
            head.actor,
            f"{head.command} (+{size - 1} more commands)",
            kind,
            [e for t in group for e in t.events],
            group[-1].at_us,
            head.setup,
        )


@contextlib.contextmanager
def _deferred_fsync() -> Iterator[None]:
    """Skip the per-file fsync of blobs and materialized files while generating; one `os.sync`
    at the end makes the cache entry durable. (A benchmark fixture, not a store command: the
    database itself keeps its configured synchronous mode.)"""
    real = os.fsync
    os.fsync = lambda fd: None  # type: ignore[assignment]
    try:
        yield
    finally:
        os.fsync = real
        os.sync()


def generate(
    db_path: str | Path,
    components: int = 10_000,
    events: int = 1_000_000,
    seed: int = 20261125,
    *,
    commands_per_tx: int = 1,
    readmodels: str = "auto",
    component_dir: str | Path | None = None,
    secrets_dir: str | Path | None = None,
    batch_events: int = BATCH_EVENTS,
    materialize: bool = True,
    progress: bool = True,
) -> GenStats:
    """Build a store of `events` events over `components` components through the project's API.

    `commands_per_tx` > 1 records several commands as one transaction (the per-transaction cost
    of `log.append` dominates otherwise). `readmodels`: "apply" updates the read models batch by
    batch with `readmodel.apply` (the path commands take); "rebuild" derives them once at the
    end with `Store.rebuild` (much faster for large stores); "auto" = apply for one command per
    transaction, else rebuild. `db_path` must not exist yet; the component and secrets dirs
    default to siblings of the database.
    """
    from wassette_state.store.files.config import resolve
    from wassette_state.store.usecases.service import Store

    if readmodels == "auto":
        readmodels = "apply" if commands_per_tx <= 1 else "rebuild"
    if readmodels not in ("apply", "rebuild"):
        raise ValueError(f"readmodels must be apply, rebuild or auto, not {readmodels!r}")
    db_path = Path(db_path)
    if db_path.exists():
        raise FileExistsError(db_path)
    root = db_path.parent
    cdir = Path(component_dir) if component_dir else root / "components"
    sdir = Path(secrets_dir) if secrets_dir else root / "secrets"
    with _deferred_fsync():
        return _generate(
            Store(resolve(str(db_path), str(cdir), str(sdir), ACTOR)),
            db_path,
            sdir,
            components,
            events,
            seed,
            commands_per_tx,
            readmodels,
            batch_events,
            materialize,
            progress,
        )


def _generate(
    store: Any,
    db_path: Path,
    sdir: Path,
    components: int,
    events: int,
    seed: int,
    commands_per_tx: int,
    readmodels: str,
    batch_events: int,
    materialize: bool,
    progress: bool,
) -> GenStats:
    from wassette_state.store.domain.fold import project
    from wassette_state.store.domain.state import State
    from wassette_state.store.persistence import db, log, readmodel

    work = Workload(seed, components, store.settings.component_dir, sdir, store.blobs)
    txs = _grouped(work.transactions(), commands_per_tx)
    state = State()
    by_type: dict[str, int] = {}
    written = 0
    setup_point: tuple[int, int] | None = None  # (events, db bytes) once every component exists
    start = time.perf_counter()
    pending: Tx | None = None
    with _progress(events, f"generating {events:,} events", progress) as bar:
        while written < events:
            budget = min(batch_events, events - written)
            batch: list[Tx] = []
            n = 0
            while n < budget:
                tx = pending or next(txs)
                pending = None
                if batch and tx.setup != batch[-1].setup:
                    pending = tx  # end the batch where the setup ends, to measure the size
                    break
                if n + len(tx.events) > budget:
                    if n == 0 or n + len(tx.events) > events - written:
                        tx.events = tx.events[: budget - n]  # the log's last command, trimmed
                    else:
                        pending = tx
                        break
                batch.append(tx)
                n += len(tx.events)
            stored: list[Any] = []
            with db.write_tx(store.engine) as conn:
                for tx in batch:
                    appended = log.append(
                        conn,
                        log.TxInfo(actor=tx.actor, command=tx.command, kind=tx.kind),
                        tx.events,
                        None,
                        now_us=tx.at_us,
                    )
                    stored.extend(appended.events)
                    for e in tx.events:
                        by_type[e.type] = by_type.get(e.type, 0) + 1
                if readmodels == "apply":
                    readmodel.apply(conn, stored, state)
            if readmodels == "apply":
                state = project((e for tx in batch for e in tx.events), state)
            written += n
            bar.advance(n)
            if setup_point is None and pending is not None and not pending.setup:
                with store.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                setup_point = (written, db_bytes(db_path))
    seconds_events = time.perf_counter() - start

    seconds_rebuild = 0.0
    if readmodels == "rebuild":
        start = time.perf_counter()
        with _progress(1, "deriving read models (Store.rebuild)", progress) as bar:
            store.rebuild()
            bar.advance(1)
        seconds_rebuild = time.perf_counter() - start
        state = store.state()

    start = time.perf_counter()
    if materialize:
        from wassette_state.store.files import secrets as secret_files

        with _progress(2, "materializing files", progress) as bar:
            store.materialize(None)
            bar.advance(1)
            for cid, comp in sorted(state.components.items()):
                if comp.secret_keys:
                    secret_files.write_values(
                        sdir, cid, {k: f"bench-{k.lower()}-value" for k in comp.secret_keys}
                    )
            bar.advance(1)
    seconds_files = time.perf_counter() - start
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        tx_total = log.head(conn)[2]
    store.close()
    return GenStats(
        components=components,
        events=written,
        transactions=tx_total,
        seed=seed,
        commands_per_tx=commands_per_tx,
        readmodels=readmodels,
        seconds_events=round(seconds_events, 2),
        seconds_rebuild=round(seconds_rebuild, 2),
        seconds_files=round(seconds_files, 2),
        events_per_second=round(written / max(seconds_events, 1e-9)),
        db_bytes=db_bytes(db_path),
        setup_events=setup_point[0] if setup_point else None,
        setup_db_bytes=setup_point[1] if setup_point and readmodels == "apply" else None,
        by_type=dict(sorted(by_type.items())),
    )


def db_bytes(db_path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        p = Path(f"{db_path}{suffix}")
        if p.exists():
            total += p.stat().st_size
    return total


# --------------------------------------------------------------------------- cache


def fingerprint() -> str:
    """What a cached store depends on: the generator's version (bump GENERATOR_VERSION whenever
    a change here alters what is generated), the schema revision, and the store's on-disk
    format, probed by writing a small transaction with the project's code into an in-memory
    database and hashing every row (hash chain, read-model rows, content blobs). A new
    migration or a change to the hashing or the row encoding thus regenerates cached stores
    (so opening one never migrates it); a change that writes the same bytes does not."""
    from sqlalchemy import create_engine

    from wassette_state.store.domain import events as ev
    from wassette_state.store.domain.state import State
    from wassette_state.store.persistence import log, migrate, readmodel, schema

    engine = create_engine("sqlite://")
    schema.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(schema.store_identity.insert().values(id=1, lineage="probe", created_at=0))
    meta = make_metadata(random.Random(1), "probe-00001", "0" * 64, 10, 1)
    probe = [
        ev.PathsSet(component_dir="/c", secrets_dir="/s"),
        ev.ComponentAttached(
            component_id="probe-00001",
            source_uri="file:///p.wasm",
            wasm_sha256="0" * 64,
            metadata=meta,
        ),
        ev.PolicyAttached(
            component_id="probe-00001",
            source_uri="file:///p.yaml",
            policy_content=POLICY_TEMPLATES[0],
            attached_at=1,
        ),
        ev.SecretKeysSet(component_id="probe-00001", keys=["API_KEY"]),
        ev.EnvSet(key="LOG_LEVEL", value="info"),
    ]
    h = hashlib.sha256(f"gen{GENERATOR_VERSION}:{migrate.HEAD}".encode())
    with engine.begin() as conn:
        tx = log.TxInfo(actor="probe", command="probe")
        appended = log.append(conn, tx, probe, None, now_us=T0_US)
        readmodel.apply(conn, appended.events, State())
        for table in schema.metadata.sorted_tables:
            for row in conn.execute(table.select()).all():
                h.update(repr((table.name, tuple(row))).encode())
    engine.dispose()
    return h.hexdigest()[:12]


def ensure(
    components: int,
    events: int,
    seed: int = 20261125,
    *,
    commands_per_tx: int = 1,
    cache_dir: Path = CACHE_DIR,
    regenerate: bool = False,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """A cached generated store, generated on first use: (its directory, its GenStats).

    The key holds the parameters and a fingerprint of the generator and of the store modules
    that decide what is written, so a change to either regenerates; older entries with the
    same parameters are deleted. An entry is complete once its `generated.json` exists.
    """
    prefix = f"c{components}-e{events}-s{seed}-t{commands_per_tx}-"
    entry = cache_dir / f"{prefix}{fingerprint()}"
    meta = entry / "generated.json"
    if meta.exists() and not regenerate:
        return entry, json.loads(meta.read_text())
    cache_dir.mkdir(parents=True, exist_ok=True)
    for old in cache_dir.glob(f"{prefix}*"):  # stale or partial versions of the same store
        shutil.rmtree(old, ignore_errors=True)
    entry.mkdir(parents=True)
    stats = generate(
        entry / "state.db",
        components,
        events,
        seed,
        commands_per_tx=commands_per_tx,
        progress=progress,
    )
    meta.write_text(json.dumps(asdict(stats), indent=2))
    return entry, asdict(stats)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n")[0])
    p.add_argument("target", help="directory to create (state.db, components/, secrets/)")
    p.add_argument("--components", type=int, default=10_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--batch", type=int, default=BATCH_EVENTS, help="events per SQLite transaction")
    p.add_argument(
        "--commands-per-tx",
        type=int,
        default=1,
        help="commands recorded per transaction (1 = realistic; 16 makes 1M events fast)",
    )
    p.add_argument("--readmodels", choices=("auto", "apply", "rebuild"), default="auto")
    args = p.parse_args(argv)
    target = Path(args.target)
    target.mkdir(parents=True, exist_ok=True)
    stats = generate(
        target / "state.db",
        args.components,
        args.events,
        args.seed,
        commands_per_tx=args.commands_per_tx,
        readmodels=args.readmodels,
        batch_events=args.batch,
    )
    print(json.dumps(asdict(stats), indent=2))


if __name__ == "__main__":
    main()
