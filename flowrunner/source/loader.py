"""The defensive YAML loader: bytes in, plain data with 1-based positions out.

Only a safe subset of YAML is accepted. Fatal refusals raise ``LoadError`` (rule ids
``yaml-syntax``, ``yaml-alias``, ``yaml-tag``, ``yaml-multiple-documents``,
``yaml-too-large``, ``yaml-too-deep``, ``yaml-encoding``, ``file-unreadable``); duplicate
and non-string keys are collected in ``Document.problems`` (``yaml-duplicate-key``,
``yaml-key-type``) and loading continues. Every yaml exception is translated here.

The data is built from the parser's event stream by an iterative builder, so depth is
checked before anything deep is built, and anchors or aliases are refused before they
can expand.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any, BinaryIO

import yaml
from yaml import events
from yaml.nodes import ScalarNode

from flowrunner.document import Document, Path
from flowrunner.errors import Diagnostic, LoadError, Mark
from flowrunner.source.yaml12 import BOOLEANS, TRUTHY_11, TRUTHY_KEYS, truthy_warning

MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 64
# Longer numbers are refused: int() and sexagesimal (1:30:00) arithmetic grow quadratic.
MAX_NUMBER_CHARS = 4300

_Y = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_Y + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ = _Y + "map", _Y + "seq"
_ALLOWED = "!!str, !!int, !!float, !!bool, !!null, !!map, !!seq"
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")

# Implicit typing as YAML 1.1 (PyYAML's resolver), minus the types flowrunner does not
# want: timestamps stay strings, `<<` and `=` are plain keys/strings.
_IMPLICIT: dict[str, list[tuple[str, re.Pattern[str]]]] = {
    first: kept
    for first, pairs in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
    if first is not None
    and (kept := [(t, r) for t, r in pairs if t in (_INT, _FLOAT, _BOOL, _NULL)])
}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()

_CParser: Any
try:
    from yaml._yaml import CParser as _CParser
except ImportError:  # no libyaml: the pure-Python parser gives the same events, slower
    _CParser = None


class _PurePythonParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """The pure-Python event parser, used when libyaml is not available."""

    def __init__(self, text: str) -> None:
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


def _new_parser(text: str) -> Any:
    return _PurePythonParser(text) if _CParser is None else _CParser(text)


def load_bytes(raw: bytes, file: str) -> Document:
    """Load one YAML file from its bytes. Raises ``LoadError`` on a fatal refusal."""
    if len(raw) > MAX_BYTES:
        raise _too_large(file, len(raw))
    return _parse(_decode(raw, file), file)


def load_text(text: str, file: str) -> Document:
    """Load one YAML file from decoded text. Raises ``LoadError`` on a fatal refusal."""
    if len(text) > MAX_BYTES:
        raise _too_large(file, None)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        line, column = _position(text, exc.start)
        message = f"character U+{ord(text[exc.start]):04X} cannot be encoded as UTF-8"
        raise _refuse(file, line, column, "yaml-encoding", message) from exc
    if size > MAX_BYTES:
        raise _too_large(file, size)
    return _parse(text.removeprefix("\ufeff"), file)


def load_stream(stream: BinaryIO, file: str = "<stdin>") -> Document:
    """Load one YAML file from a binary stream, reading at most ``MAX_BYTES + 1`` bytes."""
    try:
        raw = _read_limited(stream)
    except OSError as exc:
        raise _unreadable(file, exc) from exc
    if len(raw) > MAX_BYTES:
        raise _too_large(file, None)
    return load_bytes(raw, file)


def load_path(path: pathlib.Path, display: str | None = None) -> Document:
    """Load one YAML file; ``display`` (default: the path) names it in diagnostics.

    The size is checked with ``stat`` before anything is read. An ``OSError`` becomes
    a ``LoadError`` with rule ``file-unreadable``.
    """
    file = str(path) if display is None else display
    try:
        size = path.stat().st_size
        if size <= MAX_BYTES:
            with path.open("rb") as stream:
                return load_stream(stream, file)
    except OSError as exc:
        raise _unreadable(file, exc) from exc
    raise _too_large(file, size)


_NO_KEY: Any = object()  # the next node of the mapping is a key
_DROP: Any = object()  # the key was refused: drop the value that follows it


class _Frame:
    """An open collection; ``path`` is None when its content is being dropped."""

    __slots__ = ("container", "path", "is_map", "key")

    def __init__(self, container: Any, path: Path | None, is_map: bool) -> None:
        self.container = container
        self.path = path
        self.is_map = is_map
        self.key: Any = _NO_KEY


def _mark(event: events.Event, style: str | None = None) -> Mark:
    start: Any = event.start_mark
    return Mark(start.line + 1, start.column + 1, style)


def _with_lines(mark: Mark, value: str, text_lines: list[str], end_line: int) -> Mark:
    """``mark`` with a map from offsets in ``value`` to file positions, for a scalar
    spanning lines ``mark.line`` to ``end_line + 1`` (0-based ``end_line``).

    Each source line's content (indentation, quotes and block indicators dropped) is
    found in the value in order; escapes and folding may hide a line, which then maps
    to the line before it.
    """
    entries: list[tuple[int, int, int]] = []
    cursor = 0
    last = min(end_line, len(text_lines) - 1)
    for index in range(mark.line - 1, last + 1):
        raw = text_lines[index]
        start = mark.column - 1 if index == mark.line - 1 else 0
        content = raw[start:].lstrip(" \t")
        skipped = len(raw) - len(content)
        if index == mark.line - 1 and mark.style in ("'", '"') and content[:1] == mark.style:
            content, skipped = content[1:], skipped + 1
        probe = content[:24].rstrip("'\"")
        if not probe or (index == mark.line - 1 and mark.style in ("|", ">")):
            continue
        found = value.find(probe, cursor)
        if found < 0:
            continue
        entries.append((found, index + 1, skipped + 1))
        cursor = found + len(probe)
    if len(entries) < 2 and not (entries and entries[0][1] != mark.line):
        return mark
    return Mark(mark.line, mark.column, mark.style, tuple(entries))


_ESCAPE_SIZES = {"x": 4, "u": 6, "U": 10}  # \\xHH, \\uHHHH, \\UHHHHHHHH; others: 2


def _quoted_lines(
    mark: Mark, value: str, text_lines: list[str], end_line: int, end_column: int
) -> Mark | None:
    """``mark`` with an exact map from offsets in the value to file positions, for a
    quoted scalar that holds escapes or spans lines (its closing quote just before
    0-based ``end_line``:``end_column``). None when it needs no map, or when reading the
    source again does not give ``value`` (then the caller maps line by line).

    Each escape (``\\n``, ``\\"``, ``\\u00e9`` in double quotes, ``''`` in single
    quotes) is one character of the value written with more; a line break between two
    lines is one space, or one newline per empty line between them; white space
    around a line break is dropped; an escaped line break joins the lines.
    """
    double = mark.style == '"'
    first = mark.line - 1
    if end_line == first:
        source = text_lines[first][mark.column : end_column - 1]
        if ("\\" if double else "''") not in source:
            return None  # one line, no escape: offsets are columns past the quote
    entries: list[tuple[int, int, int]] = []
    offset = 0
    index = first
    while True:
        raw = text_lines[index]
        stop = end_column - 1 if index == end_line else len(raw)
        start = mark.column if index == first else len(raw) - len(raw.lstrip(" \t"))
        joined = False  # the line ends with an escaped line break
        if index != end_line:
            body = raw.rstrip(" \t")
            tail = len(body) - len(body.rstrip("\\"))
            joined = double and tail % 2 == 1 and len(body) == len(raw)
            stop = len(body) - 1 if joined else len(body)
        entries.append((offset, index + 1, start + 1))
        column = start
        while column < stop:
            char = raw[column]
            if double and char == "\\":
                column += _ESCAPE_SIZES.get(raw[column + 1 : column + 2], 2)
            elif not double and char == "'":
                column += 2  # '' is one quote
            else:
                if value[offset : offset + 1] != char:
                    return None
                column += 1
                offset += 1
                continue
            offset += 1
            entries.append((offset, index + 1, column + 1))
        if index == end_line:
            break
        index += 1
        empty = 0
        while index < end_line and not text_lines[index].strip(" \t"):
            index += 1
            empty += 1
        # an empty line is a newline; without one, a line break is a space, and an
        # escaped line break nothing
        fold = "\n" * empty if joined else "\n" * empty or " "
        if value[offset : offset + len(fold)] != fold:
            return None
        offset += len(fold)
    if offset != len(value) or len(entries) < 2:
        return None
    return Mark(mark.line, mark.column, mark.style, tuple(entries))


def _short(tag: str) -> str:
    return "!!" + tag[len(_Y) :] if tag.startswith(_Y) else tag


def _key_type_message(text: str, value: Any) -> str:
    if not text:
        return "an empty key is read by YAML as null; write a key name"
    if value is None:
        what = "null"
    elif isinstance(value, bool):
        what = f"the boolean {str(value).lower()}"
    else:
        what = f"the {'integer' if isinstance(value, int) else 'float'} {value}"
    return f"key '{text}' is read by YAML as {what}; quote it (\"{text}\")"


class _Builder:
    """Builds plain data and marks from parser events, without recursion."""

    def __init__(self, file: str, text: str = "") -> None:
        self.file = file
        self.text_lines = text.splitlines()
        self.data: Any = None
        self.marks: dict[Path, Mark] = {}
        self.key_marks: dict[Path, Mark] = {}
        self.problems: list[Diagnostic] = []
        self.stack: list[_Frame] = []
        self.documents = 0

    def build(self, parser: Any) -> Document:
        handlers: dict[type[events.Event], Any] = {
            events.ScalarEvent: self._scalar,
            events.MappingStartEvent: self._start,
            events.SequenceStartEvent: self._start,
            events.MappingEndEvent: self._end,
            events.SequenceEndEvent: self._end,
            events.AliasEvent: self._alias,
            events.DocumentStartEvent: self._document,
        }
        get_event = parser.get_event
        while (kind := type(event := get_event())) is not events.StreamEndEvent:
            handler = handlers.get(kind)
            if handler is not None:
                handler(event)
        return Document(self.file, self.data, self.marks, self.key_marks, self.problems)

    def _fatal(self, event: events.Event, rule: str, message: str) -> LoadError:
        mark = _mark(event)
        return _refuse(self.file, mark.line, mark.column, rule, message)

    def _problem(self, mark: Mark, rule: str, message: str) -> None:
        self.problems.append(_diagnostic(self.file, mark.line, mark.column, rule, message))

    def _document(self, event: events.DocumentStartEvent) -> None:
        self.documents += 1
        if self.documents > 1:
            message = "a file may hold only one YAML document; a second one starts here"
            raise self._fatal(event, "yaml-multiple-documents", message)

    def _alias(self, event: events.AliasEvent) -> None:
        raise self._fatal(event, "yaml-alias", _alias_message("alias *", event.anchor))

    def _check_node(
        self, event: events.NodeEvent, tag: str | None, allowed: tuple[str, ...]
    ) -> None:
        if event.anchor is not None:
            raise self._fatal(event, "yaml-alias", _alias_message("anchor &", event.anchor))
        if tag is not None and tag != "!" and tag not in allowed:
            if tag in (_STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ):
                kind = {_MAP: "a mapping", _SEQ: "a sequence"}.get(allowed[0], "a scalar")
                message = f"tag {_short(tag)} cannot be used on {kind}"
            else:
                message = f"unsupported tag {_short(tag)}; flowrunner files allow only {_ALLOWED}"
            raise self._fatal(event, "yaml-tag", message)

    def _start(self, event: events.CollectionStartEvent) -> None:
        is_map = type(event) is events.MappingStartEvent
        if event.anchor is not None or event.tag is not None:
            self._check_node(event, event.tag, (_MAP,) if is_map else (_SEQ,))
        if len(self.stack) >= MAX_DEPTH:
            message = f"nesting is deeper than {MAX_DEPTH} levels"
            raise self._fatal(event, "yaml-too-deep", message)
        container: Any = {} if is_map else []
        path = self._attach(container, _mark(event))
        self.stack.append(_Frame(container, path, is_map))

    def _end(self, event: events.Event) -> None:
        self.stack.pop()

    def _scalar(self, event: events.ScalarEvent) -> None:
        if event.anchor is not None or event.tag is not None:
            self._check_node(event, event.tag, (_STR, _INT, _FLOAT, _BOOL, _NULL))
        stack = self.stack
        if stack and stack[-1].is_map and stack[-1].key is _NO_KEY:
            self._key(stack[-1], event)
            return
        value = self._value(event)
        style = (event.style or None) if type(value) is str else None
        mark = _mark(event, style)
        end: Any = event.end_mark
        if type(value) is str and self.text_lines:
            lines = self.text_lines
            mapped = None
            if style in ("'", '"') and end.line < len(lines):
                mapped = _quoted_lines(mark, value, lines, end.line, end.column)
            if mapped is not None:
                mark = mapped
            elif end.line > mark.line - 1:
                mark = _with_lines(mark, value, lines, end.line)  # spans lines
        self._attach(value, mark)

    def _attach(self, value: Any, mark: Mark) -> Path | None:
        """Place a value in the open collection; return its path (None when dropped)."""
        if not self.stack:
            self.data = value
            self.marks[()] = mark
            return ()
        top = self.stack[-1]
        if top.is_map:
            key = top.key
            if key is _NO_KEY:
                self._complex_key(top, value, mark)
                return None
            top.key = _NO_KEY
            if key is _DROP:
                return None
            top.container[key] = value
        else:
            key = len(top.container)
            top.container.append(value)
        if top.path is None:
            return None
        path = (*top.path, key)
        self.marks[path] = mark
        return path

    def _complex_key(self, top: _Frame, value: Any, mark: Mark) -> None:
        top.key = _DROP
        if top.path is not None:
            kind = "mapping" if isinstance(value, dict) else "sequence"
            message = f"a {kind} cannot be used as a key; this entry is ignored"
            self._problem(mark, "yaml-key-type", message)

    def _key(self, top: _Frame, event: events.ScalarEvent) -> None:
        text = event.value
        if top.path is None:
            top.key = text
            return
        mark = _mark(event, event.style or None)
        key = self._value(event, key=True)
        if type(key) is not str:
            self._problem(mark, "yaml-key-type", _key_type_message(text, key))
            key = text
        path = (*top.path, key)
        first = self.key_marks.get(path)
        if first is not None:
            message = f"duplicate key '{key}' (first defined at line {first.line})"
            self._problem(mark, "yaml-duplicate-key", message)
            if isinstance(old := top.container[key], dict | list):
                self._forget(path, old)
        self.key_marks[path] = mark
        top.key = key

    def _forget(self, path: Path, value: Any) -> None:
        # The later value wins: positions inside the earlier one must not linger. Walking
        # the old value (not scanning the tables) keeps a file of duplicates linear.
        pending = [(path, value)]
        while pending:
            path, value = pending.pop()
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                self.marks.pop((*path, key), None)
                self.key_marks.pop((*path, key), None)
                if isinstance(child, dict | list):
                    pending.append(((*path, key), child))

    def _value(self, event: events.ScalarEvent, key: bool = False) -> Any:
        tag, value = event.tag, event.value
        # every YAML 1.1 boolean word has 1 to 3 characters: most values skip the lookup
        if tag is None and len(value) < 4 and event.implicit[0] and value in TRUTHY_11:
            if key and value not in TRUTHY_KEYS:
                return value
            self.problems.append(truthy_warning(self.file, _mark(event), value))
            return value
        if tag is None:
            tag = _implicit_tag(value) if event.implicit[0] else _STR
        if tag == _STR or tag == "!":  # "!" is the non-specific tag: a string
            return value
        if len(value) > MAX_NUMBER_CHARS and tag in (_INT, _FLOAT):
            limit = f"{len(value)} characters; the limit is {MAX_NUMBER_CHARS}"
            raise self._fatal(event, "yaml-too-large", f"number is too long ({limit})")
        try:
            return _construct(tag, value)
        except (ArithmeticError, LookupError, ValueError) as exc:
            if event.tag is None:  # e.g. a sexagesimal float (1:30:00.5) that overflows
                message = f"'{_clip(value)}' looks like a number but cannot be read as one"
                raise self._fatal(event, "yaml-syntax", message + "; quote it") from exc
            message = f"'{_clip(value)}' is not a valid {_short(tag)}"
            raise self._fatal(event, "yaml-tag", message) from exc


def _implicit_tag(value: str) -> str:
    for tag, pattern in _IMPLICIT.get(value[:1], ()):
        if pattern.match(value):
            return tag
    return _STR


def _construct(tag: str, value: str) -> Any:
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return BOOLEANS[value]  # YAML 1.2: !!bool yes is no boolean (a KeyError)
    if tag == _INT:
        if value.isdigit() and value.isascii() and value[0] != "0":
            return int(value)
        return _CONSTRUCTOR.construct_yaml_int(ScalarNode(tag, value))
    return _CONSTRUCTOR.construct_yaml_float(ScalarNode(tag, value))


def _clip(text: str, size: int = 40) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def _alias_message(found: str, name: str | None) -> str:
    return (
        f"anchors and aliases are not supported in flowrunner files "
        f"(found {found}{name}); write the value out"
    )


def _diagnostic(file: str, line: int, column: int, rule: str, message: str) -> Diagnostic:
    one_line = " ".join(message.split())
    return Diagnostic(file=file, line=line, column=column, rule=rule, message=one_line)


def _refuse(file: str, line: int, column: int, rule: str, message: str) -> LoadError:
    return LoadError(_diagnostic(file, line, column, rule, message))


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of ``text[index]``, counting YAML's line breaks."""
    starts = [found.end() for found in _BREAKS.finditer(text, 0, index)]
    return len(starts) + 1, index - (starts[-1] if starts else 0) + 1


def _index(text: str, line: int, column: int) -> int:
    """The index in ``text`` of a 1-based line and column (the inverse of _position)."""
    start = 0
    for _, found in zip(range(line - 1), _BREAKS.finditer(text), strict=False):
        start = found.end()
    return start + column - 1


def _parse(text: str, file: str) -> Document:
    try:
        return _Builder(file, text).build(_new_parser(text))
    except yaml.reader.ReaderError as exc:
        found = _NON_PRINTABLE.search(text)
        if found is None:
            raise _refuse(file, 1, 1, "yaml-encoding", str(exc)) from exc
        line, column = _position(text, found.start())
        message = f"control character U+{ord(found.group()):04X} is not allowed in YAML"
        raise _refuse(file, line, column, "yaml-encoding", message) from exc
    except yaml.MarkedYAMLError as exc:
        diagnostic = _syntax_diagnostic(file, exc)
        if exc.problem == "exceeded maximum nesting depth":
            # libyaml scans ahead and can hit its own limit (1000) before the builder
            # sees level 65: re-read the text before that point to find the culprit.
            _parse(text[: _index(text, diagnostic.line, diagnostic.column)], file)
        raise LoadError(diagnostic) from exc
    except yaml.YAMLError as exc:
        raise _refuse(file, 1, 1, "yaml-syntax", str(exc)) from exc


def _syntax_diagnostic(file: str, exc: yaml.MarkedYAMLError) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    message = exc.problem or "invalid YAML"
    if exc.context:
        where = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
        message = f"{message} ({exc.context}{where})"
    return _diagnostic(file, line, column, "yaml-syntax", message)


def _wide_encoding(raw: bytes) -> str | None:
    """The UTF-16/32 encoding that the first bytes betray (as YAML detects it), if any."""
    head = raw[:4]
    if head in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00") or (
        len(head) == 4 and b"\x00\x00\x00" in (head[:3], head[1:])
    ):
        return "UTF-32"
    if head.startswith((b"\xfe\xff", b"\xff\xfe")) or b"\x00" in head[:2]:
        return "UTF-16"
    return None


def _decode(raw: bytes, file: str) -> str:
    wide = _wide_encoding(raw)
    if wide is not None:
        message = f"file is encoded as {wide}; flowrunner files must be UTF-8"
        raise _refuse(file, 1, 1, "yaml-encoding", message)
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = raw[: exc.start].decode("utf-8")
        line, column = _position(prefix, len(prefix))
        message = f"invalid UTF-8: byte 0x{raw[exc.start]:02X} ({exc.reason})"
        raise _refuse(file, line, column, "yaml-encoding", message) from exc


def _too_large(file: str, size: int | None) -> LoadError:
    got = f"{size} bytes" if size is not None else f"more than {MAX_BYTES} bytes"
    message = f"file is {got}; the limit is {MAX_BYTES} bytes (1 MiB)"
    return _refuse(file, 1, 1, "yaml-too-large", message)


def _unreadable(file: str, exc: OSError) -> LoadError:
    message = f"cannot read file: {exc.strerror or exc}"
    return _refuse(file, 1, 1, "file-unreadable", message)


def _read_limited(stream: BinaryIO) -> bytes:
    """At most MAX_BYTES + 1 bytes: enough to tell that a stream is too large."""
    chunks, wanted = [], MAX_BYTES + 1
    while wanted > 0 and (chunk := stream.read(wanted)):
        chunks.append(chunk)
        wanted -= len(chunk)
    return b"".join(chunks)
