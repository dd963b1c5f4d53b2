"""flowrunner: a declarative YAML flow runner for call flows."""

__version__ = "0.1.0"
