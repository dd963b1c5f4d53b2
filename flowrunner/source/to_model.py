"""Turn schema-valid YAML data into the typed model (no checks beyond the schema's)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from flowrunner.document import Document
from flowrunner.source import model as m

STATE_ENV = "FLOWRUNNER_STATE"  # overrides ``state:`` (``--state`` sets it)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _secret(value: Any) -> m.SecretRef:
    return m.SecretRef(name=str(value["secret"]))


def _auth(value: Any) -> m.Auth:
    if isinstance(value, dict) and "basic" in value:
        basic = value["basic"]
        return m.BasicAuth(username=str(basic["username"]), password=_secret(basic["password"]))
    if isinstance(value, dict) and "bearer" in value:
        return m.BearerAuth(token=_secret(value["bearer"]["token"]))
    return m.NoAuth()


def _header(value: Any) -> str | m.SecretRef:
    return _secret(value) if isinstance(value, dict) else str(value)


def _retry(value: Any, path: tuple[str | int, ...]) -> m.RetryPolicy | None:
    """The policy of a schema-valid ``retry:`` mapping (None when absent)."""
    if not isinstance(value, dict):
        return None
    on = value.get("on", m.RETRY_ON_DEFAULT)
    return m.RetryPolicy(
        attempts=int(value["attempts"]),
        backoff=cast(Any, value.get("backoff", "exponential")),
        delay=float(value.get("delay", 0.5)),
        max_delay=float(value.get("max_delay", 10.0)),
        jitter=float(value.get("jitter", 0.2)),
        on=tuple(str(item) for item in on),
        path=path,
    )


def _webhook(name: str, data: dict[str, Any]) -> m.Webhook:
    methods = {
        mname: m.Method(
            name=mname,
            description=str((mdata or {}).get("description", "")),
            response={k: str(v) for k, v in ((mdata or {}).get("response") or {}).items()},
        )
        for mname, mdata in (data.get("methods") or {}).items()
    }
    signing = data.get("signing_secret")
    return m.Webhook(
        name=name,
        url=str(data["url"]),
        method=str(data.get("method", "POST")).upper(),
        auth=_auth(data.get("auth", "none")),
        body=cast(m.BodyKind, data.get("body", "none")),
        headers={str(k): _header(v) for k, v in (data.get("headers") or {}).items()},
        timeout=float(data.get("timeout", m.DEFAULT_TIMEOUT)),
        default=bool(data.get("default", False)),
        signing_secret=_secret(signing) if isinstance(signing, dict) else None,
        methods=methods,
        path=("webhooks", name),
        retry=_retry(data.get("retry"), ("webhooks", name, "retry")),
    )


def state_place(value: Any, root: Path) -> m.StatePlace:
    """Where state lives: ``FLOWRUNNER_STATE`` (set by ``--state`` too) when set, else
    ``value`` (``state:`` of a schema-valid project). A relative path is relative to
    ``root``, or to the working directory when it comes from the environment."""
    override = os.environ.get(STATE_ENV, "").strip()
    if override:
        return parse_place(override, Path.cwd())
    if isinstance(value, dict):
        password = value.get("password")
        return m.PostgresPlace(
            url=str(value["url"]), password=_secret(password) if password else None
        )
    return parse_place(str(value), root)


def parse_place(text: str, base: Path) -> m.StatePlace:
    """A PostgreSQL URL (``postgresql://`` or ``postgres://``), else a file below ``base``."""
    if text.startswith(POSTGRES_SCHEMES):
        return m.PostgresPlace(url=text)
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def build_project(doc: Document, root: Path) -> m.Project:
    """The project described by ``doc`` (a schema-valid ``flowrunner.yaml``)."""
    data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
    http = data.get("http") or {}
    delivery = data.get("delivery") or {}
    history = data.get("history") or {}
    return m.Project(
        root=root,
        source=doc,
        http=m.HttpPolicy(
            enabled=bool(http.get("enabled", True)),
            allow_http=bool(http.get("allow_http", False)),
            allowlist=tuple(str(a) for a in http.get("allowlist") or ()),
        ),
        webhooks={str(n): _webhook(str(n), w) for n, w in (data.get("webhooks") or {}).items()},
        user_keys=dict(data.get("user_keys") or {}),
        state=state_place(data.get("state", m.DEFAULT_STATE), root),
        delivery=m.DeliveryPolicy(
            retry_schedule=tuple(
                float(s) for s in delivery.get("retry_schedule", m.DEFAULT_RETRY_SCHEDULE)
            ),
            lease=float(delivery.get("lease", m.DEFAULT_LEASE)),
        ),
        history=m.HistoryPolicy(
            keep_days=float(history.get("keep_days", 30)),
            keep_runs=int(history.get("keep_runs", 100_000)),
        ),
        workers=m.WorkersPolicy(lease=float((data.get("workers") or {}).get("lease", 30))),
        serve=_serve(data.get("serve") or {}),
    )


def _serve(data: dict[str, Any]) -> m.ServePolicy:
    return m.ServePolicy(
        tokens=tuple(_secret(t) for t in data.get("tokens") or ()),
        max_backlog=int(data.get("max_backlog", 10_000)),
    )


def _step(index: int, data: dict[str, Any]) -> m.Step:
    common: dict[str, Any] = {
        "id": str(data["id"]),
        "path": ("steps", index),
        "when": data.get("when"),
        "next": data.get("next"),
    }
    if "webhook" in data:
        return m.WebhookStep(
            **common,
            webhook=str(data["webhook"]),
            method=str(data["method"]),
            parameters=tuple(data.get("parameters", m.DEFAULT_GROUPS)),
            params=dict(data.get("params") or {}),
            document=str(data.get("document", "")),
            on_failure=data.get("on_failure"),
            retry=_retry(data.get("retry"), ("steps", index, "retry")),
        )
    assignments = tuple(
        m.Assignment(target=str(k), value=v) for k, v in (data.get("set") or {}).items()
    )
    return m.OperationStep(**common, assignments=assignments)


def build_flow(doc: Document) -> m.Flow:
    """The flow described by ``doc`` (a schema-valid flow file)."""
    data: dict[str, Any] = doc.data
    return m.Flow(
        name=str(data["flow"]),
        source=doc,
        description=str(data.get("description", "")),
        on_complete=data.get("on_complete", False),
        keys=dict(data.get("keys") or {}),
        steps=tuple(_step(i, s) for i, s in enumerate(data.get("steps") or ())),
    )
