"""Fuzz the `$`-reference scanner and the template compiler and renderer with atheris.

The input is ``template NUL value``: the template is compiled (a ``Compiled`` or a
``TemplateError``) and rendered with ``value`` in every scope (a value or a
``TemplateError``, within the render limits). See docs/fuzzing.md::

    python fuzz/fuzz_templating.py /tmp/corpus-templating fuzz/corpus/templating \\
        -atheris_runs=200000
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["flowrunner", "jinja2", "markupsafe"]):
    from flowrunner.errors import Mark, TemplateError, Where
    from flowrunner.templating import MAX_OUTPUT, Variables, compile_value

WHERE = Where(file="fuzz.yaml", mark=Mark(3, 7, '"'), step="fuzz", field="set.x")
DATA = (str, int, float, bool, type(None), list, dict)


def test_one_input(data: bytes) -> None:
    source, _, raw = data.partition(b"\x00")
    text = source.decode("utf-8", "replace")
    value = raw.decode("utf-8", "replace")
    try:
        compiled = compile_value(text, WHERE)
    except TemplateError as exc:
        assert exc.where.mark is not None and exc.where.mark.line >= 3
        return
    values = {"cli": value, "n": len(value), "items": [value, 1], "obj": {"k": value}}
    variables = Variables(call=values, flow=dict(values), user=dict(values), sys=values)
    try:
        result = compiled.render(variables)
    except TemplateError:
        return
    assert isinstance(result, DATA), type(result)
    if isinstance(result, str):
        assert len(result) <= MAX_OUTPUT
    if text == "$call.cli":
        assert result == value  # a value is data: never rendered again


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
