"""Print test results: ``text``, ``json``, ``junit`` (JUnit XML) or ``github``."""

from __future__ import annotations

import json
from collections.abc import Callable
from xml.etree import ElementTree as ET

from flowrunner.testing.cases import CaseResult

FORMATS = ("text", "json", "junit", "github")


def case_line(result: CaseResult) -> str:
    """``PASS name (1.2 ms)`` or ``FAIL name (1.2 ms)``."""
    word = "PASS" if result.passed else "FAIL"
    return f"{word} {result.file}: {result.case} ({result.seconds * 1000:.1f} ms)"


def failure_text(result: CaseResult) -> str:
    """A failed case in full: where it is, then each failed check."""
    head = f"{result.file}:{result.line}: case '{result.case}' failed"
    return "\n".join([head, *(f"  {f}" for f in result.failures)])


def summary(results: list[CaseResult]) -> str:
    """``N passed, N failed``."""
    failed = sum(1 for r in results if not r.passed)
    return f"{len(results) - failed} passed, {failed} failed"


def text(results: list[CaseResult]) -> str:
    """A line per case, then every failure in full, then the summary."""
    lines = [case_line(r) for r in results]
    failed = [r for r in results if not r.passed]
    if failed:
        lines.append("")
        lines += [failure_text(r) for r in failed]
    lines.append(summary(results))
    return "\n".join(lines)


def as_json(results: list[CaseResult]) -> str:
    """A list of ``{file, case, line, status, failures, seconds}``."""
    return json.dumps(
        [
            {
                "file": r.file,
                "case": r.case,
                "line": r.line,
                "status": "passed" if r.passed else "failed",
                "failures": list(r.failures),
                "seconds": round(r.seconds, 6),
            }
            for r in results
        ],
        indent=2,
        ensure_ascii=False,
    )


def junit(results: list[CaseResult]) -> str:
    """JUnit XML: one ``testsuite`` per file, one ``testcase`` per case."""
    root = ET.Element("testsuites", name="flowrunner")
    by_file: dict[str, list[CaseResult]] = {}
    for r in results:
        by_file.setdefault(r.file, []).append(r)
    for file, cases in by_file.items():
        suite = ET.SubElement(root, "testsuite", name=file)
        _counts(suite, cases)
        for r in cases:
            case = ET.SubElement(
                suite,
                "testcase",
                name=r.case,
                classname=r.flow,
                file=r.file,
                line=str(r.line),
                time=f"{r.seconds:.6f}",
            )
            if r.failures:
                failure = ET.SubElement(case, "failure", message=r.failures[0], type="mismatch")
                failure.text = "\n".join(r.failures)
    _counts(root, results)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def _counts(element: ET.Element, results: list[CaseResult]) -> None:
    element.set("tests", str(len(results)))
    element.set("failures", str(sum(1 for r in results if not r.passed)))
    element.set("errors", "0")
    element.set("skipped", "0")
    element.set("time", f"{sum(r.seconds for r in results):.6f}")


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def github(results: list[CaseResult]) -> str:
    """The text output, then one ``::error`` workflow command per failed case."""
    lines = [text(results)]
    for r in results:
        if r.failures:
            props = f"file={_escape_property(r.file)},line={r.line}"
            props += f",title={_escape_property('test: ' + r.case)}"
            lines.append(f"::error {props}::{_escape_data(chr(10).join(r.failures))}")
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[list[CaseResult]], str]] = {
    "text": text,
    "json": as_json,
    "junit": junit,
    "github": github,
}
