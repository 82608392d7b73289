"""Which library a value's type comes from, judged without importing any: numpy arrays,
torch tensors and pathlib's own path classes exist only once their module is loaded, so each
test looks in ``sys.modules``. Used by the value walker (``values``)."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

# pathlib's own classes (a subclass may carry more state: it goes through its pickle)
_PATH_NAMES = frozenset({"PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath"})


def dtype_descr(dt: Any) -> str:
    """A numpy dtype as keys spell it (``dtype.str`` loses the field names of structured
    dtypes, ``|V16``: those by their full description)."""
    return dt.str if dt.fields is None else repr(dt.descr)


def is_numpy_array_type(t: type) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and (t is np.ndarray or t is np.memmap)


def is_path_type(t: type) -> bool:
    """One of pathlib's own path classes (pathlib is never imported here: a path exists only
    once it is loaded)."""
    return (
        t.__name__ in _PATH_NAMES and t.__module__.startswith("pathlib")
        and getattr(sys.modules.get("pathlib"), t.__name__, None) is t
    )


def is_tensor_type(t: type) -> bool:
    """A torch tensor type (``torch`` is loaded whenever such a value exists: never imported
    here)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(getattr(torch, "Tensor", None), type) and issubclass(t, torch.Tensor)
