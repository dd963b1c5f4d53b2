"""Files to a typed model: the defensive YAML loader, JSON Schema checks with positions, and
the frozen model of a project and its flows."""
