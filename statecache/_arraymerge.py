"""A live numpy array or torch tensor given, in place, what a hit saved for it: its elements
and also its layout, when the block changed that in place (``arr.shape = (2, 2)``,
``arr.resize(6)``, ``arr.dtype = ...``, ``t.resize_(6)``, ``t.unsqueeze_(0)``, ``t.t_()``,
``t.set_(...)``). The object keeps its identity, so every other name for it sees what the
computing run left, as after that run (``_identity.merge`` calls this).

Each ``*_mergeable`` says whether the merge can be done without touching memory that is not
the object's own; when it cannot, ``_identity`` binds the saved copy instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def array_mergeable(current: Any, saved: Any, relayout: bool) -> bool:
    """Whether ``merge_array`` can make the ndarray ``current`` equal to ``saved``: the same
    dtype and shape, or, with ``relayout`` (the caller knows ``saved`` is what became of this
    very object), a layout it can take in place (a reshape or dtype reinterpretation of its
    memory; a resize of an array that owns its memory). A subclass (``np.ma.MaskedArray``, its
    own state in its ``__dict__``: ``_identity.mergeable``) only with the same layout."""
    if not current.flags.writeable or current.dtype.hasobject or saved.dtype.hasobject:
        return False
    subclass = type(current) is not sys.modules["numpy"].ndarray
    if current.shape == saved.shape and current.dtype == saved.dtype:
        return True
    if not relayout or subclass:
        return False
    if current.nbytes == saved.nbytes:
        return _relaid(current.view(), saved)  # tried on a view: ``current`` is left alone
    return (
        current.base is None and bool(current.flags.owndata) and bool(current.flags.c_contiguous)
        and saved.nbytes % current.itemsize == 0
    )


def merge_array(current: Any, saved: Any, sub: Callable[[Any], Any] = lambda v: v) -> None:
    """Give ``current`` the layout and the elements of ``saved`` (``array_mergeable`` said it
    can). A resize does not check references, as ``resize(refcheck=False)`` in the block did
    not: the block could only have resized it so. A subclass's elements are written as plain
    ndarray elements, and its attributes (a mask, a fill value) are the saved ones, each
    passed through ``sub`` (``_identity.merge``)."""
    np = sys.modules["numpy"]
    if type(current) is not np.ndarray:
        current.view(np.ndarray)[...] = saved.view(np.ndarray)
        namespace = vars(current)
        namespace.clear()
        namespace.update({k: sub(v) for k, v in vars(saved).items()})
        return
    if current.nbytes != saved.nbytes:
        current.resize((saved.nbytes // current.itemsize,), refcheck=False)
    if current.shape != saved.shape or current.dtype != saved.dtype:
        _relaid(current, saved)
    current[...] = saved


def _relaid(array: Any, saved: Any) -> bool:
    """Set ``array``'s dtype and shape to ``saved``'s in place; False when numpy refuses (a
    layout that would need a copy)."""
    try:
        if array.dtype != saved.dtype:
            array.dtype = saved.dtype
        array.shape = saved.shape
    except (AttributeError, TypeError, ValueError):
        return False
    return True


def tensor_mergeable(current: Any, saved: Any, relayout: bool) -> bool:
    """Whether ``merge_tensor`` can make the tensor ``current`` equal to ``saved``: a strided
    tensor of the same dtype and device, with no autograd history to break, and either the
    same layout (its elements are copied) or, with ``relayout`` (as for arrays), a storage it
    spans whole (taken over)."""
    torch = sys.modules["torch"]
    strided = current.layout == torch.strided and saved.layout == torch.strided
    if not strided or current.is_quantized or saved.is_quantized:
        return False
    if current.dtype != saved.dtype or current.device != saved.device:
        return False
    if current.requires_grad and not current.is_leaf:
        return False
    if _same_layout(current, saved):
        return True
    from ._views import whole  # every byte of its storage is one of its elements (in the key)

    return relayout and whole(current)


def merge_tensor(current: Any, saved: Any) -> None:
    """Give ``current`` the content of ``saved``: its elements when the layout is the same;
    else the bytes of the whole saved storage in its own storage (resized as ``resize_`` in
    the block did), then the saved offset, shape and strides, so that the tensors sharing
    that storage before the block still share it."""
    torch = sys.modules["torch"]
    with torch.no_grad():
        if _same_layout(current, saved):
            current.copy_(saved)
        else:
            storage, source = current.untyped_storage(), saved.untyped_storage()
            if storage.nbytes() != source.nbytes():
                storage.resize_(source.nbytes())
            storage.copy_(source)
            current.set_(storage, saved.storage_offset(), saved.size(), saved.stride())
        if current.requires_grad != saved.requires_grad and current.is_leaf:
            current.requires_grad_(saved.requires_grad)


def _same_layout(a: Any, b: Any) -> bool:
    return a.size() == b.size() and a.stride() == b.stride()
