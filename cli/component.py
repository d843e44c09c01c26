"""`wassette-state component …`"""

from __future__ import annotations

from typing import Any, ClassVar

import click

from wassette_state.cli.common import report
from wassette_state.cli.main import App, component_dir_option, output_option, pass_app
from wassette_state.cli.output import emit, table


class AliasGroup(click.Group):
    """Accept Wassette's own verbs (`load`, `unload`) as aliases."""

    aliases: ClassVar[dict[str, str]] = {"load": "attach", "unload": "detach", "ls": "list"}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else name), cmd, rest


@click.group(cls=AliasGroup)
def component() -> None:
    """Attach, detach, list and inspect components."""


@component.command()
@click.argument("source", metavar="PATH|file://URI")
@click.option("--id", "component_id", metavar="ID", help="Component id (default: file stem).")
@click.option("--policy", "policy_file", metavar="FILE", help="Attach this policy too.")
@output_option
@component_dir_option
@pass_app
def attach(app: App, source: str, component_id: str | None, policy_file: str | None) -> None:
    """Copy a component in, derive its tools, and record it (alias: load).

    \b
    Example:
      wassette-state component attach ./weather.wasm --policy weather.policy.yaml
    """
    from wassette_state.store.usecases.commands import attach as do_attach

    outcome = do_attach(app.store, source, component_id, policy_file)
    s = outcome.summary
    report(app, outcome, f"attached {s['component_id']} ({s['tools']} tools)")


@component.command()
@click.argument("component_id", metavar="ID")
@click.option(
    "--keep-secret-values",
    is_flag=True,
    help="Leave its secrets file (Wassette's unload does); by default its values go with it.",
)
@output_option
@component_dir_option
@pass_app
def detach(app: App, component_id: str, keep_secret_values: bool) -> None:
    """Remove a component from the state, its files and its secret values (alias: unload).

    Unlike Wassette's `component unload`, the secrets file goes too, so a component attached
    later under the same id inherits no values; --keep-secret-values leaves it.
    """
    from wassette_state.store.usecases.commands import detach as do_detach

    outcome = do_detach(app.store, component_id, keep_secret_values)
    report(app, outcome, f"detached {component_id}")


@component.command("list")
@output_option
@component_dir_option
@pass_app
def list_(app: App) -> None:
    """List the current components."""
    state = app.store.state()
    items: list[dict[str, Any]] = [
        {
            "id": c.component_id,
            "tools_count": len(c.metadata.get("tool_names") or []),
            "policy": c.policy is not None,
            "secret_keys": list(c.secret_keys),
        }
        for c in state.components.values()
    ]
    rows = [
        (i["id"], i["tools_count"], "yes" if i["policy"] else "no", ",".join(i["secret_keys"]))
        for i in items
    ]
    text = table(["id", "tools", "policy", "secret keys"], rows) if rows else "no components"
    emit({"components": items, "total": len(items)}, app.output, text)


@component.command()
@click.argument("component_id", metavar="ID")
@output_option
@component_dir_option
@pass_app
def inspect(app: App, component_id: str) -> None:
    """Show a component's metadata and tools."""
    comp = app.store.component(component_id)
    data = {**comp.metadata, "source_uri": comp.source_uri, "wasm_sha256": comp.wasm_sha256}
    lines = [
        f"component  {comp.component_id}",
        f"source     {comp.source_uri}",
        f"sha256     {comp.wasm_sha256}",
        f"policy     {comp.policy.source_uri if comp.policy else '-'}",
        f"secrets    {', '.join(comp.secret_keys) or '-'}",
        "",
    ]
    tools = comp.metadata.get("tool_schemas") or []
    rows = [(t.get("name"), t.get("description", "")) for t in tools if isinstance(t, dict)]
    lines.append(table(["tool", "description"], rows) if rows else "no tools")
    emit(data, app.output, "\n".join(lines))
