"""Standard input as an input of a block: what the code reads from it opens no file the audit
hook sees, and it is read while the block runs, so it must be known at lookup.

Code that reads standard input (``input()``, ``sys.stdin.read()``, a loop over ``sys.stdin``,
``sys.stdin.buffer``, ``fileinput.input()`` without files, ``open(0)``, ``/dev/stdin``) is
found in its AST (``reads_stdin``) by ``key.process.scan``, for a block and for every helper
of the user's alike. What it will read counts at lookup (``stdin_value``): a regular file
(``python script.py < data.txt``) by its content and the position reached, ``/dev/null`` as
empty, a ``StringIO`` put in place by the code above by its text and position. A pipe or a
terminal cannot be known before it is read: such a key never repeats, and ``unknown_reads``
tells the engine that its computation must not be saved.
"""

from __future__ import annotations

import ast
import io
import os
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")


#: How standard input is named among the inputs and in warnings.
LABEL = "standard input"
_READ_METHODS = frozenset({"read", "readline", "readlines", "buffer", "fileno", "__iter__", "__next__"})
_STDIN_FILES = frozenset({"/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})
_unknown: list[list[str]] = []  # one list per key being computed: the unknowable reads found


def reads_stdin(node: ast.AST) -> bool:
    """Whether this node of code reads standard input: ``input(...)``, ``sys.stdin`` or
    ``sys.__stdin__``, ``stdin.read...()`` or a loop over ``stdin`` (``from sys import
    stdin``; a ``proc.stdin`` of a ``Popen`` is not), ``fileinput.input()`` unless given
    constant file names (it reads ``sys.argv[1:]``, or standard input for none or ``-``), ``open(0)``, ``os.read(0, n)``, and the
    names of the standard input's file (``"/dev/stdin"``)."""
    if isinstance(node, ast.Attribute):
        value = node.value
        if node.attr in ("stdin", "__stdin__") and isinstance(value, ast.Name) and value.id == "sys":
            return True
        return node.attr in _READ_METHODS and isinstance(value, ast.Name) and value.id == "stdin"
    if isinstance(node, ast.For):
        return isinstance(node.iter, ast.Name) and node.iter.id == "stdin"
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in _STDIN_FILES
    if not isinstance(node, ast.Call):
        return False
    func, first = node.func, node.args[0] if node.args else None
    if isinstance(func, ast.Name):
        return func.id == "input" or (func.id == "open" and _is_zero(first))
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        owner = func.value.id
        if owner == "fileinput" and func.attr in ("input", "FileInput"):
            given = [k.value for k in node.keywords if k.arg == "files"] or node.args[:1]
            return not given or not _named_files(given[0])
        return owner == "os" and func.attr in ("read", "readv", "pread") and _is_zero(first)
    return False


def _named_files(node: ast.AST) -> bool:
    """Files given to ``fileinput`` as constants, none of them ``-`` (standard input): a
    computed list (``sys.argv[1:]``) may be empty or hold ``-``, which reads standard input."""
    items = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
    return bool(items) and all(isinstance(i, ast.Constant) and isinstance(i.value, str) and i.value != "-"
                               for i in items)


def _is_zero(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0 and not isinstance(node.value, bool)


def stdin_value() -> Any:
    """What the code will read from standard input, as a value to fingerprint: a regular file
    by its content digest and the positions reached by the code above (so ``< other.txt``, an
    edit of the file, or a line consumed above all change it), ``/dev/null`` as empty, a
    ``StringIO`` by its text and position; a pipe, a terminal or anything else by a value no
    other run has (never a hit), noted for ``unknown_reads``."""
    stream = sys.stdin
    if isinstance(stream, io.StringIO):
        return ["text", stream.getvalue(), stream.tell()]
    known = None if _interactive_shell() else _file_value(stream)
    if known is not None:
        return known
    for found in _unknown:
        found.append(LABEL)
    return ["unknown until read", os.urandom(16).hex()]


def _interactive_shell() -> bool:
    """Under IPython or Jupyter ``input()`` asks the shell or the front end, not fd 0."""
    from .process import in_ipython

    return in_ipython()


def _file_value(stream: Any) -> list[Any] | None:
    """The value of a standard input that is a regular file or ``/dev/null``, else None."""
    try:
        fd = stream.fileno()
        st = os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return None
    try:
        if os.path.samestat(st, os.stat(os.devnull)):
            return ["empty"]
    except OSError:
        pass
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        where = stream.tell()  # the text layer's: the bytes below are read ahead in chunks
    except (AttributeError, OSError, ValueError):
        return None  # it cannot say where it is (a loop over it left above)
    try:
        return ["file", _fd_digest(fd), st.st_size, where]
    except OSError:
        return None


def _fd_digest(fd: int) -> str:
    """The content digest of an open file, read with ``pread`` so that its offset, which the
    code will read from, does not move."""
    import xxhash

    h = xxhash.xxh3_128()
    offset, chunk = 0, 1 << 18
    while True:
        data = os.pread(fd, chunk, offset)
        if not data:
            return h.hexdigest()
        h.update(data)
        offset += len(data)


def position() -> int | None:
    """Where the code reads standard input next, when it is a regular file (None otherwise):
    a hit does not read it, so the code after the block would read what the block consumed
    unless the hit moves it (``seek_to``) where the computing run left it."""
    stream = sys.stdin
    try:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            return None
        return int(stream.tell())
    except (AttributeError, OSError, ValueError):
        return None


def seek_to(where: int) -> None:
    """Move a regular-file standard input to ``where`` (a ``position()``), as the computing
    run left it; nothing for any other standard input."""
    if position() is not None:
        try:
            sys.stdin.seek(where)
        except (OSError, ValueError):
            pass


def unknown_reads(make: Callable[[], T]) -> tuple[T, list[str]]:
    """``make()`` (the computation of one key) and what it found the code reads that cannot
    be known before the code runs (``LABEL`` for a pipe or a terminal): the engine then
    computes without saving, since no later run could be keyed on what this one read."""
    with _collecting() as found:
        made = make()
    return made, list(dict.fromkeys(found))


@contextmanager
def _collecting() -> Iterator[list[str]]:
    found: list[str] = []
    _unknown.append(found)
    try:
        yield found
    finally:
        _unknown.remove(found)


def not_saved_reason(name: str, where: str, unknown: list[str]) -> str:
    """The one warning for a block that reads what no key can hold, naming it and the fix."""
    return (f"statecache: '{name}' at {where} reads {' and '.join(unknown)} from a pipe or a terminal, "
            "which cannot be known before the block runs: it is computed on every run and not saved. "
            "Read it above the block and use the value in the block (or redirect it from a file).")
