"""`wassette-state secret …` and `wassette-state env …`"""

from __future__ import annotations

import sys

import click

from wassette_state.cli.common import report
from wassette_state.cli.main import App, component_dir_option, output_option, pass_app
from wassette_state.cli.output import emit, table

NOT_SHOWN = "(argument not shown)"


class NoEchoGroup(click.Group):
    """Refusals of these commands never repeat an argument: any of them may be a value
    (`secret set KEY=VALUE` with the id forgotten, a value after `-o`, a stray `KEY=VALUE`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["no_echo_args"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            message = redact(e.message, ctx.meta.get("no_echo_args", []), self._known(ctx))
            raise click.UsageError(message, e.ctx) from None

    def _known(self, ctx: click.Context) -> set[str]:
        """Words that are no value: the subcommands and every option name they declare."""
        known = set(self.commands) | {"--help"}
        for command in [self, *self.commands.values()]:
            for param in command.get_params(ctx):
                known.update(getattr(param, "opts", ()), getattr(param, "secondary_opts", ()))
        return known


def redact(message: str, args: list[str], known: set[str]) -> str:
    """The message without any of the arguments (or the value part of `--opt=value`)."""
    import re

    candidates = set()
    for arg in args:
        if arg in known:
            continue
        candidates.add(arg)
        name, sep, value = arg.partition("=")
        if sep and name in known:
            candidates.add(value)
    candidates.discard("")
    message = re.sub(
        r"(unexpected extra arguments?) \(.*\)", rf"\1 {NOT_SHOWN}", message, flags=re.S
    )
    for candidate in sorted(candidates, key=len, reverse=True):
        for quoted in (f"'{candidate}'", f'"{candidate}"', repr(candidate)):
            message = message.replace(quoted, NOT_SHOWN)
    if any(len(c) >= 3 and c in message for c in candidates):
        return f"invalid arguments {NOT_SHOWN}; see --help"
    return message


@click.group(cls=NoEchoGroup, short_help="Secret values of a component (never in the log).")
def secret() -> None:
    """Secret values for a component (stored only in the secrets dir, never in the log)."""


@secret.command("set")
@click.argument("component_id", metavar="ID")
@click.argument("assignments", nargs=-1, metavar="KEY=VALUE…")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read KEY=VALUE lines from stdin.")
@output_option
@component_dir_option
@pass_app
def secret_set(app: App, component_id: str, assignments: tuple[str, ...], from_stdin: bool) -> None:
    """Set secret values; the log records the key names only.

    \b
    Example:
      printf 'API_KEY=%s\\n' "$KEY" | wassette-state secret set weather --stdin
    """
    from wassette_state.store.usecases.inputs import parse_assignment_lines, parse_assignments
    from wassette_state.store.usecases.secret_commands import secret_set as do

    if from_stdin:
        if assignments:
            raise click.UsageError("give KEY=VALUE arguments or --stdin, not both")
        values = parse_assignment_lines(sys.stdin.read(), "secrets")
    else:
        values = parse_assignments(assignments, "secrets")
    o = do(app.store, component_id, values)
    report(app, o, f"set {', '.join(sorted(values))} for {component_id}")


@secret.command("list")
@click.argument("component_id", metavar="ID")
@click.option("--show-values", is_flag=True, help="Print the values too (asks on a terminal).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before showing values.")
@output_option
@component_dir_option
@pass_app
def secret_list(app: App, component_id: str, show_values: bool, yes: bool) -> None:
    """List a component's secret keys; flags keys without a value on disk.

    With --show-values on a terminal it asks first, as Wassette does (--yes skips the question);
    without a terminal there is nobody to ask and the values are printed.
    """
    from wassette_state.cli.output import is_tty
    from wassette_state.store.domain.errors import ValidationError
    from wassette_state.store.usecases.secret_commands import secret_list as do

    entries = do(app.store, component_id, show_values)
    # stderr: stdout stays machine-readable with -o json
    if (
        show_values
        and not yes
        and is_tty()
        and not click.confirm("Show secret values?", default=False, err=True)
    ):
        raise ValidationError("cancelled; no values shown")
    data = {
        "component_id": component_id,
        "secrets": [
            {
                "key": e.key,
                "declared": e.declared,
                "has_value": e.has_value,
                **({"value": e.value} if show_values else {}),
            }
            for e in entries
        ],
    }
    rows = []
    for e in entries:
        status = (
            "ok"
            if e.declared and e.has_value
            else ("missing value" if e.declared else "not declared")
        )
        row = [e.key, status]
        if show_values:
            row.append(e.value if e.value is not None else "")
        rows.append(row)
    headers = ["key", "status"] + (["value"] if show_values else [])
    # Values asked for are printed whole: a clipped token would be silently wrong when copied.
    emit(data, app.output, table(headers, rows, clip=not show_values) if rows else "no secrets")


@secret.command("delete")
@click.argument("component_id", metavar="ID")
@click.argument("keys", nargs=-1, metavar="KEY…")
@output_option
@component_dir_option
@pass_app
def secret_delete(app: App, component_id: str, keys: tuple[str, ...]) -> None:
    """Delete secret keys and their values."""
    from wassette_state.store.usecases.secret_commands import secret_delete as do

    report(app, do(app.store, component_id, list(keys)), f"deleted {', '.join(keys)}")


@click.group(cls=NoEchoGroup)
def env() -> None:
    """Configuration environment variables of the instance."""


@env.command("set")
@click.argument("assignments", nargs=-1, metavar="KEY=VALUE…")
@output_option
@pass_app
def env_set(app: App, assignments: tuple[str, ...]) -> None:
    """Set environment variables."""
    from wassette_state.store.usecases.commands import env_set as do
    from wassette_state.store.usecases.inputs import parse_assignments

    values = parse_assignments(assignments, "variables")
    report(app, do(app.store, values), f"set {', '.join(sorted(values))}")


@env.command("unset")
@click.argument("keys", nargs=-1, metavar="KEY…")
@output_option
@pass_app
def env_unset(app: App, keys: tuple[str, ...]) -> None:
    """Unset environment variables."""
    from wassette_state.store.usecases.commands import env_unset as do

    report(app, do(app.store, list(keys)), f"unset {', '.join(keys)}")


@env.command("list")
@output_option
@pass_app
def env_list(app: App) -> None:
    """List environment variables."""
    environment = app.store.state(scope=set()).environment
    rows = sorted(environment.items())
    emit(dict(rows), app.output, table(["key", "value"], rows) if rows else "no variables")
