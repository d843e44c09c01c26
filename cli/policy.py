"""`wassette-state policy …` and `wassette-state permission …`"""

from __future__ import annotations

import click

from wassette_state.cli.common import report
from wassette_state.cli.main import App, component_dir_option, output_option, pass_app
from wassette_state.cli.output import emit


@click.group()
def policy() -> None:
    """Attach, detach and show component policies."""


@policy.command("attach")
@click.argument("component_id", metavar="ID")
@click.argument("source", metavar="FILE|file://URI")
@output_option
@component_dir_option
@pass_app
def policy_attach(app: App, component_id: str, source: str) -> None:
    """Validate a policy file and attach it to a component."""
    from wassette_state.store.usecases.commands import policy_attach as do

    report(app, do(app.store, component_id, source), f"attached policy to {component_id}")


@policy.command("detach")
@click.argument("component_id", metavar="ID")
@output_option
@component_dir_option
@pass_app
def policy_detach(app: App, component_id: str) -> None:
    """Remove a component's policy."""
    from wassette_state.store.usecases.commands import policy_detach as do

    report(app, do(app.store, component_id), f"detached policy from {component_id}")


@policy.command("get")
@click.argument("component_id", metavar="ID")
@output_option
@component_dir_option
@pass_app
def policy_get(app: App, component_id: str) -> None:
    """Print a component's policy document."""
    from wassette_state.store.domain.errors import NotFound

    comp = app.store.component(component_id)
    if comp.policy is None:
        raise NotFound(f"component {component_id!r} has no policy attached")
    data = {
        "component_id": component_id,
        "source_uri": comp.policy.source_uri,
        "attached_at": comp.policy.attached_at,
        "policy_content": comp.policy.policy_content,
    }
    emit(data, app.output, comp.policy.policy_content)


@click.group(short_help="Grant and revoke permissions (edits of the policy).")
def permission() -> None:
    """Grant and revoke permissions (edits of the component's policy).

    \b
    Examples:
      wassette-state permission grant network weather api.openweathermap.org
      wassette-state permission grant storage fs fs://workspace/** --access read,write
      wassette-state permission revoke environment-variable weather API_KEY
    """


def _access(values: tuple[str, ...]) -> list[str] | None:
    """`--access read,write` and Wassette's repeated `--access read --access write` add up."""
    if not values:
        return None
    return [a.strip() for value in values for a in value.split(",") if a.strip()]


def _kind_commands(group: click.Group, op: str) -> None:
    verb = "Grant" if op == "grant" else "Revoke"

    @group.command("storage")
    @click.argument("component_id", metavar="ID")
    @click.argument("uri", metavar="URI")
    @click.option(
        "--access",
        metavar="read,write",
        multiple=True,
        help="Access to grant or revoke (repeatable: --access read --access write).",
    )
    @output_option
    @component_dir_option
    @pass_app
    def storage(app: App, component_id: str, uri: str, access: tuple[str, ...]) -> None:
        from wassette_state.store.usecases.commands import permission as do

        o = do(app.store, op, component_id, "storage", uri, _access(access))
        report(
            app, o, f"{op} storage {uri} for {component_id}", {"change": o.summary.get("change")}
        )

    storage.__doc__ = f"{verb} storage access to a URI (fs://path, ** allowed as a segment)."

    for kind, arg, doc in (
        ("network", "HOST", "network access to a host (*.example.com) or CIDR"),
        ("environment-variable", "KEY", "access to an environment variable"),
        ("memory", "LIMIT", "a memory limit (512Mi, 1Gi, bytes)"),
    ):

        def make(kind: str = kind, arg: str = arg, doc: str = doc) -> None:
            @group.command(kind, help=f"{verb} {doc}.")
            @click.argument("component_id", metavar="ID")
            @click.argument("value", metavar=arg)
            @output_option
            @component_dir_option
            @pass_app
            def cmd(app: App, component_id: str, value: str) -> None:
                from wassette_state.store.usecases.commands import permission as do

                o = do(app.store, op, component_id, kind, value)
                report(
                    app,
                    o,
                    f"{op} {kind} {value} for {component_id}",
                    {"change": o.summary.get("change")},
                )

        make()


@permission.group()
def grant() -> None:
    """Grant a permission."""


@permission.group()
def revoke() -> None:
    """Revoke a permission."""


_kind_commands(grant, "grant")
_kind_commands(revoke, "revoke")


@permission.command()
@click.argument("component_id", metavar="ID")
@output_option
@component_dir_option
@pass_app
def reset(app: App, component_id: str) -> None:
    """Remove a component's policy with every permission in it (as Wassette does)."""
    from wassette_state.store.usecases.commands import permission as do

    report(app, do(app.store, "reset", component_id), f"reset permissions of {component_id}")


__all__ = ["emit", "permission", "policy"]
