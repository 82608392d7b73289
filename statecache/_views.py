"""Views of input arrays across a restore: an array the block took as a view of an input
(``X[:4]``, ``X.T``, ``X.reshape(...)``, ``t[1:]`` of a torch tensor) comes back as the same view
of the live input, not as a copy, so that a later in-place change of the input shows through
it, as after the computing run.

A view is recorded (``view_origin``) only where every byte it can reach belongs to an input
whose bytes are in the key: a contiguous numpy array (then its memory is its elements), or a
torch tensor that spans its whole storage. A hit rebuilds the view over the live input with
the saved offset, shape, strides and dtype (``rebuild_view``) when that input still has the
recorded layout; otherwise the saved copy stands (the same values, no longer shared).
"""

from __future__ import annotations

import sys
from typing import Any

#: (offset in bytes or elements, shape, strides, dtype, read-only) of a view, and the layout
#: (shape, strides, dtype) the input it is a view of had
View = tuple[int, tuple[int, ...], tuple[int, ...], Any, bool]
Layout = tuple[tuple[int, ...], tuple[int, ...], Any]


def array_types() -> tuple[type, ...]:
    """The types ``memory_key`` knows, of the libraries loaded (none imported here)."""
    found: list[type] = []
    np, torch = sys.modules.get("numpy"), sys.modules.get("torch")
    if np is not None and hasattr(np, "ndarray"):
        found.append(np.ndarray)
    if torch is not None and hasattr(torch, "Tensor"):
        found.append(torch.Tensor)
    return tuple(found)


def memory_key(value: Any) -> tuple[str, int] | None:
    """What a numpy array's or a torch tensor's memory belongs to (the same key for an input
    and its views), or None for anything else."""
    np = sys.modules.get("numpy")
    if np is not None and type(value) is np.ndarray:
        while isinstance(value.base, np.ndarray):
            value = value.base
        return ("numpy", id(value if value.base is None else value.base))
    torch = sys.modules.get("torch")
    if torch is not None and type(value) is torch.Tensor and value.layout == torch.strided:
        try:
            return ("torch", value.untyped_storage().data_ptr())
        except RuntimeError:  # no storage (a meta or functional tensor)
            return None
    return None


def view_origin(view: Any, base: Any) -> tuple[View, Layout] | None:
    """How ``view`` (an output) lies in ``base`` (an input with the same ``memory_key``), or
    None when it is no view that ``rebuild_view`` can make again from ``base`` alone."""
    if view is base:
        return None
    if type(view).__module__ == "numpy":
        return _numpy_origin(view, base)
    return _torch_origin(view, base)


def rebuild_view(base: Any, view: View, layout: Layout) -> Any:
    """The view over the live ``base``, or None when ``base`` no longer has the recorded layout."""
    if _layout(base) != layout or not whole(base):
        return None
    offset, shape, strides, _dtype, _readonly = view
    if type(base).__module__ == "numpy":
        return numpy_view(base, view)
    import torch

    out = torch.empty((0,), dtype=base.dtype, device=base.device)
    return out.set_(base.untyped_storage(), offset, shape, strides)


def numpy_view(base: Any, view: View) -> Any:
    """The numpy view that lies in the contiguous array ``base`` as ``view`` says (offset and
    strides in bytes), sharing its memory; None when it would reach outside ``base``."""
    import numpy as np

    offset, shape, strides, dtype, readonly = view
    if not whole(base):  # a copy would be made below: never a view that shares nothing
        return None
    flat = base.reshape(-1, order="A").view(np.uint8)  # a view: base is contiguous
    try:
        out = np.ndarray(shape, dtype, buffer=flat, offset=offset, strides=strides)
    except (TypeError, ValueError):  # out of the buffer: never read past it
        return None
    if readonly:
        out.flags.writeable = False
    return out


def _layout(value: Any) -> Layout | None:
    if type(value).__module__ == "numpy":
        return (value.shape, value.strides, value.dtype)
    torch = sys.modules.get("torch")
    if torch is not None and type(value) is torch.Tensor:
        return (tuple(value.shape), tuple(value.stride()), value.dtype)
    return None


def whole(base: Any) -> bool:
    """Whether every byte a view of ``base`` can reach is one of its elements (so in the key):
    a contiguous array; a contiguous tensor spanning its whole storage (not a meta or
    functional tensor, which has none)."""
    if type(base).__module__ == "numpy":
        return not base.dtype.hasobject and (base.flags.c_contiguous or base.flags.f_contiguous)
    try:
        nbytes = base.untyped_storage().nbytes()
    except RuntimeError:  # no storage
        return False
    return bool(base.is_contiguous()) and base.storage_offset() == 0 and base.numel() * base.element_size() == nbytes


def _numpy_origin(view: Any, base: Any) -> tuple[View, Layout] | None:
    if view.dtype.hasobject or not view.nbytes or not whole(base):
        return None  # a base with gaps in its memory: bytes outside the key
    start = base.__array_interface__["data"][0]
    low, high = _bounds(view)
    if low < start or high > start + base.nbytes:
        return None
    offset = view.__array_interface__["data"][0] - start
    info: View = (offset, view.shape, view.strides, view.dtype, not view.flags.writeable)
    layout = _layout(base)
    return None if layout is None else (info, layout)


def _bounds(a: Any) -> tuple[int, int]:
    """The first and one-past-the-last byte address ``a`` reaches."""
    low = high = a.__array_interface__["data"][0]
    for n, stride in zip(a.shape, a.strides, strict=True):
        if stride < 0:
            low += (n - 1) * stride
        else:
            high += (n - 1) * stride
    return low, high + a.itemsize


def _torch_origin(view: Any, base: Any) -> tuple[View, Layout] | None:
    if view.requires_grad or base.requires_grad or view.dtype != base.dtype:
        return None  # autograd history is not saved; a reinterpreting view is left alone
    if not whole(base) or view.is_conj() or view.is_neg():
        return None
    info: View = (view.storage_offset(), tuple(view.shape), tuple(view.stride()), None, False)
    layout = _layout(base)
    return None if layout is None else (info, layout)
