"""Properties of export/import over generated histories, built through the library on real
stores: components attached from a small pool of real wasm binaries, Wassette's own policy files,
permission grants, secret keys (with values on disk) and env vars.

1. export → import into an empty store → export gives the same document, except what belongs to
   the exporting store or moment (exported_at, as_of, store); importing it again changes nothing.
2. the state at seq k (what `state export --at seq:k` writes) is the fold of the log's first k
   events, for every k.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests import wasm_fixtures as fx
from tests.conftest import CONFORMANCE
from wassette_state.cli.main import App
from wassette_state.cli.state import snapshot_doc
from wassette_state.store.domain import fold
from wassette_state.store.domain.errors import NotFound
from wassette_state.store.domain.snapshot_model import format_for
from wassette_state.store.domain.snapshot_parse import parse_snapshot
from wassette_state.store.persistence import log, readmodel
from wassette_state.store.usecases import commands, exporter, importer, secret_commands
from wassette_state.store.usecases.service import Store

KINDS = ("simple", "weather", "interface", "documented")
POLICIES = sorted((CONFORMANCE / "policies" / "valid").glob("*.yaml"))
IDS = ("alpha", "beta", "gamma.v2")
SECRET_KEYS = ("API_KEY", "TOKEN", "Z_SECRET")
ENV_KEYS = ("LOG_LEVEL", "REGION", "x.y-z", "_UNDER")
HOSTS = ("api.example.com", "*.example.org", "*")
LOCAL = ("exported_at", "as_of", "store")
FIXED_PATHS = {"component_dir": "/srv/wassette/components", "secrets_dir": "/etc/wassette/secrets"}

# Values YAML or JSON could misread, then anything (no NUL: env values refuse it).
AWKWARD = ("info\n", "yes", "null", "~", "1e5", "0x1F", "a: b", " lead", "#x", "-", "two\nlines")
text = st.sampled_from(AWKWARD) | st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
cid = st.sampled_from(IDS)
attach = st.tuples(
    st.just("attach"), cid, st.sampled_from(KINDS), st.none() | st.sampled_from(POLICIES)
)
ops = st.one_of(
    attach,
    attach,
    st.tuples(st.just("detach"), cid),
    st.tuples(st.just("policy"), cid, st.sampled_from(POLICIES)),
    st.tuples(st.just("policy_detach"), cid),
    st.tuples(st.just("grant"), cid, st.sampled_from(HOSTS)),
    st.tuples(
        st.just("secret_set"),
        cid,
        st.dictionaries(st.sampled_from(SECRET_KEYS), text, min_size=1, max_size=2),
    ),
    st.tuples(st.just("secret_delete"), cid, st.sampled_from(SECRET_KEYS)),
    st.tuples(st.just("env_set"), st.dictionaries(st.sampled_from(ENV_KEYS), text, min_size=1)),
    st.tuples(st.just("env_unset"), st.sampled_from(ENV_KEYS)),
)
# Start with attaches so most histories have something to export.
histories = st.builds(
    lambda first, rest: [*first, *rest],
    st.lists(attach, min_size=1, max_size=3),
    st.lists(ops, max_size=10),
)

PROPERTY = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Site:
    """A store location under `root`, opened through the same settings the CLI resolves."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.app = App(
            db=str(root / "state.db"),
            component_dir=str(root / "components"),
            secrets_dir=str(root / "secrets"),
            actor="property@test",
        )

    @property
    def store(self) -> Store:
        return self.app.store

    def doc(self, when: str | None = None, **paths: str) -> dict[str, Any]:
        return snapshot_doc(self.app, when, paths.get("component_dir"), paths.get("secrets_dir"))

    def lazy_doc(self, **paths: str) -> dict[str, Any]:
        """The document `state export` renders (metadata kept as stored text)."""
        return snapshot_doc(
            self.app, None, paths.get("component_dir"), paths.get("secrets_dir"), lazy=True
        )


def render(lazy: dict[str, Any], fmt: str) -> bytes:
    """The bytes `state export` writes for that document."""
    return exporter.render_state_yaml(lazy) if fmt == "yaml" else exporter.render_state_json(lazy)


def build(site: Site, pool: Path, history: list[tuple[Any, ...]]) -> None:
    store = site.store
    for op in history:
        name, *args = op
        try:
            if name == "attach":
                component_id, kind, policy = args
                commands.attach(
                    store, str(pool / f"{kind}.wasm"), component_id, str(policy) if policy else None
                )
            elif name == "detach":
                commands.detach(store, args[0])
            elif name == "policy":
                commands.policy_attach(store, args[0], str(args[1]))
            elif name == "policy_detach":
                if store.state().components.get(args[0]) is None:
                    continue
                commands.policy_detach(store, args[0])
            elif name == "grant":
                commands.permission(store, "grant", args[0], "network", args[1])
            elif name == "secret_set":
                secret_commands.secret_set(store, args[0], args[1])
            elif name == "secret_delete":
                secret_commands.secret_delete(store, args[0], [args[1]])
            elif name == "env_set":
                commands.env_set(store, args[0])
            elif name == "env_unset":
                commands.env_unset(store, [args[0]])
        except NotFound:
            continue  # e.g. a secret of a component that is not attached: not a change


def write_pool(root: Path) -> Path:
    pool = root / "pool"
    pool.mkdir()
    for kind in KINDS:
        fx.write_component(pool / f"{kind}.wasm", kind=kind)
    return pool


def without_local(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in LOCAL}


@PROPERTY
@given(history=histories, fmt=st.sampled_from(["json", "yaml"]))
@example(
    history=[("attach", "alpha", "weather", POLICIES[0]), ("env_set", {"LOG_LEVEL": "info\n"})],
    fmt="yaml",
)
def test_export_import_export_is_the_same_document(
    history: list[tuple[Any, ...]], fmt: str
) -> None:
    with tempfile.TemporaryDirectory(prefix="wassette-prop-") as tmp:
        root = Path(tmp)
        a, b = Site(root / "a"), Site(root / "b")
        try:
            build(a, write_pool(root), history)
            first = a.doc(None, **FIXED_PATHS)
            event(f"{len(first['components'])} components, {first['as_of']['seq']} events")
            path = root / f"state.{fmt}"
            lazy_a = a.lazy_doc(**FIXED_PATHS)
            data = render(lazy_a, fmt)
            exporter.write_output(str(path), data)
            assert format_for(str(path)) == fmt
            # What the exporter writes reads back as exactly the state's document.
            assert parse_snapshot(data, fmt).to_doc() == json.loads(json.dumps(first))

            outcome = importer.run_import(b.store, str(path))
            assert outcome.summary["skipped"] == []
            if first["components"] or first["environment"]:
                assert outcome.tx_id is not None
                with b.store.reading() as conn:
                    tx = log.transaction(conn, outcome.tx_id)
                assert tx is not None and tx["kind"] == "import"
            second = b.doc(None, **FIXED_PATHS)
            assert without_local(second) == without_local(first)
            assert second["store"]["lineage"] != first["store"]["lineage"]

            again = importer.run_import(b.store, str(path))
            assert again.tx_id is None and again.events == []
            # Given the same moment and store fields, B's export is A's, byte for byte.
            lazy_b = {**b.lazy_doc(**FIXED_PATHS), **{k: lazy_a[k] for k in LOCAL}}
            assert render(lazy_b, fmt) == data
        finally:
            a.app.close()
            b.app.close()


@PROPERTY
@given(history=histories)
def test_state_at_seq_k_is_the_fold_of_the_first_k_events(
    history: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory(prefix="wassette-prop-") as tmp:
        root = Path(tmp)
        site = Site(root / "a")
        try:
            build(site, write_pool(root), history)
            with site.store.reading() as conn:
                stored = log.read(conn)
                head = log.head(conn)[0]
                assert [e.seq for e in stored] == list(range(1, head + 1))
                for k in range(head + 1):
                    folded = fold.project(e.event() for e in stored[:k])
                    assert readmodel.state_at(conn, k) == folded, k
            for k in sorted({0, head // 2, head}):
                folded = fold.project(e.event() for e in stored[:k])
                doc = site.doc(f"seq:{k}")
                assert doc["as_of"]["seq"] == k
                paths = folded.paths
                expected = exporter.state_doc(
                    folded,
                    component_dir=paths.component_dir if paths else str(site.root / "components"),
                    secrets_dir=paths.secrets_dir if paths else str(site.root / "secrets"),
                    as_of=exporter.AsOf(**doc["as_of"]),
                    lineage=site.store.lineage,
                    at=doc["exported_at"],
                )
                assert json.loads(json.dumps(doc)) == json.loads(json.dumps(expected))
        finally:
            site.app.close()
