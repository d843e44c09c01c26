"""The project's error tree: every failure a user can cause maps to one exit code."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the errors the store raises on purpose; exit 1 unless a subclass says otherwise."""

    exit_code = 1


class ValidationError(StoreError):
    """Bad input: a file, an id, a policy, a WHEN, an argument. Nothing was written."""

    exit_code = 2


class NotFound(ValidationError):
    """A component, tag or point in time that does not exist (still a usage error: exit 2)."""


class ConflictError(StoreError):
    """Another writer won the race for a stream, or the database stayed locked too long."""

    exit_code = 3


class BusyError(ConflictError):
    """The write lock stayed taken for the whole bounded wait: waiting again would only double
    it, so this is reported at once (exit 3), never retried."""


class FilesNotWritten(StoreError):
    """The change is committed, but writing Wassette's files failed afterwards (EACCES,
    ENOSPC…); the next command repairs them. Exit 5: neither 'nothing changed' nor a crash."""

    exit_code = 5


class IntegrityError(StoreError):
    """`state verify` found the log, the read models or the database inconsistent."""

    exit_code = 4


class NoStoreError(ValidationError):
    """A command that only reads found no store at the URL (reads never create one)."""


class SchemaTooNewError(ValidationError):
    """The database was written by a newer version of this tool."""


def unknown_component(component_id: str) -> NotFound:
    return NotFound(f"unknown component {component_id!r} (see 'wassette-state component list')")
