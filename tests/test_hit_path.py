"""The hit path's shortcuts give the answers of the long way (issue 12 item 4): a file's text
read without ``tokenize`` decodes as Python decodes it; the block finder's walk over
statements finds every ``with`` that ``ast.walk`` finds; and a frame in a function is matched
to the file's text by compiling only its top-level statement, which must still tell a text
that is the running code (decorated, nested, methods, under ``if``, future flags, ``;``) from
one edited while it runs. In-process: each case is a file in tmp_path and code compiled from
it, as Python compiles a script."""

from __future__ import annotations

import ast
import sys
import tokenize
import types
from pathlib import Path

import pytest

from statecache.key import source
from statecache.key.code import running_lines
from statecache.key.parsing import read_source

# -- reading a source file -----------------------------------------------------------------------

TEXTS = {
    "plain": "x = 1\ny = 'é'\n".encode(),
    "no-final-newline": b"x = 1\ny = 2",
    "bom": b"\xef\xbb\xbfx = '\xc3\xa9'\n",
    "crlf": b"x = 1\r\ny = 2\r\n",
    "lone-cr": b"x = 1\ry = 2\r",
    "mixed-newlines": b"a = 1\r\nb = 2\rc = 3\n",
    # characters str.splitlines() would split at, which Python's reader keeps inside a line
    "line-like-characters": "s = 'a\x0bb\x0cc\x1cd\x1de\x1ef\x85g\u2028h\u2029i'\n# \x0c feed\n".encode(),
    "latin-1-cookie": b"# -*- coding: latin-1 -*-\ns = '\xe9'\n",
    "cookie-on-second-line": b"#!/usr/bin/env python\n# coding: cp1252\ns = '\x80'\n",
    "cookie-after-code-is-no-cookie": b"x = 1\n# coding: latin-1\ns = '\xc3\xa9'\n",
    "empty": b"",
}


@pytest.mark.parametrize("name", list(TEXTS))
def test_a_source_file_reads_as_tokenize_open_reads_it(tmp_path: Path, name: str) -> None:
    path = tmp_path / "m.py"
    path.write_bytes(TEXTS[name])
    with tokenize.open(path) as f:
        expected = f.readlines()
    assert read_source(str(path)) == expected


@pytest.mark.parametrize("data", [b"s = '\xff'\n", b"# coding: no-such-codec\nx = 1\n"], ids=["not-utf-8", "unknown-codec"])
def test_a_file_python_cannot_decode_is_refused_as_tokenize_refuses_it(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "m.py"
    path.write_bytes(data)
    with pytest.raises((SyntaxError, UnicodeDecodeError)), tokenize.open(path) as f:
        f.readlines()
    with pytest.raises((SyntaxError, UnicodeDecodeError)):
        read_source(str(path))


# -- finding the with statements of a file ---------------------------------------------------------

WITHS = """
import statecache as sc
with sc.checkpoint("top"):
    a = 1
if a:
    with sc.checkpoint("in-if"):
        b = 1
else:
    with sc.checkpoint("in-else"):
        b = 2
try:
    with open("x") as f, sc.checkpoint("second-item"):
        c = 1
except OSError:
    with sc.checkpoint("in-except"):
        c = 2
else:
    pass
finally:
    with sc.checkpoint("in-finally"):
        d = 1
for i in range(2):
    pass
else:
    with sc.checkpoint("in-for-else"):
        e = 1
while False:
    pass
match a:
    case 1:
        with sc.checkpoint("in-case"):
            g = 1
class K:
    def method(self):
        with sc.checkpoint("in-method"):
            with sc.checkpoint("nested"):
                h = 1
async def coroutine():
    async with lock:
        with sc.checkpoint("in-async"):
            k = 1
def twice():
    with sc.checkpoint("top"):
        m = 1
"""


def walked_names(tree: ast.AST) -> dict[str, list[int]]:
    """The rule by ``ast.walk`` over every node, as the block finder had it."""
    found: dict[str, list[int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "checkpoint":
                    found.setdefault(call.args[0].value, []).append(node.lineno)  # type: ignore[attr-defined]
    return {name: sorted(lines) for name, lines in found.items()}


def test_every_checkpoint_name_of_a_file_is_found_wherever_its_with_is() -> None:
    tree = ast.parse(WITHS)
    names = source.checkpoint_names_in(tree)
    assert names == walked_names(tree)
    assert len(names) == 11 and names["top"] == [3, 43]


def test_the_with_holding_a_line_is_the_innermost_one_whose_header_holds_it() -> None:
    tree = ast.parse(WITHS)
    lines = WITHS.splitlines()
    for number, line in enumerate(lines, start=1):
        found = source._innermost_with(tree, number)
        walked = [n for n in ast.walk(tree) if isinstance(n, (ast.With, ast.AsyncWith))
                  and n.lineno <= number <= max(n.lineno, n.body[0].lineno - 1)]
        expected = max(walked, key=lambda n: n.lineno) if walked else None
        assert found is expected, (number, line)
    assert source._innermost_with(tree, lines.index('            with sc.checkpoint("nested"):') + 1) is not None


# -- a frame in a function, matched to the file's text ------------------------------------------------

SHAPES = '''
from __future__ import annotations
import sys
import json as h
PAD = 1

def plain(x: int) -> list:
    return [sys._getframe(), h if x < 0 else x]

def deco(f):
    return f

@deco
@deco
def decorated(x: int):
    return [sys._getframe(), x]

def outer(x):
    def inner(y: int):
        return [sys._getframe(), x + y]
    return inner(1)

class Holder:
    def method(self, x: int):
        return [sys._getframe(), x]

if PAD:
    def under_if(x: int):
        return [sys._getframe(), h.f() if x < 0 else x]

first = lambda: [sys._getframe()]; second = lambda: [sys._getframe(), 2]
'''

CALLS = {
    "plain": lambda ns: ns["plain"](1),
    "decorated": lambda ns: ns["decorated"](1),
    "nested": lambda ns: ns["outer"](1),
    "method": lambda ns: ns["Holder"]().method(1),
    "under-if": lambda ns: ns["under_if"](1),
    "second-lambda-on-a-line": lambda ns: ns["second"](),
}


def loaded(tmp_path: Path, text: str) -> tuple[Path, dict[str, object]]:
    """The file written and run as ``python file.py`` runs it: compiled whole, from its path."""
    path = tmp_path / "shapes.py"
    path.write_text(text)
    namespace: dict[str, object] = {"__name__": "shapes_under_test"}
    exec(compile(text, str(path), "exec"), namespace)
    return path, namespace


@pytest.mark.parametrize("case", list(CALLS))
def test_a_function_frame_in_an_unchanged_file_is_found_at_its_own_line(tmp_path: Path, case: str) -> None:
    path, namespace = loaded(tmp_path, SHAPES)
    frame: types.FrameType = CALLS[case](namespace)[0]
    found = running_lines(frame)
    assert found is not None
    lines, line = found
    assert "".join(lines) == path.read_text() and line == frame.f_lineno


@pytest.mark.parametrize("case", list(CALLS))
def test_a_function_edited_in_place_while_running_is_not_its_text(tmp_path: Path, case: str) -> None:
    path, namespace = loaded(tmp_path, SHAPES)
    frame: types.FrameType = CALLS[case](namespace)[0]
    edited = SHAPES.replace("sys._getframe(), x]", "sys._getframe(), -x]").replace("else x]", "else -x]")
    edited = edited.replace("x + y", "x - y")
    edited = edited.replace("[sys._getframe(), 2]", "[sys._getframe(), 3]")
    assert edited != SHAPES
    path.write_text(edited)
    assert running_lines(frame) is None  # no text known to be what runs: the key keeps its bytecode


def test_an_import_edited_on_its_line_changes_the_code_of_calls_on_it(tmp_path: Path) -> None:
    """On 3.11+ a call on an imported module compiles apart from one on another global: the
    module's imports belong to a function's text, though they are other statements."""
    path, namespace = loaded(tmp_path, SHAPES)
    frame: types.FrameType = namespace["under_if"](1)[0]  # type: ignore[operator]
    path.write_text(SHAPES.replace("import json as h", "h = __import__('json')"))
    found = running_lines(frame)
    if sys.version_info >= (3, 11):  # LOAD_ATTR of h.f, then CALL, against a method load
        assert found is None
    else:
        assert found is not None and found[1] == frame.f_lineno


def test_lines_added_above_a_running_function_move_its_line(tmp_path: Path) -> None:
    path, namespace = loaded(tmp_path, SHAPES)
    frame: types.FrameType = namespace["decorated"](1)[0]  # type: ignore[operator]
    path.write_text(SHAPES.replace("PAD = 1\n", "PAD = 1\n# one\n# two\n"))
    found = running_lines(frame)
    assert found is not None and found[1] == frame.f_lineno + 2
    assert found[0][found[1] - 1].strip() == "return [sys._getframe(), x]"


def test_another_function_edited_in_place_leaves_the_frame_its_text(tmp_path: Path) -> None:
    path, namespace = loaded(tmp_path, SHAPES)
    frame: types.FrameType = CALLS["method"](namespace)[0]
    path.write_text(SHAPES.replace("return [sys._getframe(), x + y]", "return [sys._getframe(), x * y]"))
    found = running_lines(frame)
    assert found is not None and found[1] == frame.f_lineno
