"""The on-complete push: the predefined payload and the sender that drains the outbox."""
