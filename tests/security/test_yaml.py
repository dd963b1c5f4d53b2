"""Hostile YAML through ``flowrunner validate``: each file gives exactly one clean
diagnostic line (then the summary) and exit code 1, fast, without a traceback."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from flowrunner.cli.main import main

from .helpers import cli, write_project

STEPS = "steps:\n  - id: a\n    operation: assign\n    set: {x: 1}\n"


def flow(keys: str = "") -> str:
    return "flow: f\n" + (f"keys:\n{keys}" if keys else "") + STEPS


def billion_laughs() -> bytes:
    lol = ", ".join(['"lol"'] * 9)
    lines = ["flow: f", "keys:", f"  a: &a [{lol}]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  {name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return ("\n".join(lines) + "\n" + STEPS).encode()


ALLOWED = "!!str, !!int, !!float, !!bool, !!null, !!map, !!seq"
ALIAS = "anchors and aliases are not supported in flowrunner files (found {}); write the value out"

# name -> (file bytes, the one diagnostic after "flows/x.yaml:")
CASES: dict[str, tuple[bytes, str]] = {
    "alias": (
        flow("  a: &x 1\n  b: *x\n").encode(),
        f"3:6: error: {ALIAS.format('anchor &x')} [yaml-alias]",
    ),
    "billion-laughs": (billion_laughs(), f"3:6: error: {ALIAS.format('anchor &a')} [yaml-alias]"),
    "merge-key-alias": (
        b"flow: f\nkeys:\n  b:\n    <<: *base\n" + STEPS.encode(),
        f"4:9: error: {ALIAS.format('alias *base')} [yaml-alias]",
    ),
    "python-tag": (
        flow('  x: !!python/object/apply:os.system ["touch /tmp/pwned"]\n').encode(),
        f"3:6: error: unsupported tag !!python/object/apply:os.system; flowrunner files allow "
        f"only {ALLOWED} [yaml-tag]",
    ),
    "local-tag": (
        flow("  x: !shell ls\n").encode(),
        f"3:6: error: unsupported tag !shell; flowrunner files allow only {ALLOWED} [yaml-tag]",
    ),
    "binary-tag": (
        flow("  x: !!binary aGVsbG8=\n").encode(),
        f"3:6: error: unsupported tag !!binary; flowrunner files allow only {ALLOWED} [yaml-tag]",
    ),
    "set-tag": (
        flow("  x: !!set {a: null}\n").encode(),
        f"3:6: error: unsupported tag !!set; flowrunner files allow only {ALLOWED} [yaml-tag]",
    ),
    "duplicate-key": (
        flow("  x: 1\n  x: 2\n").encode(),
        "4:3: error: duplicate key 'x' (first defined at line 3) [yaml-duplicate-key]",
    ),
    "key-type": (
        flow("  x: {1: one}\n").encode(),
        "3:7: error: key '1' is read by YAML as the integer 1; quote it (\"1\") [yaml-key-type]",
    ),
    "multiple-documents": (
        (flow() + "---\n" + flow()).encode(),
        "6:1: error: a file may hold only one YAML document; a second one starts here "
        "[yaml-multiple-documents]",
    ),
    "too-deep": (
        flow("  x: " + "[" * 70 + "]" * 70 + "\n").encode(),
        "3:68: error: nesting is deeper than 64 levels [yaml-too-deep]",
    ),
    "too-deep-10000": (
        flow("  x: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n").encode(),
        "3:254: error: nesting is deeper than 64 levels [yaml-too-deep]",
    ),
    "too-large": (
        flow().encode() + b"#" + b"x" * (1 << 20) + b"\n",
        "1:1: error: file is 1048641 bytes; the limit is 1048576 bytes (1 MiB) [yaml-too-large]",
    ),
    "long-number": (
        flow("  x: " + "9" * 5000 + "\n").encode(),
        "3:6: error: number is too long (5000 characters; the limit is 4300) [yaml-too-large]",
    ),
    "sexagesimal": (
        flow("  x: " + ":".join(["59"] * 400) + ".5\n").encode(),
        "3:6: error: '59:59:59:59:59:59:59:59:59:59:59:59:59:…' looks like a number but cannot "
        "be read as one; quote it [yaml-syntax]",
    ),
    "invalid-utf8": (
        flow("  x: a\xff\n").encode().replace(b"a\xc3\xbf", b"a\xff"),
        "3:7: error: invalid UTF-8: byte 0xFF (invalid start byte) [yaml-encoding]",
    ),
    "utf16": (
        "\ufeff".encode("utf-16-le") + flow().encode("utf-16-le"),
        "1:1: error: file is encoded as UTF-16; flowrunner files must be UTF-8 [yaml-encoding]",
    ),
    "control-character": (
        flow("  x: a\x07b\n").encode(),
        "3:7: error: control character U+0007 is not allowed in YAML [yaml-encoding]",
    ),
    "nul-byte": (
        flow("  x: a\x00b\n").encode(),
        "3:7: error: control character U+0000 is not allowed in YAML [yaml-encoding]",
    ),
    "tab-indentation": (
        flow("\tx: 1\n").encode(),
        "3:1: error: found character that cannot start any token (while scanning for the next "
        "token at line 3) [yaml-syntax]",
    ),
    "unclosed-quote": (
        flow('  x: "abc\n').encode(),
        "8:1: error: found unexpected end of stream (while scanning a quoted scalar at line 3) "
        "[yaml-syntax]",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_yaml_gives_one_clean_line(tmp_path, monkeypatch, name):
    data, diagnostic = CASES[name]
    project = write_project(tmp_path, {})
    (project.root / "flows").mkdir()
    (project.root / "flows" / "x.yaml").write_bytes(data)
    monkeypatch.chdir(project.root)
    started = time.monotonic()
    result = cli(project.root, "validate", "flows/x.yaml")
    assert time.monotonic() - started < 10
    assert (result.exit_code, result.stderr) == (1, "")
    assert result.stdout.splitlines() == [f"flows/x.yaml:{diagnostic}", "1 error(s), 0 warning(s)"]


def test_hostile_yaml_on_stdin(tmp_path):
    project = write_project(tmp_path, {})
    result = CliRunner().invoke(
        main, ["--project", str(project.root), "validate", "-"], input=billion_laughs()
    )
    assert (result.exit_code, result.stderr) == (1, "")
    assert result.stdout.splitlines() == [
        f"<stdin>:3:6: error: {ALIAS.format('anchor &a')} [yaml-alias]",
        "1 error(s), 0 warning(s)",
    ]
