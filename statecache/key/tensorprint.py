"""What of a torch tensor its fingerprint is made of, read without side effects on the user's
tensor: its head (type, dtype, device, shape, strides, whether it needs gradients), its bytes,
and its gradient. torch is never imported here (``sys.modules``)."""

from __future__ import annotations

import struct
import sys

from .hashing import U64, encode_str
from .walk import typename

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any


def tensor_head(t: Any) -> bytes:
    """Type, dtype, device, shape and strides (a stride along an axis of length 0 or 1 counts
    as 0, as for numpy), and whether it needs gradients."""
    head = b"T" + encode_str(typename(type(t))) + encode_str(str(t.dtype)) + encode_str(str(t.device))
    head += U64(t.dim()) + b"".join(U64(n) for n in t.shape)
    head += b"".join(struct.pack("<q", s if n > 1 else 0) for n, s in zip(t.shape, t.stride(), strict=True))
    return head + (b"g" if t.requires_grad else b"-")


def tensor_bytes(t: Any) -> memoryview:
    """The bytes of a strided tensor's elements in order, uncopied when it is a contiguous
    CPU tensor, through ``entry.tensors.storage_bytes``: ``tensor.numpy()`` would mark the
    user's storage not resizable for good, so that a ``t.resize_`` in the block failed only
    under statecache."""
    from ..entry.tensors import storage_bytes

    flat = t.detach().cpu().contiguous()
    size = flat.element_size()
    start = flat.storage_offset() * size
    return memoryview(storage_bytes(flat.untyped_storage())).cast("B")[start:start + flat.numel() * size]


def tensor_grad(value: Any) -> Any:
    """The ``.grad`` of a torch tensor that has one (a leaf, or one that retains it; reading
    it on any other tensor warns), else None."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, torch.Tensor) or not value.requires_grad:
        return None
    if not (value.is_leaf or value.retains_grad):
        return None
    return value.grad
