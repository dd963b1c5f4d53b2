"""HTTP transports behind the send seam: the lean one (``fast``) and how one is chosen."""
