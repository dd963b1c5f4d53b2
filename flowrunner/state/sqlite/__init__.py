"""The SQLite state store: one WAL-mode file shared by every process of a project."""
