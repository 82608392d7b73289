"""A source file's current text and its AST, read and parsed once per text, for keys.

The key's reads of the user's files do not go through ``linecache``: a text left there would
serve ``inspect.getsource`` in the block from memory, which then opens no file, and the file
recorder would not see a block that keeps its helpers' source (issue 11). An entry that is
already there (put by a traceback, by IPython for its cells, by live mode) is used as is.
"""

from __future__ import annotations

import ast
import io
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

_parsed: dict[tuple[str, int], tuple[str, ast.Module]] = {}
#: path -> (stat stamp, lines): the same list while the file is unchanged (callers cache on it)
_TEXTS: dict[str, tuple[tuple[int, ...], list[str]]] = {}


def current_lines(filename: str, module_globals: dict[str, Any] | None = None) -> list[str]:
    """The lines of ``filename`` as they are now (``linecache``'s when it holds the file,
    else read here without adding to it); empty when unknown."""
    linecache = held_linecache()
    if linecache is not None and filename in linecache.cache:
        linecache.checkcache(filename)  # keeps entries without an mtime: IPython cells, live mode
        if filename in linecache.cache:
            return linecache.getlines(filename, module_globals)
    try:
        st = os.stat(filename)
    except (OSError, ValueError):
        # no such file (a zip import's module, a generated name): what linecache can give
        if not filename or filename[0] == "<":
            return []
        import linecache

        return linecache.getlines(filename, module_globals)
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
    kept = _TEXTS.get(filename)
    if kept is not None and kept[0] == stamp:
        return kept[1]
    try:
        lines = read_source(filename)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError, LookupError):
        return []
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"  # as linecache gives it
    _TEXTS[filename] = (stamp, lines)
    return lines


def held_linecache() -> Any:
    """The ``linecache`` module if anything imported it (else its cache is empty: nothing to
    look up, and the first hit of a process need not import it and ``tokenize``)."""
    return sys.modules.get("linecache")


def read_source(filename: str) -> list[str]:
    """The lines of a source file decoded as Python decodes it (PEP 263, a UTF-8 BOM; newlines
    made ``\\n``), what ``tokenize.open`` gives without importing ``tokenize``: that is done
    only for a file whose first two lines may declare an encoding."""
    with open(filename, "rb") as f:
        data = f.read()
    if b"coding" in b"\n".join(data.split(b"\n", 2)[:2]):
        import tokenize

        with tokenize.open(filename) as text:
            return text.readlines()
    encoding = "utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8"
    return io.TextIOWrapper(io.BytesIO(data), encoding).readlines()  # newline=None, as tokenize.open


def parse_lines(filename: str, lines: list[str]) -> ast.Module:
    """The AST of a source text, parsed once per text (the block finder and the code keys
    share it); raises SyntaxError (or ValueError for a null byte) when it does not parse."""
    text = "".join(lines)
    cache_key = (filename, hash(text))
    cached = _parsed.get(cache_key)
    if cached is not None and cached[0] == text:
        return cached[1]
    tree = ast.parse(text, filename)
    _parsed[cache_key] = (text, tree)
    return tree
