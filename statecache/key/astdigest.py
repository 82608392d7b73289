"""The normalised-AST digest: the one measure of "did this code change" for keys and live mode.

Comments, blank lines and formatting don't count; node types, field values and constants
(with their types) do, so any change in meaning changes the digest.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

import xxhash

from .hashing import U64 as _U64
from .hashing import encode_str as _s

# Fields that carry formatting, not meaning: ``u"x"`` vs ``"x"``, ``# type:`` comments.
# Positions (lineno, col_offset, ...) are ``_attributes``, never visited.
_AST_SKIP = frozenset({"kind", "type_comment", "type_ignores"})


def ast_digest(node: ast.AST | list[ast.stmt]) -> bytes:
    """Digest of an AST without positions: comments, blank lines and formatting don't count.

    Node types, field values and constants (with their types) do, so any change in meaning
    changes the digest; docstrings count (they are observable through ``__doc__``).
    """
    h = xxhash.xxh3_128()
    _feed_ast(h.update, node)
    return h.digest()


def _feed_ast(upd: Callable[[bytes], object], node: object) -> None:
    if isinstance(node, ast.AST):
        upd(b"N" + _s(type(node).__name__))
        for field in node._fields:
            if field not in _AST_SKIP:
                _feed_ast(upd, getattr(node, field, None))
    elif isinstance(node, list):
        upd(b"[" + _U64(len(node)))
        for item in node:
            _feed_ast(upd, item)
    elif node is None:
        upd(b"0")
    else:  # identifiers and constants: str, bytes, int, float, complex, bool, Ellipsis
        upd(b"C" + _s(type(node).__name__) + _s(repr(node)))
