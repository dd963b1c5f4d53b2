"""Templates: flow strings compiled once, rendered per execution, in a sandbox.

A compiled string is one of five shapes, cheapest first:

* ``Constant``       no reference, no Jinja (``$$`` already read as ``$``)
* ``ReferenceValue`` exactly one reference: a dict walk, keeps the value's type
* ``Text``           literals and references: joined, no Jinja
* ``Expression``     exactly one ``{{ expression }}``: Jinja, keeps the value's type
* ``JinjaText``      anything else with ``{{ }}`` or ``{% %}``: Jinja, renders text

Dicts and lists become ``MappingValue`` / ``ListValue`` of compiled values (keys are
not templated). Inside ``{{ }}`` and ``{% %}`` each reference is rewritten into a call of
one helper that walks the variables as the fast paths do, so an unset value raises
UndefinedReference with a suggestion; only under ``| default(...)`` and ``is defined`` /
``is undefined`` is an unset value Jinja's undefined.

Everything jinja2 lives in this package; its exceptions become TemplateError with these
rule ids:

* ``template-syntax``     the template does not parse (positioned inside the string)
* ``unknown-scope``       ``$name`` that is not a reference, or a bare name in ``{{ }}``
* ``template-unsafe``     the sandbox refused an attribute, a call or a range
* ``template-too-large``  a template over 64 KiB, rendered text or a value it builds
                          over 64 KiB (see :mod:`flowrunner.templating.limits`)
* ``template-timeout``    a render over its time or work budget
* ``template-render``     anything else that failed while rendering
* ``undefined-key``       (UndefinedReference) a reference to something unset

The package, by job: :mod:`.values` (the compiled shapes), :mod:`.compiling`
(``compile_value``), :mod:`.parsing` (the Jinja compile path), :mod:`.static` (load-time
checks on the parsed tree), :mod:`.syntax` (positioning syntax errors), :mod:`.render`
(results as data, output limits, render errors), :mod:`.sandbox`, :mod:`.filters` and
:mod:`.environment` (the bounded environment). Importing the package imports no jinja2:
only compiling a string with ``{{ }}`` or ``{% %}`` does, so a flow without templates
is loaded, checked and run without it.
"""

from __future__ import annotations

from flowrunner.templating.compiling import MAX_SOURCE, compile_value, offset_mark
from flowrunner.templating.references import SCOPES, Reference, Variables, suggest
from flowrunner.templating.render import MAX_OUTPUT, format_text
from flowrunner.templating.values import (
    Compiled,
    Constant,
    Expression,
    JinjaText,
    ListValue,
    MappingValue,
    ReferenceValue,
    Text,
)

__all__ = [
    "MAX_OUTPUT",
    "MAX_SOURCE",
    "SCOPES",
    "Compiled",
    "Constant",
    "Expression",
    "JinjaText",
    "ListValue",
    "MappingValue",
    "Reference",
    "ReferenceValue",
    "Text",
    "Variables",
    "compile_value",
    "format_text",
    "offset_mark",
    "suggest",
]
