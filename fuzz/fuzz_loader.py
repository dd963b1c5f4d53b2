"""Fuzz the defensive YAML loader (and the schema check behind it) with atheris.

Any bytes must give a ``Document`` or a ``LoadError``; a loaded document must give a
list of diagnostics from the schema check, never an exception. See docs/fuzzing.md::

    python fuzz/fuzz_loader.py /tmp/corpus-loader fuzz/corpus/loader -atheris_runs=200000
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["flowrunner", "yaml"]):
    from flowrunner.errors import LoadError
    from flowrunner.source import loader, schema


def test_one_input(data: bytes) -> None:
    kind = "project" if data[:1] == b"v" else "flow"  # "version: 1" starts a project
    try:
        doc = loader.load_bytes(data, "fuzz.yaml")
    except LoadError as exc:
        line = exc.diagnostic.format()
        assert "\n" not in line and exc.diagnostic.line >= 1 and exc.diagnostic.column >= 1
        return
    for problem in doc.problems:
        assert "\n" not in problem.format()
    for diagnostic in schema.check(doc.data, kind, doc.file, doc.mark, doc.key_mark):
        assert diagnostic.line >= 1 and diagnostic.column >= 1


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
