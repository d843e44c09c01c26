"""How to tell a user to give the secret values a snapshot or manifest cannot carry: on the
stdin of `secret set`, never on a command line (pure)."""

from __future__ import annotations


def secret_set_command(component_id: str, keys: list[str], prefix: str = "wassette") -> str:
    """The exact command that supplies the missing values. They go on its stdin, never on its
    command line (other local users read that in /proc while it runs); see `secret_set_input`."""
    import shlex

    return f"{prefix} secret set {shlex.quote(component_id)} --stdin"


def secret_set_input(keys: list[str]) -> str:
    """What `secret_set_command` reads: one `KEY=…` line per key, `…` to replace by the value."""
    return "".join(f"{k}=…\n" for k in keys)


def secret_set_hint(component_id: str, keys: list[str], prefix: str = "wassette") -> str:
    """One line for humans: the command, and what to type into it."""
    return (
        f"{secret_set_command(component_id, keys, prefix)}   "
        f"# then type {', '.join(f'{k}=…' for k in keys)} (one per line), Ctrl-D"
    )
