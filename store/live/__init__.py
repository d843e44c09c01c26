"""Living beside a running Wassette: telling it what changed, watching its dirs, running it."""
