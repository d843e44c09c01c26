"""wassette-state: an event-sourced state store for Wassette.

The repository keeps `store/` (the library) and `cli/` (the click app) at its top; installed,
they live here as `wassette_state.store` and `wassette_state.cli`.
"""

__version__ = "0.1.0"
