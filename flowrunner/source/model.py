"""The typed model of a project and its flows: frozen dataclasses, no I/O.

Built by :mod:`flowrunner.source.to_model` from schema-valid YAML data. Values that may hold
templates are kept raw here; :mod:`flowrunner.plan.compiler` turns them into a plan.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any, Literal

from flowrunner.document import Document
from flowrunner.document import Path as DocPath
from flowrunner.frozen import frozen

BodyKind = Literal["none", "json", "form"]
Group = Literal["call", "flow.key", "user.key"]

DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_LEASE = 30.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_STATE = ".flowrunner/state.db"
DEFAULT_GROUPS: tuple[Group, ...] = ("call", "flow.key")


@frozen(kw_only=True)
class SecretRef:
    """``{secret: NAME}``: the value of environment variable NAME, read when needed."""

    name: str


@frozen(kw_only=True)
class PostgresPlace:
    """A PostgreSQL state store: ``url`` in libpq's URL form, ``password`` (if any) read
    from a secret when the store is opened. The libpq environment variables (``PGHOST``,
    ``PGUSER``, ``PGPASSWORD``, ...) fill in what the URL leaves out."""

    url: str
    password: SecretRef | None = None


StatePlace = Path | PostgresPlace  # a SQLite file, or a PostgreSQL server


@frozen(kw_only=True)
class NoAuth:
    """No ``auth:``: requests go without credentials."""

    pass


@frozen(kw_only=True)
class BasicAuth:
    """``auth: basic``: a username and a password secret."""

    username: str
    password: SecretRef


@frozen(kw_only=True)
class BearerAuth:
    """``auth: bearer``: a token secret sent as ``Authorization: Bearer``."""

    token: SecretRef


Auth = NoAuth | BasicAuth | BearerAuth


@frozen(kw_only=True)
class Method:
    """One method of a webhook: its description and the flow keys its answer sets."""

    name: str
    description: str = ""
    response: dict[str, str] = field(default_factory=dict)  # flow key <- dotted path


RETRY_ON_DEFAULT: tuple[str, ...] = ("timeout", "connection", "5xx", "429")


@frozen(kw_only=True)
class RetryPolicy:
    """``retry:`` of a webhook step or a webhook: how often and when a call is tried again.

    ``on`` holds ``timeout``, ``connection``, ``4xx``, ``5xx`` or a status code as text
    (``"429"``, ``"404"``); ``path`` is where the policy sits in its file.
    """

    attempts: int
    backoff: Literal["constant", "exponential"] = "exponential"
    delay: float = 0.5
    max_delay: float = 10.0
    jitter: float = 0.2
    on: tuple[str, ...] = RETRY_ON_DEFAULT
    path: DocPath = ()


@frozen(kw_only=True)
class Webhook:
    """One entry of ``webhooks:`` in the project file."""

    name: str
    url: str
    method: str = "POST"
    auth: Auth = NoAuth()
    body: BodyKind = "none"
    headers: dict[str, str | SecretRef] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    default: bool = False
    signing_secret: SecretRef | None = None
    methods: dict[str, Method] = field(default_factory=dict)
    path: DocPath = ()
    retry: RetryPolicy | None = None


@frozen(kw_only=True)
class HttpPolicy:
    """``http:`` of the project: whether calls go out, and where to."""

    enabled: bool = True
    allow_http: bool = False
    allowlist: tuple[str, ...] = ()


@frozen(kw_only=True)
class DeliveryPolicy:
    """``delivery:`` of the project: when on-complete pushes are tried again."""

    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    lease: float = DEFAULT_LEASE


@frozen(kw_only=True)
class HistoryPolicy:
    """``history:`` of the project: how long execution records are kept."""

    keep_days: float = 30.0
    keep_runs: int = 100_000


@frozen(kw_only=True)
class WorkersPolicy:
    """``workers:`` of the project: how long a claimed execution is held."""

    lease: float = 30.0  # seconds a claimed execution is held before it may be taken over


@frozen(kw_only=True)
class ServePolicy:
    """``serve:`` of the project: the API's bearer tokens and its backlog limit."""

    tokens: tuple[SecretRef, ...] = ()
    max_backlog: int = 10_000


@frozen(kw_only=True)
class Project:
    """``flowrunner.yaml``; ``root`` is its folder, ``state`` the resolved state place."""

    root: Path
    source: Document
    http: HttpPolicy = HttpPolicy()
    webhooks: dict[str, Webhook] = field(default_factory=dict)
    user_keys: dict[str, Any] = field(default_factory=dict)
    state: StatePlace = Path(DEFAULT_STATE)
    delivery: DeliveryPolicy = DeliveryPolicy()
    history: HistoryPolicy = HistoryPolicy()
    workers: WorkersPolicy = WorkersPolicy()
    serve: ServePolicy = ServePolicy()

    @property
    def file(self) -> str:
        return self.source.file

    def default_webhook(self) -> Webhook | None:
        return next((w for w in self.webhooks.values() if w.default), None)


@frozen(kw_only=True)
class StepBase:
    """What every step has: its id, position, ``when`` and ``next``."""

    id: str
    path: DocPath  # where the step sits in its flow file
    when: Any = None  # None: always; else a bool or a template string
    next: str | None = None  # a step id or "end"; None: the following step


@frozen(kw_only=True)
class Assignment:
    """One entry of an assign step's ``set:``, its value still raw."""

    target: str  # a flow key name, "$user.key.<name>" or (invalid) "$call.<name>"
    value: Any


@frozen(kw_only=True)
class OperationStep(StepBase):
    """``operation: assign``: assignments applied in order."""

    assignments: tuple[Assignment, ...] = ()


@frozen(kw_only=True)
class WebhookStep(StepBase):
    """``webhook:``: one call of a webhook's method."""

    webhook: str
    method: str
    parameters: tuple[Group, ...] = DEFAULT_GROUPS
    params: dict[str, Any] = field(default_factory=dict)
    document: str = ""
    on_failure: str | None = None
    retry: RetryPolicy | None = None


Step = OperationStep | WebhookStep


@frozen(kw_only=True)
class Flow:
    """One flow file; ``source`` is its document."""

    name: str
    source: Document
    description: str = ""
    on_complete: bool | str = False
    keys: dict[str, Any] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()

    @property
    def file(self) -> str:
        return self.source.file
