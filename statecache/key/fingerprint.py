"""Cache keys: deterministic xxh3-128 fingerprints of code, values and files.

The names other modules have always imported from here, now kept by the modules that own
them: ``values`` (the Fingerprinter), ``codegraph`` (code as a graph), ``code`` (a code
object's source or bytecode digest), ``imports`` and ``versions`` (modules an import brings
in; package versions), ``hashing`` (digest primitives), ``astdigest`` and ``provenance``.
"""

from __future__ import annotations

from .astdigest import ast_digest
from .hashing import digest, file_digest
from .provenance import is_user_file
from .values import Fingerprinter
from .versions import package_version
from .walk import is_plain_data

__all__ = [
    "Fingerprinter",
    "ast_digest",
    "digest",
    "file_digest",
    "is_plain_data",
    "is_user_file",
    "package_version",
]
