"""What a user asks for (attach, import, export, rollback, verify, sync…), as transactions.

`service.Store` is the facade the CLI calls; each use case composes the domain, the log and the
files.
"""
