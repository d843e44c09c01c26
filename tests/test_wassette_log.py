"""Reading Wassette 0.8.0's log for who changed what (store/live/wassette_log.py).

`fixtures/wassette-serve.log` is a real `wassette serve` log (colours and all; paths replaced):
an agent `agent-smith` and a `wassette-state` session open at once, wassette-state loads a
component, the agent grants storage (an array argument, quotes in a value), lists components
(read-only), a second client `other` grants network while the agent's session is open, and the
agent unloads the component.
"""

from __future__ import annotations

from pathlib import Path

from wassette_state.store.live.wassette_log import Call, Reader, arguments, plain

LOG = Path(__file__).parent / "fixtures" / "wassette-serve.log"


def calls(lines: list[str]) -> list[Call]:
    reader = Reader()
    found = [reader.feed(line) for line in lines]
    assert reader.sessions == []  # every session that opened was closed
    return [c for c in found if c is not None]


def test_real_log() -> None:
    lines = LOG.read_text().splitlines()
    assert any("\x1b[" in line for line in lines)  # Wassette colours its log even in a file
    assert [(c.tool, c.arguments, c.actor) for c in calls(lines)] == [
        # both sessions open: the tool call names no session, so it is the agent's (the one
        # client that is not wassette-state); a sync of wassette-state's own load records
        # nothing, its files being the store's already
        ("load-component", "path=file:///srv/wassette/calc.wasm", "mcp:agent-smith"),
        (
            "grant-storage-permission",
            'component_id=calc uri=fs:///data/"q" access=read,write',
            "mcp:agent-smith",
        ),
        (
            "grant-network-permission",
            "component_id=calc host=api.example.com",
            "mcp:agent-smith|other",
        ),
        ("unload-component", "id=calc", "mcp:agent-smith"),
    ]
    assert calls(lines)[1].command == (
        'grant-storage-permission component_id=calc uri=fs:///data/"q" access=read,write'
    )


def test_wassette_state_alone_is_never_an_agent() -> None:
    lines = LOG.read_text().splitlines()
    init = [ln for ln in lines if "Service initialized" in ln]
    ours = next(ln for ln in init if 'name: "wassette-state"' in ln)
    load = [ln for ln in lines if "method_name" in plain(ln) and "load-component" in plain(ln)]
    assert load
    reader = Reader()
    reader.feed(ours)
    assert [reader.feed(ln) for ln in load] == [None] * len(load)
    # and nobody's session open at all (a stateless request): unknown, not silently dropped
    reader = Reader()
    assert reader.feed(load[0]) == Call(
        "load-component", "path=file:///srv/wassette/calc.wasm", "mcp:unknown"
    )


def test_lines_of_one_call_are_one_call() -> None:
    lines = [ln for ln in LOG.read_text().splitlines() if "grant-storage-permission" in ln]
    assert len(lines) > 1
    assert len(calls(lines)) == 1
    # the same call twice in a row (nothing between) is recorded once: the second changes
    # nothing a sync could find anyway
    assert len(calls(lines + lines)) == 1


def test_arguments_of_odd_shapes() -> None:
    line = (
        'arguments: Some({"id": String("a \\"b\\" c"), "details": Object {"access": Array '
        '[String("read")], "host": String("h")}}), input_responses: None'
    )
    assert arguments(line) == 'id=a "b" c host=h access=read'
    assert arguments("no arguments here") == ""
