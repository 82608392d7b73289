"""Golden keys: the key of a few fixed inputs, computed in-process through key/components.py,
must not change by accident. A change in how a value, a code string, a file or the key
document is encoded would make every user silently miss (or, worse, two different inputs
collide); this test fails instead.

When a change is deliberate, bump ``KEY_SCHEMA_VERSION`` in statecache/key/components.py
(and say so in CHANGELOG.md), then regenerate the golden file:

    python tests/test_golden_keys.py --regen

The cases avoid everything whose fingerprint depends on the installed Python or libraries
(helper functions, pickled objects); the environment component (Python major.minor, entry
format and key schema version) is checked on its own.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: import this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from statecache.key import components as C
from statecache.key.astdigest import ast_digest

GOLDEN = Path(__file__).with_name("golden") / "keys.json"

CODE = """
import numpy as np
# a comment does not count
X = np.arange(n) * scale
labels = [f"item-{i}" for i in range(n)]
"""

FILES = {"data/a.csv": "x,y\n1,2\n", "data/b.csv": "x,y\n3,4\n", "config.toml": "n = 3\n"}


def _values(root: str = "/project") -> dict[str, dict[str, Any]]:
    return {
        "scalars": {"n": 3, "scale": 2.5, "name": "features", "flag": True, "nothing": None, "big": 2**70},
        "bytes": {"raw": b"\x00\x01\xff", "buf": bytearray(b"abc")},
        "containers": {
            "list": [1, "two", 3.0, [4, (5,)]],
            "dict": {"b": 1, "a": [2, 3]},
            "set": {3, 1, 2},
            "frozen": frozenset({"x", "y"}),
            "tuple": (1, None, "z"),
        },
        "arrays": {
            "f64": np.arange(12, dtype=np.float64).reshape(3, 4),
            "i32_transposed": np.arange(6, dtype=np.int32).reshape(2, 3).T,
            "bool": np.array([True, False, True]),
            "empty": np.zeros((0, 2), dtype=np.uint8),
        },
        # absolute paths inside the project root count relative to it (the root is a temporary
        # directory, another one on every run: these fingerprints must not depend on it)
        "paths": {
            "inside": os.path.join(root, "data", "a.csv"),
            "root": root,
            "in_list": [os.path.join(root, "config.toml"), "/elsewhere/config.toml"],
            "outside": "/elsewhere/data/a.csv",
            "relative": os.path.join("data", "a.csv"),
        },
    }


def compute() -> dict[str, Any]:
    """Every golden value, from the code of today's checkout."""
    code = C.code_component(ast_digest(ast.parse(CODE).body))
    cases: dict[str, Any] = {"code": code, "version_code": C.code_component(b"", "2"), "inputs": {}, "keys": {}}
    with tempfile.TemporaryDirectory() as tmp, _root(tmp):
        for rel, text in FILES.items():
            path = Path(tmp, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        files = C.files_component(["data/*.csv", "config.toml", "missing/*"], tmp)
        cases["files"] = files
        for case, values in _values(tmp).items():
            inputs = C.fingerprint_values(values)
            cases["inputs"][case] = inputs
            parts = C.components(code, "script.py", inputs, files)
            parts["env"] = "golden"  # the environment is checked apart (it names the Python version)
            cases["keys"][case] = C.key_of(parts)
    return cases


@contextlib.contextmanager
def _root(root: str) -> Iterator[None]:
    """STATECACHE_ROOT set to ``root`` for the block."""
    before = os.environ.get("STATECACHE_ROOT")
    os.environ["STATECACHE_ROOT"] = root
    try:
        yield
    finally:
        if before is None:
            del os.environ["STATECACHE_ROOT"]
        else:
            os.environ["STATECACHE_ROOT"] = before


def expected_env() -> str:
    from statecache.entry.format import FORMAT_VERSION

    return f"python{sys.version_info[0]}.{sys.version_info[1]}/format{FORMAT_VERSION}/key{C.KEY_SCHEMA_VERSION}"


def test_golden_keys_are_unchanged() -> None:
    golden = json.loads(GOLDEN.read_text())
    assert golden["key_schema_version"] == C.KEY_SCHEMA_VERSION, (
        "KEY_SCHEMA_VERSION changed: regenerate tests/golden/keys.json (see the top of this file)"
    )
    now = compute()
    for field in ("code", "version_code", "files"):
        assert now[field] == golden[field], f"the encoding of {field!r} changed"
    for case, inputs in golden["inputs"].items():
        assert now["inputs"][case] == inputs, f"the fingerprint of the {case!r} inputs changed"
    assert now["keys"] == golden["keys"], "the key document's encoding changed"


def test_the_environment_component_names_python_format_and_schema() -> None:
    assert C.env_component() == expected_env()


def test_golden_cases_are_sensitive() -> None:
    """The golden cases would notice a change: each input and the code move the key."""
    base = compute()
    values = _values()["scalars"]
    changed = C.fingerprint_values({**values, "n": 4})
    assert changed["n"] != base["inputs"]["scalars"]["n"]
    assert changed["scale"] == base["inputs"]["scalars"]["scale"]
    assert C.code_component(ast_digest(ast.parse(CODE.replace("scale", "scale + 1")).body)) != base["code"]
    paths = base["inputs"]["paths"]
    assert len({paths["inside"], paths["outside"], paths["relative"], paths["root"]}) == 4


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit("usage: python tests/test_golden_keys.py --regen")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"key_schema_version": C.KEY_SCHEMA_VERSION, **compute()}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
