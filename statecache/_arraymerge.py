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
from typing import Any


def array_mergeable(current: Any, saved: Any, relayout: bool) -> bool:
    """Whether ``merge_array`` can make the ndarray ``current`` equal to ``saved``: the same
    dtype and shape, or, with ``relayout`` (the caller knows ``saved`` is what became of this
    very object), a layout it can take in place (a reshape or dtype reinterpretation of its
    memory; a resize of an array that owns its memory)."""
    if not current.flags.writeable or current.dtype.hasobject or saved.dtype.hasobject:
        return False
    if current.shape == saved.shape and current.dtype == saved.dtype:
        return True
    if not relayout:
        return False
    if current.nbytes == saved.nbytes:
        return _relaid(current.view(), saved)  # tried on a view: ``current`` is left alone
    return (
        current.base is None and bool(current.flags.owndata) and bool(current.flags.c_contiguous)
        and saved.nbytes % current.itemsize == 0
    )


def merge_array(current: Any, saved: Any) -> None:
    """Give ``current`` the layout and the elements of ``saved`` (``array_mergeable`` said it
    can). A resize does not check references, as ``resize(refcheck=False)`` in the block did
    not: the block could only have resized it so."""
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
    return _same_layout(current, saved) or (relayout and _spans_storage(current))


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


def _spans_storage(t: Any) -> bool:
    """Every byte of ``t``'s storage is one of its elements (so its content is in the key)."""
    try:
        nbytes = t.untyped_storage().nbytes()
    except RuntimeError:  # no storage: a meta or functional tensor
        return False
    return bool(t.is_contiguous()) and t.storage_offset() == 0 and t.numel() * t.element_size() == nbytes
