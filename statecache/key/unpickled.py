"""The user's code that a block reaches only through objects it unpickles.

``model = joblib.load("m.joblib"); model.predict(X)`` runs the methods of a class the block
never names, so the key, which holds the code the block names, does not hold them. Every
unpickler (pickle's C and Python ones, so joblib, dill, cloudpickle and ``torch.load`` too)
raises the ``pickle.find_class`` audit event with the class's module and qualified name; the
recorder keeps the module names (a set insert per event, so a model of hundreds of globals
costs little), and at the end of the block ``source_files`` names the source file of each of
the user's modules among them and of the modules of the user's classes in their bases. The
block's record of that file (as of a file it read) makes an edit of it a change: coarse (any
edit of the module counts, not only of the class) but never stale. A module whose file was
saved after it loaded is flagged by ``loaded_other_text``: the file is not what ran.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable

from .provenance import is_user_module


def source_files(names: Iterable[tuple[str, str]]) -> dict[str, bool]:
    """The source file of each user module that defines an unpickled global (``(module,
    qualname)`` pairs) or one of the user's bases of an unpickled class -> whether that file
    still holds the text the module was loaded from. Installed and standard modules add
    nothing; the user/not-user answer is cached per module by ``provenance``."""
    found: dict[str, bool] = {}
    seen_modules: set[str] = set()
    for module_name, qualname in names:
        for module in _modules_of(module_name, qualname):
            if module.__name__ in seen_modules:
                continue
            seen_modules.add(module.__name__)
            path = getattr(module, "__file__", None)
            if isinstance(path, str) and path.endswith(".py"):
                from .loaded import loaded_other_text

                found[path] = not loaded_other_text(module)
    return found


def _modules_of(module_name: str, qualname: str) -> list[types.ModuleType]:
    """The user's modules that hold the code of the global ``module_name.qualname``: its own
    module, and for a class the modules of the user's classes it inherits from."""
    module = sys.modules.get(module_name)
    if not is_user_module(module):
        return []
    assert isinstance(module, types.ModuleType)
    found = [module]
    value: object = module
    for part in qualname.split("."):
        value = getattr(value, part, None)
    if isinstance(value, type):
        for base in value.__mro__[1:]:
            base_module = sys.modules.get(base.__module__)
            if base_module is not None and base_module is not module and is_user_module(base_module):
                found.append(base_module)
    return found
