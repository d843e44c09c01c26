"""The event log and its read models in a database: one module per backend behind `backend`."""
