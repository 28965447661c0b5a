"""Circuit analyzers: IOI and Colored Objects tasks, path patching, discovery and reuse."""
