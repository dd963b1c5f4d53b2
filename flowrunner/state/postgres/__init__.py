"""The PostgreSQL state store: one database shared by every process on every machine."""
