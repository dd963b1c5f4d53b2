"""``validate`` with several processes finds exactly what one process finds, in the same
order; and the optimizer is skipped only for templates it would leave unchanged."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.optimizer import optimize

from flowrunner import validate as validate_module
from flowrunner.templating.environment import sandbox_environment
from flowrunner.templating.static import folds, index_tree
from flowrunner.validate import MIN_FILES_PER_JOB, check_flow_files, default_jobs

PROJECT = """\
version: 1
http:
  allowlist: [shop.example.com]
webhooks:
  shop:
    url: https://shop.example.com/api
    methods:
      lookup:
        response: {status: status}
"""

GOOD = """\
flow: {name}
keys:
  attempts: 0
steps:
  - id: count
    operation: assign
    set:
      attempts: "{{{{ $flow.key.attempts + 1 }}}}"
      kind: "{{% if $call.direction == 'inbound' %}}in{{% else %}}out{{% endif %}}"
  - id: look
    webhook: shop
    method: lookup
"""

# one broken file every few, of every kind of problem a file can have
BROKEN = {
    7: "flow: {name}\nsteps:\n  - id: a\n    operation: asign\n    set: {{x: 1}}\n",
    19: "flow: {name}\nsteps: [\n",
    33: 'flow: {name}\nsteps:\n  - id: a\n    operation: assign\n    set: {{x: "{{{{ 1 + }}}}"}}\n',
    48: "flow: {name}\nsteps:\n  - id: a\n    operation: assign\n    set: {{x: $flow.key.nope}}\n",
    61: "flow: flow-005\nsteps:\n  - id: a\n    operation: assign\n    set: {{x: 1}}\n",
    118: "flow: flow-060\nsteps:\n  - id: a\n    operation: assign\n    set: {{x: 1}}\n",
}


def make_project(root: Path, count: int) -> None:
    (root / "flowrunner.yaml").write_text(PROJECT)
    (root / "flows").mkdir()
    for index in range(count):
        text = BROKEN.get(index, GOOD).format(name=f"flow-{index:03d}")
        (root / "flows" / f"flow-{index:03d}.yaml").write_text(text)


def validate(root: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "flowrunner", "validate", *args]
    return subprocess.run(
        command, cwd=root, capture_output=True, text=True, input=stdin, timeout=120
    )


def test_several_processes_report_what_one_does(tmp_path: Path) -> None:
    make_project(tmp_path, 130)
    one = validate(tmp_path, "--jobs", "1", "--format", "json")
    assert one.returncode == 1, one.stderr
    found = json.loads(one.stdout)
    rules = {d["rule"] for d in found}
    assert {"schema", "yaml-syntax", "template-syntax", "undefined-key", "duplicate-flow"} <= rules
    duplicates = sorted(d["file"] for d in found if d["rule"] == "duplicate-flow")
    assert duplicates == ["flows/flow-061.yaml", "flows/flow-118.yaml"]
    for jobs in ("2", "3", "7"):
        many = validate(tmp_path, "--jobs", jobs, "--format", "json")
        assert (many.returncode, many.stdout, many.stderr) == (1, one.stdout, ""), jobs
    default = validate(tmp_path, "--format", "json")  # one per CPU, 50 files or more each
    assert (default.returncode, default.stdout) == (1, one.stdout)


def test_stdin_and_named_files_keep_their_order_with_several_processes(tmp_path: Path) -> None:
    make_project(tmp_path, 120)
    text = "flow: flow-002\nsteps:\n  - id: a\n    operation: assign\n    set: {x: 1}\n"
    args = ("flows", "-")
    one = validate(tmp_path, "--jobs", "1", *args, stdin=text)
    many = validate(tmp_path, "--jobs", "4", *args, stdin=text)
    assert (many.returncode, many.stdout) == (one.returncode, one.stdout)
    assert "<stdin>:1:7: error: flow name 'flow-002' is already used by flows/flow-002.yaml" in (
        one.stdout
    )


def test_in_process_results_are_in_the_order_of_the_files(tmp_path: Path) -> None:
    make_project(tmp_path, 60)
    paths = sorted((tmp_path / "flows").glob("*.yaml"))
    one = check_flow_files(paths, None, jobs=1)
    many = check_flow_files(paths, None, jobs=3)
    assert [r.file for r in many] == [r.file for r in one]
    assert [(r.name, r.line, r.column) for r in many] == [(r.name, r.line, r.column) for r in one]
    assert [sorted(map(str, r.diagnostics)) for r in many] == [
        sorted(map(str, r.diagnostics)) for r in one
    ]


def _die(paths: list[Path]) -> list[object]:
    """A forked checker that dies mid-run, as one killed by the OOM killer would."""
    os._exit(3)


def test_a_checker_that_dies_leaves_its_files_to_the_first_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(tmp_path, 60)
    paths = sorted((tmp_path / "flows").glob("*.yaml"))
    one = check_flow_files(paths, None, jobs=1)
    monkeypatch.setattr(validate_module, "_check_run", _die)
    assert validate_module._forked([paths[:30], paths[30:]], None, 2) is None  # it died
    after = check_flow_files(paths, None, jobs=2)  # so the first process did the work
    assert [(r.file, r.name) for r in after] == [(r.file, r.name) for r in one]
    assert [sorted(map(str, r.diagnostics)) for r in after] == [
        sorted(map(str, r.diagnostics)) for r in one
    ]


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_jobs_value_is_a_usage_error(tmp_path: Path, value: str) -> None:
    make_project(tmp_path, 2)
    done = validate(tmp_path, "--jobs", value)
    assert done.returncode == 2
    assert "Invalid value for '--jobs' / '-j'" in done.stderr
    assert "Traceback" not in done.stderr


def test_small_projects_stay_in_one_process() -> None:
    assert default_jobs(0) == 1
    assert default_jobs(MIN_FILES_PER_JOB * 2 - 1) == 1
    assert default_jobs(MIN_FILES_PER_JOB * 2) in (1, 2)  # 1 on a one-CPU machine
    assert 1 <= default_jobs(10**6) <= 1024


# ---- skipping the optimizer ------------------------------------------------------

ENV = sandbox_environment()

leaves = st.sampled_from(
    ["x", "y.z", "r('call.cli')", "1", "0", "'a'", "''", "true", "false", "none", "[]"]
)


def combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.sampled_from(["+", "-", "*", "~", "and", "or", "==", "<", "in", "//", "%"])
    return st.one_of(
        st.tuples(children, binary, children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.tuples(children, children).map(lambda t: f"({t[0]} < {t[1]} < 3)"),
        children.map(lambda c: f"(not {c})"),
        children.map(lambda c: f"(-{c})"),
        children.map(lambda c: f"({c} | upper)"),
        st.tuples(children, children).map(lambda t: f"({t[0]} | default({t[1]}))"),
        children.map(lambda c: f"({c} is none)"),
        st.tuples(children, children).map(lambda t: f"[{t[0]}, {t[1]}]"),
        st.tuples(children, children).map(lambda t: f"{{'k': {t[0]}, {t[1]}: 1}}"),
        st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]"),
        children.map(lambda c: f"{c}.attr"),
        children.map(lambda c: f"{c}[1:]"),
        children.map(lambda c: f"f({c}, k={c})"),
    )


expressions = st.recursive(leaves, combine, max_leaves=8)


@given(expressions, st.sampled_from(["{{ %s }}", "{%% if %s %%}{{ x }}{%% endif %%}"]))
@settings(max_examples=400, deadline=None)
def test_a_tree_said_not_to_fold_is_what_the_optimizer_gives_back(expression, shape):
    source = shape % expression
    tree = ENV.parse(source)
    if folds(index_tree(tree)):
        return  # the optimizer runs: nothing to prove
    try:
        optimized = optimize(copy.deepcopy(tree), ENV)
    except Exception as exc:  # folding failed: then it was foldable after all
        pytest.fail(f"{source!r} said not to fold, but folding raised {exc!r}")
    assert optimized == tree, source


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' ~ 'b' }}",
        "{{ false and x }}",
        "{{ true or x }}",
        "{{ 'a' if true else x }}",
        "{{ 1 > 2 < x }}",
        "{{ [x, 1 > 0] }}",
        "{{ x | default('a' ~ 'b') }}",
        "{{ f(k=-1 < 0) }}",
        "text {{ x }}",
    ],
)
def test_what_can_fold_goes_to_the_optimizer(source: str) -> None:
    # (not `1 + 2`: the sandbox intercepts arithmetic, so Jinja never folds it)
    tree = ENV.parse(source)
    assert folds(index_tree(tree))
    assert optimize(copy.deepcopy(tree), ENV) != tree  # and it does change something


@pytest.mark.parametrize(
    "source", ["{{ x }}", "{{ x + 1 }}", "{{ x ~ ' for ' ~ y }}", "{{ x == 'a' and y }}"]
)
def test_references_alone_skip_the_optimizer(source: str) -> None:
    assert not folds(index_tree(ENV.parse(source)))
