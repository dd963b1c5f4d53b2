"""``flowrunner init``: write a working flow repository.

The files pass ``flowrunner validate`` and ``flowrunner test`` as written. Nothing is
overwritten without ``force``: when any file exists, nothing at all is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from flowrunner.errors import UsageError
from flowrunner.source.schema import schema_text

PROJECT = """\
# yaml-language-server: $schema=.vscode/schemas/project.schema.json
# The project file: the webhooks flows may call, the HTTP policy, the account's user
# keys and where run state is kept. `flowrunner schema project` prints its schema.
version: 1
http:
  enabled: true          # false: every webhook call fails (HTTP_DISABLED)
  allow_http: false      # plain http:// is refused unless true
  allowlist:             # the only hosts webhooks may reach
    - directory.example.com
webhooks:
  directory:                                 # the name a webhook step selects
    url: https://directory.example.com/callers
    method: POST
    body: json                               # none (query string) | json | form
    auth:
      bearer:
        token: {secret: DIRECTORY_TOKEN}     # read from the environment, never written here
    timeout: 5                               # seconds, 1..60: the caller is waiting
    methods:
      findCaller:
        description: The caller's name, looked up by phone number.
        response:                            # flow key <- dotted path in the JSON answer
          name: caller.name
user_keys: {}                                # initial $user.key.* values
state: .flowrunner/state.db                  # run history, user keys, on-complete outbox
"""

FLOW = """\
# yaml-language-server: $schema=../.vscode/schemas/flow.schema.json
flow: hello
description: Greet a caller by name, looked up in the directory by phone number.
keys:
  greeting: null
steps:
  - id: lookup
    webhook: directory
    method: findCaller
    parameters: [call]
    on_failure: fallback       # the directory failed: greet without a name
  - id: greet
    operation: assign
    set:
      greeting: "Hello {{ $flow.key.name or 'there' }}!"
    next: end
  - id: fallback
    operation: assign
    set:
      greeting: Hello there!
"""

TEST = """\
# yaml-language-server: $schema=../.vscode/schemas/test.schema.json
# Run with `flowrunner test`: every webhook call is answered by a mock.
flow: hello
cases:
  - name: a known caller is greeted by name
    call: {cli: "+15551234567"}
    mocks:
      directory.findCaller:
        json: {caller: {name: Ada}}
    expect:
      status: COMPLETED
      steps: [lookup, greet]
      keys: {greeting: Hello Ada!}
      requests:
        - to: directory.findCaller
          body: {method: findCaller, call: {cli: "+15551234567"}}

  - name: a directory that times out still greets the caller
    call: {cli: "+15551234567"}
    mocks:
      directory.findCaller: {error: timeout}
    expect:
      steps: [lookup, fallback]
      keys: {greeting: Hello there!, error_reason: TIMEOUT}
"""

PRE_COMMIT = """\
# pre-commit hooks: `pip install pre-commit && pre-commit install`.
# They run the flowrunner installed where you commit (language: system).
repos:
  - repo: local
    hooks:
      - id: flowrunner-validate
        name: flowrunner validate
        entry: flowrunner validate
        language: system
        files: (^flows/.*\\.ya?ml$|^flowrunner\\.yaml$|\\.test\\.yaml$)
        require_serial: true
      - id: flowrunner-test
        name: flowrunner test
        entry: flowrunner test
        language: system
        files: (\\.ya?ml$)
        pass_filenames: false
        require_serial: true
"""

WORKFLOW = """\
name: flows
on:
  push:
    branches: [main]
  pull_request:

permissions:
  contents: read
  checks: write   # the test report

env:
  # where to install flowrunner from: the repository and commit you use (docs/ci.md)
  FLOWRUNNER: "git+https://github.com/OWNER/flowrunner@COMMIT"

jobs:
  flows:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - name: Install flowrunner
        run: pip install "$FLOWRUNNER"
      - name: Validate the project, every flow and every test file
        run: flowrunner validate --format github
      - name: Test the flows
        run: flowrunner test --format github --coverage
      - name: JUnit report
        if: always()
        run: flowrunner test --format junit > flow-tests.xml || true
      - uses: actions/upload-artifact@v4
        if: always()
        with:
          name: flow-tests
          path: flow-tests.xml
"""

GITIGNORE = """\
# flowrunner's run state (SQLite: history, user keys, on-complete outbox)
.flowrunner/
"""

VSCODE = json.dumps(
    {
        "yaml.schemas": {
            "./.vscode/schemas/project.schema.json": ["flowrunner.yaml"],
            "./.vscode/schemas/flow.schema.json": ["flows/**/*.yaml", "!flows/**/*.test.yaml"],
            "./.vscode/schemas/test.schema.json": ["**/*.test.yaml"],
        },
        "yaml.customTags": [],
        "yaml.validate": True,
        "yaml.completion": True,
        "files.associations": {"*.test.yaml": "yaml"},
    },
    indent=2,
)


def files() -> dict[str, str]:
    """Every file ``init`` writes, by its path relative to the repository."""
    out = {
        "flowrunner.yaml": PROJECT,
        "flows/hello.yaml": FLOW,
        "flows/hello.test.yaml": TEST,
        ".pre-commit-config.yaml": PRE_COMMIT,
        ".github/workflows/flows.yml": WORKFLOW,
        ".vscode/settings.json": VSCODE + "\n",
        ".gitignore": GITIGNORE,
    }
    for kind in ("project", "flow", "test"):
        out[f".vscode/schemas/{kind}.schema.json"] = schema_text(kind)
    return out


def write_repository(folder: Path, *, force: bool = False) -> list[Path]:
    """Write the repository into ``folder`` (created if missing); returns the paths written.

    Raises :class:`UsageError` naming the files that exist already, before writing
    anything, unless ``force``.
    """
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: is not a folder")
    planned = {folder / name: text for name, text in files().items()}
    existing = [path for path in planned if path.exists() or path.is_symlink()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise UsageError(f"not overwriting existing files (use --force): {names}")
    for path, text in planned.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()  # write a file of our own, never through a link
        path.write_text(text, encoding="utf-8")
    return list(planned)
