from __future__ import annotations

import io
import math
import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowrunner.document import Document
from flowrunner.errors import LoadError, Mark
from flowrunner.source import loader
from flowrunner.source.loader import MAX_BYTES, load_bytes, load_path, load_stream, load_text

FLOW = textwrap.dedent(
    """\
    flow: order-status
    description: Tell callers where their latest order is.
    on_complete: true
    keys:
      attempts: 0
      order_status: null
    steps:
      - id: count-call
        operation: assign
        set:
          attempts: "{{ $flow.key.attempts + 1 }}"
      - id: lookup
        webhook: crm
        parameters: [call, flow.key]
        on_failure: sorry
      - id: shipped
        when: '{{ $flow.key.order_status == ''shipped'' }}'
        set:
          x: |
            Order {{ $flow.key.order_id }}
            has shipped.
          y: >
            folded
            text
          z: 2026-11-28
        next: end
    """
)


@pytest.fixture(params=["libyaml", "pure-python"])
def backend(request, monkeypatch):
    """Run a test with libyaml's parser and with the pure-Python fallback."""
    if request.param == "pure-python":
        monkeypatch.setattr(loader, "_CParser", None)
    return request.param


def refusal(source: str | bytes) -> str:
    """The one-line diagnostic of a fatal refusal."""
    raw = source.encode() if isinstance(source, str) else source
    with pytest.raises(LoadError) as info:
        load_bytes(raw, "f.yaml")
    return info.value.diagnostic.format()


def problems(source: str) -> list[str]:
    return [p.format() for p in load_text(source, "f.yaml").problems]


# --- data, marks and styles -------------------------------------------------------------


def test_data_matches_safe_load_and_timestamps_stay_strings(backend):
    doc = load_text(FLOW, "flows/a.yaml")
    expected = yaml.load(FLOW, Loader=yaml.CSafeLoader)
    expected["steps"][2]["set"]["z"] = "2026-11-28"
    assert doc.data == expected
    assert doc.file == "flows/a.yaml"
    assert doc.problems == []  # the key 'y' is a name, not a YAML 1.1 boolean word


def test_marks_of_nested_values_and_keys(backend):
    doc = load_text(FLOW, "f.yaml")
    assert doc.marks[()] == Mark(1, 1)
    assert doc.marks[("steps",)] == Mark(8, 3)
    assert doc.marks[("steps", 1)] == Mark(12, 5)
    assert doc.marks[("steps", 1, "parameters", 1)] == Mark(14, 24)
    assert doc.marks[("steps", 2, "set", "x")] == Mark(19, 10, "|")
    assert doc.key_marks[("steps", 2, "set", "x")] == Mark(19, 7)
    assert doc.key_marks[("steps", 2, "next")] == Mark(26, 5)
    assert doc.marks[("keys", "order_status")] == Mark(6, 17)
    assert ("steps", 0) not in doc.key_marks


def test_styles_are_recorded_for_strings_only(backend):
    doc = load_text(FLOW, "f.yaml")
    assert doc.marks[("flow",)].style is None
    assert doc.marks[("steps", 0, "set", "attempts")].style == '"'
    assert doc.marks[("steps", 2, "when")].style == "'"
    assert doc.marks[("steps", 2, "set", "y")].style == ">"
    assert doc.marks[("keys", "attempts")] == Mark(5, 13, None)
    typed = load_text('a: !!int "5"\nb: "5"\n', "f.yaml")
    assert typed.data == {"a": 5, "b": "5"}
    assert typed.marks[("a",)].style is None
    assert typed.marks[("b",)].style == '"'


def test_mark_falls_back_to_nearest_ancestor_then_start():
    doc = load_text("a:\n  b: [1, 2]\n", "f.yaml")
    assert doc.mark(("a", "b", 7, "nope")) == Mark(2, 6)
    assert doc.key_mark(("a", "b", 0)) == Mark(2, 7)
    assert doc.key_mark(("a", "b")) == Mark(2, 3)
    empty = load_bytes(b"", "f.yaml")
    assert empty.mark(("x",)) == Mark(1, 1)
    assert empty.key_mark(()) == Mark(1, 1)


def test_scalar_types_booleans_as_yaml_1_2_numbers_as_yaml_1_1(backend):
    source = (
        "a: [yes, No, on, OFF, true, False, TRUE, y]\nb: [~, null, '']\n"
        "c: [0x1F, 010, 1_000, -7, 1:30]\n"
        "d: [.inf, -.Inf, 1.5e+3, 1:30.5, 1.5e3]\ne: [2026-11-28, 2026-11-28 10:00:00, =, <<]\n"
        "f: [!!str 12, !!float '1', !!bool true, !!null x, ! 12, !!int '0o7']\n"
        "g: !!map {k: !!seq [1]}\nh:\n"
    )
    data = load_text(source, "f.yaml").data
    assert data["a"] == ["yes", "No", "on", "OFF", True, False, True, "y"]
    assert data["b"] == [None, None, ""]
    assert data["c"] == [31, 8, 1000, -7, 90]
    assert data["d"][0] == math.inf and data["d"][1] == -math.inf
    assert data["d"][2:] == [1500.0, 90.5, "1.5e3"]  # YAML 1.1 wants a signed exponent
    assert data["e"] == ["2026-11-28", "2026-11-28 10:00:00", "=", "<<"]
    assert data["f"] == ["12", 1.0, True, None, "12", 7]
    assert data["g"] == {"k": [1]}
    assert data["h"] is None
    assert math.isnan(load_text("x: .nan", "f.yaml").data["x"])


def test_empty_and_comment_only_files_are_null():
    for raw in (b"", b"# only a comment\n", b"\n\n", b"\xef\xbb\xbf"):
        doc = load_bytes(raw, "f.yaml")
        assert doc.data is None
        assert doc.marks == {} and doc.problems == []
    explicit = load_bytes(b"---\n", "f.yaml")
    assert explicit.data is None and list(explicit.marks) == [()]


def test_bom_is_accepted():
    doc = load_bytes(b"\xef\xbb\xbfa: 1\nb: x\n", "f.yaml")
    assert doc.data == {"a": 1, "b": "x"}
    assert doc.marks[("b",)] == Mark(2, 4)
    assert load_text("\ufeffa: 1", "f.yaml").data == {"a": 1}


# --- fatal refusals -----------------------------------------------------------------------

SYNTAX = "[yaml-syntax]"
ALIAS = "anchors and aliases are not supported in flowrunner files"
ONLY = "flowrunner files allow only !!str, !!int, !!float, !!bool, !!null, !!map, !!seq"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "a: 1\n b: 2\n",
            f"f.yaml:2:3: error: mapping values are not allowed in this context {SYNTAX}",
        ),
        (
            'a: "abc\n',
            "f.yaml:2:1: error: found unexpected end of stream "
            f"(while scanning a quoted scalar at line 1) {SYNTAX}",
        ),
        (
            "a: [1, 2\nb: 3\n",
            "f.yaml:2:2: error: did not find expected ',' or ']' "
            f"(while parsing a flow sequence at line 1) {SYNTAX}",
        ),
        (
            "a: 1:2:" + "1:" * 200 + "1.5\n",
            "f.yaml:1:4: error: '1:2:1:1:1:1:1:1:1:1:1:1:1:1:1:1:1:1:1:1…' looks like a number "
            f"but cannot be read as one; quote it {SYNTAX}",
        ),
    ],
)
@pytest.mark.skipif(loader._CParser is None, reason="messages are libyaml's")
def test_yaml_syntax(source, expected):
    assert refusal(source) == expected


@pytest.mark.parametrize("source", ["a: 1\n b: 2\n", "a: [1\n", "a: 'x", "%YAML 2.0\n---\n1"])
def test_yaml_syntax_with_either_parser(source, backend):
    with pytest.raises(LoadError) as info:
        load_text(source, "f.yaml")
    assert info.value.diagnostic.rule == "yaml-syntax"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a: &x 1\n", f"f.yaml:1:4: error: {ALIAS} (found anchor &x); write the value out"),
        ("a: 1\nb: *x\n", f"f.yaml:2:4: error: {ALIAS} (found alias *x); write the value out"),
        (
            "base: &b {t: 1}\nstep:\n  <<: *b\n",
            f"f.yaml:1:7: error: {ALIAS} (found anchor &b); write the value out",
        ),
        ("- &s [1]\n", f"f.yaml:1:3: error: {ALIAS} (found anchor &s); write the value out"),
    ],
)
def test_yaml_alias(source, expected, backend):
    assert refusal(source) == expected + " [yaml-alias]"


def test_alias_bomb_is_refused_at_the_first_anchor():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for name, prev in zip("bcdefghi", "abcdefgh", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    message = refusal("\n".join(lines) + "\n")
    assert (
        message == f"f.yaml:1:4: error: {ALIAS} (found anchor &a); write the value out [yaml-alias]"
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            'x: !!python/object/apply:os.system ["echo hi"]\n',
            "1:4: error: unsupported tag !!python/object/apply:os.system; " + ONLY,
        ),
        ("x: !foo 1\n", "1:4: error: unsupported tag !foo; " + ONLY),
        ("x:\n  - !!binary aGk=\n", "2:5: error: unsupported tag !!binary; " + ONLY),
        ("x: !!set {a, b}\n", "1:4: error: unsupported tag !!set; " + ONLY),
        ("x: !!omap [a: 1]\n", "1:4: error: unsupported tag !!omap; " + ONLY),
        ("x: !!timestamp 2026-11-28\n", "1:4: error: unsupported tag !!timestamp; " + ONLY),
        (
            "!<tag:example.com,2000:x> 1\n",
            "1:1: error: unsupported tag tag:example.com,2000:x; " + ONLY,
        ),
        ("x: !!int {a: 1}\n", "1:4: error: tag !!int cannot be used on a mapping"),
        ("x: !!map [1]\n", "1:4: error: tag !!map cannot be used on a sequence"),
        ("x: !!seq abc\n", "1:4: error: tag !!seq cannot be used on a scalar"),
        ("x: !!int abc\n", "1:4: error: 'abc' is not a valid !!int"),
        ("x: !!bool maybe\n", "1:4: error: 'maybe' is not a valid !!bool"),
        ("x: !!float ''\n", "1:4: error: '' is not a valid !!float"),
    ],
)
def test_yaml_tag(source, expected, backend):
    assert refusal(source) == f"f.yaml:{expected} [yaml-tag]"


@pytest.mark.parametrize(
    ("source", "position"),
    [("a: 1\n---\nb: 2\n", "2:1"), ("---\na: 1\n...\n---\nb: 2\n", "4:1"), ("a: 1\n---\n", "2:1")],
)
def test_yaml_multiple_documents(source, position, backend):
    assert refusal(source) == (
        f"f.yaml:{position}: error: a file may hold only one YAML document; "
        "a second one starts here [yaml-multiple-documents]"
    )


DEEP = "nesting is deeper than 64 levels [yaml-too-deep]"


@pytest.mark.parametrize(
    ("source", "position"),
    [
        ("[" * 10_000 + "]" * 10_000, "1:65"),
        ("{a: " * 10_000 + "}" * 10_000, "1:257"),
        ("a:\n  b: " + "[" * 3000, "2:68"),
        ("- " * 100 + "x\n", "1:129"),
        ("[" * 65 + "]" * 65, "1:65"),
    ],
)
def test_yaml_too_deep(source, position, backend):
    assert refusal(source) == f"f.yaml:{position}: error: {DEEP}"


def test_sixty_four_levels_are_fine():
    doc = load_text("[" * 64 + "]" * 64, "f.yaml")
    assert doc.marks[(0,) * 63] == Mark(1, 64)


def test_yaml_too_large_bytes_and_text():
    big = b"a: " + b"x" * MAX_BYTES
    limit = f"the limit is {MAX_BYTES} bytes (1 MiB) [yaml-too-large]"
    assert refusal(big) == f"f.yaml:1:1: error: file is {len(big)} bytes; {limit}"
    with pytest.raises(LoadError, match=f"file is more than {MAX_BYTES} bytes"):
        load_text(big.decode(), "f.yaml")
    with pytest.raises(LoadError, match="file is 1048578 bytes"):
        load_text("é" * (MAX_BYTES // 2 + 1), "f.yaml")
    assert load_bytes(b"a: " + b"x" * (MAX_BYTES - 3), "f.yaml").data["a"].startswith("x")


def test_yaml_too_large_path_is_refused_from_stat(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: " + b"x" * (5 * MAX_BYTES))
    with pytest.raises(LoadError) as info:
        load_path(path, "flows/big.yaml")
    assert info.value.diagnostic.format() == (
        "flows/big.yaml:1:1: error: file is 5242883 bytes; "
        "the limit is 1048576 bytes (1 MiB) [yaml-too-large]"
    )


class EndlessStream(io.RawIOBase):
    """A stream that never ends; counts what was read from it."""

    def __init__(self) -> None:
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = min(len(buffer), 64 * 1024)  # short reads, like a pipe
        buffer[:size] = b"x" * size
        self.given += size
        return size


def test_yaml_too_large_stream_reads_only_past_the_limit():
    stream = EndlessStream()
    with pytest.raises(LoadError) as info:
        load_stream(stream)
    assert info.value.diagnostic.format() == (
        f"<stdin>:1:1: error: file is more than {MAX_BYTES} bytes; "
        f"the limit is {MAX_BYTES} bytes (1 MiB) [yaml-too-large]"
    )
    assert stream.given <= MAX_BYTES + 64 * 1024
    with pytest.raises(LoadError, match="yaml-too-large"):
        load_stream(io.BytesIO(b"x" * (5 * MAX_BYTES)), "in.yaml")


def test_number_too_long():
    assert refusal("a: " + "1" * 5000) == (
        "f.yaml:1:4: error: number is too long (5000 characters; the limit is 4300) "
        "[yaml-too-large]"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a: 1\nb: ab\xffcd\n", "2:6: error: invalid UTF-8: byte 0xFF (invalid start byte)"),
        (
            "a: é\nbé: x\xe9y".encode("latin-1"),
            "1:4: error: invalid UTF-8: byte 0xE9 (invalid continuation byte)",
        ),
        (b"\xef\xbb\xbfk: \xc3", "1:4: error: invalid UTF-8: byte 0xC3 (unexpected end of data)"),
        (
            "a: 1\n".encode("utf-16"),
            "1:1: error: file is encoded as UTF-16; flowrunner files must be UTF-8",
        ),
        (
            "a: 1\n".encode("utf-16-le"),
            "1:1: error: file is encoded as UTF-16; flowrunner files must be UTF-8",
        ),
        (
            "a: 1\n".encode("utf-16-be"),
            "1:1: error: file is encoded as UTF-16; flowrunner files must be UTF-8",
        ),
        (
            "a: 1\n".encode("utf-32"),
            "1:1: error: file is encoded as UTF-32; flowrunner files must be UTF-8",
        ),
        (
            "a: 1\n".encode("utf-32-be"),
            "1:1: error: file is encoded as UTF-32; flowrunner files must be UTF-8",
        ),
        (b"a: b\nc: d\x07e\n", "2:5: error: control character U+0007 is not allowed in YAML"),
        (b"a: b\r\nc: \x00", "2:4: error: control character U+0000 is not allowed in YAML"),
    ],
)
def test_yaml_encoding(raw, expected, backend):
    assert refusal(raw) == f"f.yaml:{expected} [yaml-encoding]"


def test_yaml_encoding_of_text_with_a_lone_surrogate():
    with pytest.raises(LoadError) as info:
        load_text("a: 1\nb: x\ud800\n", "f.yaml")
    assert info.value.diagnostic.format() == (
        "f.yaml:2:5: error: character U+D800 cannot be encoded as UTF-8 [yaml-encoding]"
    )


def test_file_unreadable(tmp_path):
    with pytest.raises(LoadError) as info:
        load_path(tmp_path / "missing.yaml", "flows/missing.yaml")
    assert info.value.diagnostic.format() == (
        "flows/missing.yaml:1:1: error: cannot read file: No such file or directory "
        "[file-unreadable]"
    )
    with pytest.raises(LoadError, match=r"cannot read file: Is a directory \[file-unreadable\]"):
        load_path(tmp_path)


def test_load_path_and_stream_read_good_files(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_bytes(FLOW.encode())
    assert load_path(path).file == str(path)
    assert load_path(path, "flows/a.yaml").marks[("steps", 2, "set", "x")] == Mark(19, 10, "|")
    assert load_stream(io.BytesIO(FLOW.encode())).data == load_text(FLOW, "x").data
    assert load_stream(io.BytesIO(b"a: 1")).file == "<stdin>"


# --- collected problems -------------------------------------------------------------------


def test_duplicate_key_reports_the_second_and_keeps_the_later_value(backend):
    source = "flow: a\nsteps:\n  - id: x\n    set: {a: 1}\n  - id: y\nsteps:\n  - id: z\n"
    doc = load_text(source, "f.yaml")
    assert [p.format() for p in doc.problems if p.rule != "yaml-truthy"] == [
        "f.yaml:6:1: error: duplicate key 'steps' (first defined at line 2) [yaml-duplicate-key]"
    ]
    assert doc.data == {"flow": "a", "steps": [{"id": "z"}]}
    assert doc.key_marks[("steps",)] == Mark(6, 1)
    assert doc.marks[("steps", 0, "id")] == Mark(7, 9)
    assert ("steps", 1) not in doc.marks
    assert ("steps", 0, "set", "a") not in doc.marks
    assert ("steps", 0, "set") not in doc.key_marks


def test_duplicate_keys_in_nested_and_flow_mappings():
    assert problems("a:\n  b: 1\n  c: 2\n  b: 3\nd: {x: 1, x: 2}\n") == [
        "f.yaml:4:3: error: duplicate key 'b' (first defined at line 2) [yaml-duplicate-key]",
        "f.yaml:5:11: error: duplicate key 'x' (first defined at line 5) [yaml-duplicate-key]",
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1: x\n", "1:1: error: key '1' is read by YAML as the integer 1; quote it (\"1\")"),
        (
            "0x10: x\n",
            "1:1: error: key '0x10' is read by YAML as the integer 16; quote it (\"0x10\")",
        ),
        ("1.5: x\n", "1:1: error: key '1.5' is read by YAML as the float 1.5; quote it (\"1.5\")"),
        ("~: x\n", "1:1: error: key '~' is read by YAML as null; quote it (\"~\")"),
        ("!!int 7: x\n", "1:1: error: key '7' is read by YAML as the integer 7; quote it (\"7\")"),
        ("?\n: x\n", "1:2: error: an empty key is read by YAML as null; write a key name"),
        (
            "? [a, b]\n: x\n",
            "1:3: error: a sequence cannot be used as a key; this entry is ignored",
        ),
        ("{{a: 1}: x}\n", "1:2: error: a mapping cannot be used as a key; this entry is ignored"),
    ],
)
def test_yaml_key_type(source, expected, backend):
    assert problems(source) == [f"f.yaml:{expected} [yaml-key-type]"]


@pytest.mark.parametrize(
    ("source", "word", "line_col", "data"),
    [
        ("on: push\n", "on", "1:1", {"on": "push"}),
        ("a:\n  No: 1\n", "No", "2:3", {"a": {"No": 1}}),
        ("country: NO\n", "NO", "1:10", {"country": "NO"}),
        ("a: [y, 1]\n", "y", "1:5", {"a": ["y", 1]}),
        ("a: [1, off]\n", "off", "1:8", {"a": [1, "off"]}),
    ],
)
def test_yaml_truthy_words_are_strings_with_a_warning(source, word, line_col, data, backend):
    doc = load_text(source, "f.yaml")
    assert doc.data == data
    assert [p.format() for p in doc.problems] == [
        f"f.yaml:{line_col}: warning: '{word}' is the string \"{word}\" here (only true/false "
        f'are booleans), but YAML 1.1 tools read it as a boolean; quote it ("{word}") '
        "[yaml-truthy]"
    ]
    quoted = load_text(source.replace(f"{word}", f'"{word}"', 1), "f.yaml")
    assert (quoted.data, quoted.problems) == (data, [])


def test_yaml_1_1_boolean_tag_values_are_refused():
    assert refusal("a: !!bool yes\n") == (
        "f.yaml:1:4: error: 'yes' is not a valid !!bool [yaml-tag]"
    )


def test_non_string_keys_keep_their_source_text_and_complex_keys_are_dropped(backend):
    source = "on: 1\nyes: 2\n1: 3\n? [a, {b: c}]\n: {d: [e]}\nok: 4\n'on': 5\n"
    doc = load_text(source, "f.yaml")
    assert doc.data == {"on": 5, "yes": 2, "1": 3, "ok": 4}
    assert doc.key_marks[("1",)] == Mark(3, 1)
    assert doc.key_marks[("on",)] == Mark(7, 1, "'")
    assert doc.marks[("ok",)] == Mark(6, 5)
    assert not any("d" in path or "b" in path for path in doc.marks)
    rules = ["yaml-truthy"] * 2 + ["yaml-key-type"] * 2 + ["yaml-duplicate-key"]
    assert [p.rule for p in doc.problems] == rules


# --- hostile input: only LoadError may come out -------------------------------------------

HOSTILE = [
    b'a: &a ["lol","lol"]\nb: &b [*a,*a]\nc: &c [*b,*b]\n',
    b"[" * 10_000 + b"]" * 10_000,
    b"{a: " * 10_000 + b"}" * 10_000,
    b'!!python/object/apply:os.system ["echo hi"]\n',
    b"a: !!python/object/new:os.system [echo hi]\n",
    b"a: 1\nb: x\xff\xfey\n",
    b"a: 1\n---\nb: 2\n",
    b"\x00\x00\x00",
    b"%YAML 2.0\n---\na: 1\n",
    b"a: " + b"1:" * 100_000 + b"1.5",
]


@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_raises_load_error(raw, backend):
    with pytest.raises(LoadError):
        load_bytes(raw, "f.yaml")


def test_hostile_huge_file_via_path_and_stream(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"- x\n" * (5 * MAX_BYTES // 4))
    with pytest.raises(LoadError, match="yaml-too-large"):
        load_path(path)
    with path.open("rb") as stream, pytest.raises(LoadError, match="yaml-too-large"):
        load_stream(stream, str(path))


YAMLISH = st.text(alphabet="[]{}:,-?!&*|>'\"#%@`~ \n\t\r.ab01yn\u00e9\x00\ufeff", max_size=80)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.binary(max_size=200) | YAMLISH.map(str.encode))
def test_any_bytes_give_a_document_or_a_load_error(raw):
    try:
        assert isinstance(load_bytes(raw, "f.yaml"), Document)
    except LoadError as exc:
        assert "\n" not in exc.diagnostic.message
        assert exc.diagnostic.line >= 1 and exc.diagnostic.column >= 1


@SETTINGS
@given(st.text(max_size=120) | YAMLISH)
def test_any_text_gives_a_document_or_a_load_error_with_both_parsers(text):
    for pure_python in (False, True):
        with pytest.MonkeyPatch.context() as patch:
            if pure_python:
                patch.setattr(loader, "_CParser", None)
            try:
                load_text(text, "f.yaml")
            except LoadError:
                pass


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@SETTINGS
@given(JSONISH)
def test_dumped_data_loads_back_unchanged(data):
    doc = load_text(yaml.safe_dump(data), "f.yaml")
    assert doc.data == data
    # PyYAML quotes every YAML 1.1 boolean word but y and n, which are warned about
    assert all(p.rule == "yaml-truthy" and p.severity == "warning" for p in doc.problems)
