"""The domain core: events, the fold, states and their diffs, policy and file-format rules.

Nothing here does I/O; everything else in the store is built on these values.
"""
