"""Golden files for ``flowrunner validate``: the exact output of every case.

Layout (``tests/cases/``):

* ``project/flowrunner.yaml``: the project every flow case is checked against.
* ``invalid/<name>.yaml`` (or ``<name>.gen``, generated at test time) beside
  ``<name>.out``: run as ``flowrunner --project project validate invalid/<name>.yaml``
  from ``tests/cases``.
* ``valid/<name>.yaml``: must give exit 0 and no output.
* ``projects/<name>/`` (a ``flowrunner.yaml`` and ``flows/``) beside
  ``projects/<name>.out``: the whole project, run as
  ``flowrunner --project <name> validate`` from ``tests/cases/projects``.
* ``special/<name>.out``: outputs compared by a dedicated test below.

The expected exit code is 1 when the summary line counts an error, else 0.
``FLOWRUNNER_UPDATE_GOLDEN=1 pytest tests/test_golden.py`` rewrites every ``.out``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from flowrunner.cli.main import main

REPO = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "cases"
PROJECT = CASES / "project"
UPDATE = os.environ.get("FLOWRUNNER_UPDATE_GOLDEN") == "1"

DIAGNOSTIC = re.compile(
    r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): (?P<severity>error|warning): "
    r"(?P<message>.*) \[(?P<rule>[a-z0-9-]+)\]$"
)
SUMMARY = re.compile(r"^(\d+) error\(s\), (\d+) warning\(s\)$")
JSON_FIELDS = {"file", "line", "column", "severity", "rule", "message"}


def invoke(
    cwd: Path, args: list[str], monkeypatch: pytest.MonkeyPatch, stdin: Any = None
) -> Result:
    """Run the CLI in-process from ``cwd`` (printed paths are relative to it)."""
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(main, args, input=stdin)


def expected_exit(output: str) -> int:
    lines = output.splitlines()
    if not lines:
        return 0
    summary = SUMMARY.match(lines[-1])
    assert summary, f"the last line is not a summary: {lines[-1]!r}"
    return 1 if int(summary.group(1)) else 0


def check_golden(out_file: Path, result: Result) -> None:
    """Compare stdout with ``out_file`` (or rewrite it), then the exit code."""
    assert result.stderr == "", result.stderr
    if UPDATE:
        out_file.write_text(result.stdout, encoding="utf-8")
    expected = out_file.read_text(encoding="utf-8")
    assert result.stdout == expected
    assert result.exit_code == expected_exit(expected), result.stdout


def generate(spec_file: Path, folder: Path) -> Path:
    """Write the flow file a ``.gen`` spec describes: head + repeat * times + tail."""
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    text = spec.get("head", "") + spec["repeat"] * spec["times"] + spec.get("tail", "")
    target = folder / f"{spec_file.stem}.yaml"
    target.write_bytes(text.encode("utf-8"))
    return target


def case_inputs(folder: str) -> list[Path]:
    return sorted([*(CASES / folder).glob("*.yaml"), *(CASES / folder).glob("*.gen")])


def rules_of(text: str) -> set[str]:
    return {m.group("rule") for line in text.splitlines() if (m := DIAGNOSTIC.match(line))}


def golden_outputs() -> list[Path]:
    return sorted(CASES.rglob("*.out"))


# --- the golden cases ----------------------------------------------------------------------


@pytest.mark.parametrize("case", case_inputs("invalid"), ids=lambda p: p.name)
def test_invalid_case(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if case.suffix == ".gen":
        (tmp_path / "invalid").mkdir()
        generate(case, tmp_path / "invalid")
        cwd, project = tmp_path, str(PROJECT)
    else:
        cwd, project = CASES, "project"
    args = ["--project", project, "validate", f"invalid/{case.stem}.yaml"]
    result = invoke(cwd, args, monkeypatch)
    out_file = case.with_suffix(".out")
    if not UPDATE:
        assert out_file.is_file(), f"{out_file.name} is missing (FLOWRUNNER_UPDATE_GOLDEN=1)"
    check_golden(out_file, result)
    assert result.stdout, "an invalid case must produce at least one diagnostic"


@pytest.mark.parametrize("case", case_inputs("valid"), ids=lambda p: p.name)
def test_valid_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke(CASES, ["--project", "project", "validate", f"valid/{case.name}"], monkeypatch)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


def test_valid_cases_together_and_the_case_project(monkeypatch: pytest.MonkeyPatch) -> None:
    # every valid flow has its own name: checked together there is no duplicate-flow
    result = invoke(CASES, ["--project", "project", "validate", "valid"], monkeypatch)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    result = invoke(CASES, ["--project", "project", "validate"], monkeypatch)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (CASES / "projects").iterdir() if p.is_dir())
)
def test_project_case(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke(CASES / "projects", ["--project", name, "validate"], monkeypatch)
    check_golden(CASES / "projects" / f"{name}.out", result)
    assert result.exit_code == 1


def test_every_golden_output_has_its_case() -> None:
    for out in golden_outputs():
        folder = out.parent.name
        if folder == "invalid":
            assert out.with_suffix(".yaml").is_file() or out.with_suffix(".gen").is_file(), out
        elif folder == "projects":
            assert out.with_suffix("").is_dir(), out
        else:
            assert folder == "special", out


def test_case_counts() -> None:
    assert len(case_inputs("invalid")) >= 45
    assert len(case_inputs("valid")) >= 8


def test_plaintext_secrets_are_never_echoed() -> None:
    project = (CASES / "projects" / "plaintext-secret" / "flowrunner.yaml").read_text()
    output = (CASES / "projects" / "plaintext-secret.out").read_text()
    secrets = ("sk_live_51HxDoNotCommitMe", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "hunter2")
    for secret in secrets:
        assert secret in project
        assert secret not in output


class _FailingStdin(io.RawIOBase):
    """A standard input whose reads fail, as a broken pipe or device would."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if len(buffer) == 0:
            return 0
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_file_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.BufferedReader(_FailingStdin())
    result = invoke(CASES, ["--project", "project", "validate", "-"], monkeypatch, stdin)
    check_golden(CASES / "special" / "file-unreadable.out", result)
    assert result.exit_code == 1


# --- output formats and exit codes --------------------------------------------------------


def golden_lines(name: str) -> list[str]:
    return (CASES / "invalid" / f"{name}.out").read_text(encoding="utf-8").splitlines()[:-1]


def test_json_format_has_exactly_the_documented_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--project", "project", "validate", "--format", "json", "invalid/unknown-step.yaml"]
    result = invoke(CASES, args, monkeypatch)
    assert result.exit_code == 1
    items = json.loads(result.stdout)
    assert isinstance(items, list) and items
    for item in items:
        assert set(item) == JSON_FIELDS
    as_text = [
        f"{d['file']}:{d['line']}:{d['column']}: {d['severity']}: {d['message']} [{d['rule']}]"
        for d in items
    ]
    assert as_text == golden_lines("unknown-step")


def test_json_format_without_problems_is_an_empty_list(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--project", "project", "validate", "--format", "json", "valid/jinja-blocks.yaml"]
    result = invoke(CASES, args, monkeypatch)
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])


def test_github_format_gives_workflow_annotations(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--project", "project", "validate", "--format", "github", "invalid/unknown-step.yaml"]
    result = invoke(CASES, args, monkeypatch)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == len(golden_lines("unknown-step"))
    assert lines[0] == (
        "::error file=invalid/unknown-step.yaml,line=6,col=17,title=unknown-step::"
        "jump to unknown step 'sory' (did you mean 'sorry'?); use a step id or 'end'"
    )
    for line in lines:
        assert line.startswith("::error file=")
    args = [
        "--project",
        "project",
        "validate",
        "--format",
        "github",
        "invalid/unreachable-step.yaml",
    ]
    warned = invoke(CASES, args, monkeypatch).stdout.splitlines()
    assert warned and all(line.startswith("::warning file=") for line in warned)


def test_warnings_alone_exit_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    for fmt in ("text", "json", "github"):
        args = ["--project", "project", "validate", "--format", fmt]
        args.append("invalid/unreachable-step.yaml")
        result = invoke(CASES, args, monkeypatch)
        assert result.exit_code == 0, fmt
        assert "unreachable-step" in result.stdout


def test_stdin_is_read_for_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    source = (CASES / "invalid" / "undefined-key.yaml").read_bytes()
    result = invoke(CASES, ["--project", "project", "validate", "-"], monkeypatch, source)
    expected = (CASES / "invalid" / "undefined-key.out").read_text(encoding="utf-8")
    assert result.stdout == expected.replace("invalid/undefined-key.yaml", "<stdin>")
    assert result.exit_code == 1
    valid = (CASES / "valid" / "on-complete-true.yaml").read_bytes()
    result = invoke(CASES, ["--project", "project", "validate", "-"], monkeypatch, valid)
    assert (result.exit_code, result.stdout) == (0, "")


def test_a_missing_path_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--project", "project", "validate", "valid/on-complete-true.yaml", "nope.yaml"]
    result = invoke(CASES, args, monkeypatch)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == "flowrunner: nope.yaml: no such file or folder\n"


def test_no_project_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = CASES / "valid" / "on-complete-true.yaml"
    result = invoke(tmp_path, ["validate", str(flow)], monkeypatch)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "flowrunner: no flowrunner.yaml found in this folder or any parent (use --project DIR)\n"
    )
    result = invoke(tmp_path, ["--project", ".", "validate"], monkeypatch)
    assert result.exit_code == 2
    assert result.stderr == "flowrunner: .: no flowrunner.yaml in this folder\n"


def test_the_project_is_found_from_a_subfolder(monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke(CASES / "projects" / "url-scheme" / "flows", ["validate"], monkeypatch)
    assert result.exit_code == 1
    assert "[url-scheme]" in result.stdout


def test_a_folder_is_checked_file_by_file(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--project", "duplicate-flow", "validate", "duplicate-flow/flows"]
    result = invoke(CASES / "projects", args, monkeypatch)
    assert result.stdout == (CASES / "projects" / "duplicate-flow.out").read_text()


def test_subprocess_output_matches_the_golden_file() -> None:
    command = [sys.executable, "-m", "flowrunner", "--project", "project", "validate"]
    done = subprocess.run(
        [*command, "invalid/multi-problems-semantic.yaml"],
        cwd=CASES,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout == (CASES / "invalid" / "multi-problems-semantic.out").read_text()
    assert (done.returncode, done.stderr) == (1, "")


# --- the repository's own flows -------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [None, *sorted(p.name for p in (REPO / "flows").iterdir())],
    ids=lambda target: target or "whole-project",
)
def test_the_repository_flows_validate(target: str | None) -> None:
    paths = [] if target is None else [f"flows/{target}"]
    done = subprocess.run(
        [sys.executable, "-m", "flowrunner", "validate", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# --- docs/rules.md --------------------------------------------------------------------------

RULES_DOC = REPO / "docs" / "rules.md"
RULE_HEADING = re.compile(r"^### `([a-z0-9-]+)`", re.M)


def documented_rules() -> set[str]:
    return set(RULE_HEADING.findall(RULES_DOC.read_text(encoding="utf-8")))


def golden_rules() -> set[str]:
    found: set[str] = set()
    for out in golden_outputs():
        found |= rules_of(out.read_text(encoding="utf-8"))
    return found


def test_every_documented_rule_has_a_golden_case() -> None:
    missing = documented_rules() - golden_rules()
    assert not missing, f"rules in docs/rules.md without a golden .out: {sorted(missing)}"


def test_every_rule_in_a_golden_case_is_documented() -> None:
    missing = golden_rules() - documented_rules()
    assert not missing, f"rules in .out files missing from docs/rules.md: {sorted(missing)}"


def test_diagnostics_quoted_in_the_rules_doc_are_real() -> None:
    outputs = "\n".join(out.read_text(encoding="utf-8") for out in golden_outputs())
    lines = [line.strip() for line in RULES_DOC.read_text(encoding="utf-8").splitlines()]
    quoted = [line for line in lines if DIAGNOSTIC.match(line)]
    assert len(quoted) >= len(documented_rules())
    for line in quoted:
        assert line in outputs.splitlines(), f"not in any golden output: {line}"


# --- the pre-commit hook --------------------------------------------------------------------


def test_pre_commit_hook_definition() -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert isinstance(hooks, list)
    (hook,) = [h for h in hooks if h["id"] == "flowrunner-validate"]
    assert hook["entry"] == "flowrunner validate"
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is True
    files = re.compile(hook["files"])
    for path in ("flows/order-status.yaml", "flows/sales/lead.yml", "flowrunner.yaml"):
        assert files.search(path), path
    for path in ("docs/rules.md", "flows/README.md", "other/flowrunner.yaml", "x/flows/a.yaml"):
        assert not files.search(path), path


def test_pre_commit_entry_command_exists() -> None:
    program, *args = "flowrunner validate".split()
    scripts = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert f'\n{program} = "flowrunner.__main__:entry"' in scripts
    installed = shutil.which(program, path=str(Path(sys.executable).parent))
    assert installed is not None, f"{program} is not installed beside {sys.executable}"
    # as pre-commit runs it: the entry, then the staged file names
    done = subprocess.run(
        [installed, *args, "flowrunner.yaml", "flows/order-status.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# --- known bugs ---------------------------------------------------------------------------


def test_the_same_flow_given_twice_is_not_a_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--project", "project", "validate", "valid", "valid/on-complete-true.yaml"]
    result = invoke(CASES, args, monkeypatch)
    assert (result.exit_code, result.stdout) == (0, "")


def test_template_error_in_a_block_scalar_has_the_file_column(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["--project", "project", "validate", "invalid/template-syntax-block-scalar.yaml"]
    result = invoke(CASES, args, monkeypatch)
    # `        your order {{ $flow.key.order_id ) }} has shipped.`: `{{` is at column 20
    assert result.stdout.startswith("invalid/template-syntax-block-scalar.yaml:10:20: ")


def test_reference_in_a_multi_line_plain_scalar_is_on_its_own_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "wrapped.yaml").write_text(
        "flow: wrapped\n"
        "steps:\n"
        "  - id: greet\n"
        "    operation: assign\n"
        "    set:\n"
        "      message: Hello caller,\n"
        "        your order is $flow.key.ordr_id.\n"
    )
    result = invoke(tmp_path, ["--project", str(PROJECT), "validate", "wrapped.yaml"], monkeypatch)
    assert result.stdout.startswith("wrapped.yaml:7:23: ")
