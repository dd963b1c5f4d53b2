"""The authoring commands: ``test``, ``init`` and ``graph`` (click, thin)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from flowrunner.cli.common import EXIT_OK, EXIT_PROBLEMS, State, guarded


@click.command("test")
@click.argument("paths", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "junit", "github"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.option("--coverage", is_flag=True, help="Report steps and branches reached per flow.")
@click.option(
    "--min-coverage",
    type=click.FloatRange(0, 100),
    metavar="PCT",
    help="Exit 1 when the steps and branches reached are under PCT percent.",
)
@click.pass_obj
@guarded
def test_command(
    state: State, paths: tuple[str, ...], fmt: str, coverage: bool, min_coverage: float | None
) -> None:
    """Run flow tests (*.test.yaml files or folders; default: every one of the project).

    Exit 0 when every case passed, 1 when one failed (or coverage is under
    --min-coverage), 2 when a test file or its flow is invalid.
    """
    from flowrunner.project import require_root
    from flowrunner.testing.cases import load_suites, project_plans, run_suites
    from flowrunner.testing.coverage import coverage_of, coverage_text, total_percent
    from flowrunner.testing.output import RENDERERS

    root = require_root(state.project)
    suites = load_suites(list(paths), root)
    results = run_suites(suites)
    click.echo(RENDERERS[fmt](results))
    code = EXIT_OK if all(r.passed for r in results) else EXIT_PROBLEMS
    if coverage or min_coverage is not None:
        # with no PATH the whole project is under test: a flow without tests counts too
        flows = coverage_of(suites, results, () if paths else project_plans(root))
        # json and junit keep stdout for their document alone
        click.echo(coverage_text(flows), err=fmt in ("json", "junit"))
        percent = total_percent(flows)
        if min_coverage is not None and percent < min_coverage:
            click.echo(
                f"flowrunner: coverage {percent:.1f}% is under --min-coverage {min_coverage:g}%",
                err=True,
            )
            code = EXIT_PROBLEMS
    sys.exit(code)


@click.command("init")
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@guarded
def init_command(folder: Path | None, force: bool) -> None:
    """Write a working flow repository into FOLDER (default: the working directory).

    Exit 0 when written, 2 when a file exists already (nothing is written without --force).
    """
    from flowrunner.cli.scaffold import write_repository

    written = write_repository(folder or Path.cwd(), force=force)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo("next: flowrunner validate && flowrunner test")


@click.command("graph")
@click.argument("flow")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="Diagram language: mermaid (pastes into Markdown) or dot (Graphviz).",
)
@click.pass_obj
@guarded
def graph_command(state: State, flow: str, fmt: str) -> None:
    """Print a diagram of FLOW (a flow name of the project, or a path)."""
    from flowrunner.plan.graph import RENDERERS
    from flowrunner.project import load_plan, require_root

    plan = load_plan(require_root(state.project), flow)
    click.echo(RENDERERS[fmt](plan))
