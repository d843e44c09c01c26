"""Wassette's directories: where they are, and what the state looks like in them on disk.

Components, metadata, policies and secrets files are written only through `fsutil`.
"""
