"""PostgreSQL URLs for people: the password taken out before anything is printed.

Pure (no driver): the commands name a store with :func:`redacted`, and every password
found in a URL is handed to the process-wide scrubber by :func:`remember_password`.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from flowrunner.secrets import remember


def _parts(url: str) -> tuple[str, str | None, str, str | None]:
    """(scheme and host part without the password, the password, path, query)."""
    split = urlsplit(url)
    split.port  # noqa: B018 - raises ValueError for a host part that cannot be read
    userinfo, at, host = split.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    netloc = f"{user}@{host}" if at and user else host
    return (
        f"{split.scheme}://{netloc}",
        (password if colon else None),
        split.path,
        (split.query or None),
    )


def redacted(url: str) -> str:
    """``url`` without its password (in the user part or as ``?password=``)."""
    try:
        head, _, path, query = _parts(url)
    except ValueError:
        return "postgresql://(a URL that cannot be read)"
    if query:
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "password"]
        query = urlencode(kept) or None
    return head + path + (f"?{query}" if query else "")


def remember_password(url: str) -> None:
    """Have every output of this process mask the password written in ``url``."""
    try:
        _, password, _, query = _parts(url)
    except ValueError:
        return
    found = [unquote(password)] if password else []
    found += [v for k, v in parse_qsl(query or "") if k == "password" and v]
    for value in found:
        remember(value)
