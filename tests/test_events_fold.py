"""Event models and the projection (pure: no database, no files)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from wassette_state.store.domain import events as ev
from wassette_state.store.domain.fold import evolve, project
from wassette_state.store.domain.state import Component, Paths, Policy, State

META = {"component_id": "weather", "tool_names": ["get-weather"], "tool_schemas": []}
META2 = {"component_id": "weather", "tool_names": ["get-weather", "get-alerts"], "tool_schemas": []}
SHA1 = "1" * 64
SHA2 = "2" * 64
# The registries as shipped, to check the temporary upcasters below are removed again.
SHIPPED_VERSIONS = dict(ev.TYPE_VERSIONS)
SHIPPED_UPCASTERS = dict(ev.UPCASTERS)


def attached(cid: str = "weather", sha: str = SHA1, meta: dict[str, Any] | None = None) -> Any:
    return ev.ComponentAttached(
        component_id=cid,
        source_uri=f"file:///srv/{cid}.wasm",
        wasm_sha256=sha,
        metadata=META if meta is None else meta,
    )


def policy_attached(cid: str = "weather", content: str = "version: '1.0'\n") -> Any:
    return ev.PolicyAttached(
        component_id=cid,
        source_uri=f"file:///etc/{cid}.policy.yaml",
        policy_content=content,
        attached_at=1_764_060_000,
    )


ONE_OF_EACH: list[Any] = [
    attached(),
    ev.ComponentDetached(component_id="weather"),
    policy_attached(),
    ev.PolicyChanged(
        component_id="weather",
        policy_content="version: '1.0'\npermissions: {}\n",
        change={"op": "grant", "kind": "network", "host": "api.x.com"},
    ),
    ev.PolicyChanged(
        component_id="weather",
        policy_content="version: '1.0'\n",
        change={"op": "grant", "kind": "network", "host": "a.b"},
        source_uri="file:///c/weather.policy.yaml",
        attached_at=5,
    ),
    ev.PolicyDetached(component_id="weather"),
    ev.SecretKeysSet(component_id="weather", keys=["API_KEY", "B"]),
    ev.SecretKeysDeleted(component_id="weather", keys=["B"]),
    ev.EnvSet(key="LOG_LEVEL", value="info"),
    ev.EnvUnset(key="LOG_LEVEL"),
    ev.PathsSet(component_dir="/c", secrets_dir="/s"),
]


# ---------------------------------------------------------------- models


def test_every_event_type_has_a_model_and_a_version() -> None:
    assert sorted({e.type for e in ONE_OF_EACH}) == sorted(ev.EVENT_TYPES)
    assert set(ev.TYPE_VERSIONS) == set(ev.EVENT_TYPES)
    assert all(v >= 1 for v in ev.TYPE_VERSIONS.values())


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.type)
def test_round_trip_through_stored_form(event: Any) -> None:
    data = ev.to_data(event)
    assert "type" not in data
    back = ev.from_data(event.type, ev.TYPE_VERSIONS[event.type], data)
    assert back == event
    assert type(back) is type(event)
    assert ev.to_data(back) == data


def test_stored_form_omits_absent_optionals() -> None:
    plain = ev.PolicyChanged(component_id="w", policy_content="x", change={"op": "reset"})
    assert ev.to_data(plain) == {
        "component_id": "w",
        "policy_content": "x",
        "change": {"op": "reset"},
    }


def test_secret_events_have_no_value_field() -> None:
    for model in (ev.SecretKeysSet, ev.SecretKeysDeleted):
        assert set(model.model_fields) == {"type", "component_id", "keys"}


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("env.set", {"key": "A", "value": "1", "secret": "s3cr3t"}),
        ("component.detached", {"component_id": "w", "policy": None}),
        ("secret.keys_set", {"component_id": "w", "keys": ["K"], "values": {"K": "v"}}),
    ],
)
def test_unknown_fields_are_refused(type_: str, data: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        ev.from_data(type_, 1, data)
    with pytest.raises(pydantic.ValidationError):
        ev.event_adapter().validate_python({**data, "type": type_})


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("env.set", {"key": "A"}),
        ("component.attached", {"component_id": "w", "source_uri": "x", "wasm_sha256": "y"}),
        ("secret.keys_set", {"component_id": "w", "keys": "K"}),
        ("policy.attached", {"component_id": "w", "source_uri": "u", "policy_content": "p"}),
    ],
)
def test_missing_or_mistyped_fields_are_refused(type_: str, data: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        ev.from_data(type_, 1, data)


def test_unknown_type_and_future_version_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        ev.from_data("component.exploded", 1, {"component_id": "w"})
    with pytest.raises(ValueError, match="newer than this tool"):
        ev.from_data("env.set", ev.TYPE_VERSIONS["env.set"] + 1, {"key": "A", "value": "1"})


def test_models_are_frozen() -> None:
    e = ev.EnvSet(key="A", value="1")
    with pytest.raises(pydantic.ValidationError):
        e.key = "B"  # type: ignore[misc]


def test_streams() -> None:
    assert ev.stream_of(attached("fetch")) == "fetch"
    assert ev.stream_of(ev.SecretKeysSet(component_id="fetch", keys=[])) == "fetch"
    assert ev.stream_of(ev.EnvSet(key="A", value="1")) == ev.INSTANCE_STREAM
    assert ev.stream_of(ev.PathsSet(component_dir="a", secrets_dir="b")) == ev.INSTANCE_STREAM
    assert ev.INSTANCE_STREAM.startswith("_")  # no valid component id can take it


# ---------------------------------------------------------------- upcasting


def test_upcaster_brings_an_old_version_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake history: env.set v1 stored `name`, v2 renamed it `key`, v3 (current) is today's."""
    monkeypatch.setitem(ev.TYPE_VERSIONS, "env.set", 3)
    calls: list[int] = []

    def v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        return {"key": d["name"], "value": d["value"]}

    def v2_to_v3(d: dict[str, Any]) -> dict[str, Any]:
        calls.append(2)
        return {"key": d["key"], "value": str(d["value"])}

    monkeypatch.setitem(ev.UPCASTERS, ("env.set", 1), v1_to_v2)
    monkeypatch.setitem(ev.UPCASTERS, ("env.set", 2), v2_to_v3)
    stored = {"name": "LOG_LEVEL", "value": 7}
    assert ev.from_data("env.set", 1, stored) == ev.EnvSet(key="LOG_LEVEL", value="7")
    assert calls == [1, 2]
    assert stored == {"name": "LOG_LEVEL", "value": 7}  # the stored data is not rewritten
    assert ev.from_data("env.set", 2, {"key": "A", "value": 1}) == ev.EnvSet(key="A", value="1")
    assert calls == [1, 2, 2]
    assert ev.from_data("env.set", 3, {"key": "A", "value": "x"}) == ev.EnvSet(key="A", value="x")
    assert calls == [1, 2, 2]


def test_missing_upcaster_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ev.TYPE_VERSIONS, "env.unset", 2)
    with pytest.raises(ValueError, match=r"no upcaster for env\.unset v1"):
        ev.from_data("env.unset", 1, {"key": "A"})


def test_monkeypatched_registry_is_restored() -> None:
    """Runs after the tests above: the temporary versions and upcasters are gone."""
    assert ev.TYPE_VERSIONS == SHIPPED_VERSIONS
    assert ev.UPCASTERS == SHIPPED_UPCASTERS


# ---------------------------------------------------------------- fold


def fold(*events: Any) -> State:
    return project(list(events))


def test_attach_creates_a_component() -> None:
    s = fold(attached())
    assert s.components == {
        "weather": Component("weather", "file:///srv/weather.wasm", SHA1, META),
    }
    assert s.environment == {} and s.paths is None


def test_reattach_replaces_bytes_but_keeps_policy_and_secret_keys() -> None:
    s = fold(
        attached(),
        policy_attached(),
        ev.SecretKeysSet(component_id="weather", keys=["API_KEY"]),
        ev.ComponentAttached(
            component_id="weather",
            source_uri="file:///new/weather.wasm",
            wasm_sha256=SHA2,
            metadata=META2,
        ),
    )
    c = s.components["weather"]
    assert (c.source_uri, c.wasm_sha256, c.metadata) == ("file:///new/weather.wasm", SHA2, META2)
    assert c.policy == Policy("version: '1.0'\n", "file:///etc/weather.policy.yaml", 1_764_060_000)
    assert c.secret_keys == ("API_KEY",)


def test_detach_drops_policy_and_keys_and_a_later_attach_starts_clean() -> None:
    s = fold(
        attached(),
        policy_attached(),
        ev.SecretKeysSet(component_id="weather", keys=["API_KEY"]),
        ev.ComponentDetached(component_id="weather"),
    )
    assert s.components == {}
    s = project([attached()], s)
    c = s.components["weather"]
    assert c.policy is None and c.secret_keys == ()


def test_policy_attach_change_detach() -> None:
    s = fold(attached(), policy_attached(content="v1"))
    assert s.components["weather"].policy == Policy(
        "v1", "file:///etc/weather.policy.yaml", 1_764_060_000
    )
    # A change on an existing policy edits the text, keeps source and time.
    s = project(
        [
            ev.PolicyChanged(
                component_id="weather",
                policy_content="v2",
                change={"op": "grant"},
                source_uri="file:///ignored",
                attached_at=1,
            )
        ],
        s,
    )
    assert s.components["weather"].policy == Policy(
        "v2", "file:///etc/weather.policy.yaml", 1_764_060_000
    )
    # A policy attach replaces everything.
    s = project([policy_attached(content="v3")], s)
    assert s.components["weather"].policy.policy_content == "v3"  # type: ignore[union-attr]
    s = project([ev.PolicyDetached(component_id="weather")], s)
    assert s.components["weather"].policy is None
    # A change with no policy creates one from the event's source and time.
    s = project(
        [
            ev.PolicyChanged(
                component_id="weather",
                policy_content="v4",
                change={"op": "grant"},
                source_uri="file:///c/weather.policy.yaml",
                attached_at=42,
            )
        ],
        s,
    )
    assert s.components["weather"].policy == Policy("v4", "file:///c/weather.policy.yaml", 42)


def test_secret_keys_set_is_a_sorted_union_and_delete_removes() -> None:
    s = fold(
        attached(),
        ev.SecretKeysSet(component_id="weather", keys=["ZED", "API_KEY"]),
        ev.SecretKeysSet(component_id="weather", keys=["API_KEY", "BETA"]),
    )
    assert s.components["weather"].secret_keys == ("API_KEY", "BETA", "ZED")
    s = project([ev.SecretKeysDeleted(component_id="weather", keys=["BETA", "NOPE"])], s)
    assert s.components["weather"].secret_keys == ("API_KEY", "ZED")
    s = project([ev.SecretKeysSet(component_id="weather", keys=["API_KEY"])], s)  # rotation
    assert s.components["weather"].secret_keys == ("API_KEY", "ZED")


def test_env_and_paths() -> None:
    s = fold(
        ev.EnvSet(key="A", value="1"),
        ev.EnvSet(key="B", value="2"),
        ev.EnvSet(key="A", value="3"),
        ev.EnvUnset(key="B"),
        ev.EnvUnset(key="NEVER_SET"),
        ev.PathsSet(component_dir="/c1", secrets_dir="/s1"),
        ev.PathsSet(component_dir="/c2", secrets_dir="/s2"),
    )
    assert s.environment == {"A": "3"}
    assert s.paths == Paths("/c2", "/s2")
    assert s.components == {}


@pytest.mark.parametrize(
    "event",
    [e for e in ONE_OF_EACH if getattr(e, "component_id", None) and e.type != "component.attached"],
    ids=lambda e: e.type,
)
def test_component_events_on_an_absent_component_are_ignored(event: Any) -> None:
    base = fold(attached("other"), ev.EnvSet(key="A", value="1"))
    assert project([event], base) == base
    assert project([event]) == State()


def test_events_on_a_detached_component_are_ignored() -> None:
    s = fold(attached(), ev.ComponentDetached(component_id="weather"))
    s = project(
        [
            policy_attached(),
            ev.SecretKeysSet(component_id="weather", keys=["K"]),
            ev.PolicyChanged(component_id="weather", policy_content="p", change={}),
        ],
        s,
    )
    assert s.components == {}


def test_evolve_is_pure_and_agrees_with_project() -> None:
    state = State()
    history = [state]
    for e in [attached(), *ONE_OF_EACH, attached("b"), ev.EnvSet(key="X", value="y")]:
        before = (dict(state.components), dict(state.environment), state.paths)
        nxt = evolve(state, e)
        assert (state.components, state.environment, state.paths) == before  # input untouched
        state = nxt
        history.append(state)
    events = [attached(), *ONE_OF_EACH, attached("b"), ev.EnvSet(key="X", value="y")]
    for i, expected in enumerate(history):
        assert project(events[:i]) == expected
    # Folding in two halves equals folding at once.
    assert project(events[7:], project(events[:7])) == project(events)
