"""torch tensors as out-of-band payload: a storage's bytes leave the pickle stream as one
PickleBuffer (a raw, aligned buffer section that the reader fills by ``preadv`` or maps
copy-on-write), and come back as a storage over that very memory (``torch.frombuffer``, no
copy). A tensor is its storage plus dtype, shape, strides, offset, requires_grad, its conj/neg
bits and its Python attributes; views of one storage pickle the same storage object, so the
pickle memo stores it once and the restored views share it again.

Plain strided tensors and Parameters on the CPU or a CUDA device take this path; anything else
(sparse, quantized, nested, meta, tensor subclasses) keeps torch's own reducers. torch is never
imported here: the writer asks only when torch is already loaded, and the reader's unpickler
calls the rebuild functions only for an entry that holds tensors.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from typing import Any

from .._warnings import warn

DEVICES = ("cpu", "cuda")  # device types whose storages are saved here


class TensorReducer:
    """The ``reducer_override`` part for torch, for one pickling: one storage object per
    underlying storage (keyed by its C pointer), so that every view pickles the same one."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.storages: dict[int, Any] = {}
        self.by_type: dict[type, Callable[[Any], Any]] = {
            torch.Tensor: self.tensor,
            torch.nn.Parameter: self.parameter,
            torch.UntypedStorage: self.storage,
        }

    def __call__(self, obj: Any) -> Any:
        """A reduce tuple for a tensor, Parameter or storage this module saves, else
        NotImplemented (the pickler goes on as usual)."""
        reduce = self.by_type.get(type(obj))
        return NotImplemented if reduce is None else reduce(obj)

    def saved_here(self, t: Any) -> bool:
        torch = self.torch
        return (
            t.layout == torch.strided
            and t.device.type in DEVICES
            and not t.is_quantized
            and not t.is_nested
            and torch._C._has_storage(t)
        )

    def canonical(self, storage: Any) -> Any:
        return self.storages.setdefault(storage._cdata, storage)

    def tensor(self, t: Any) -> Any:
        if not self.saved_here(t):
            return NotImplemented
        from torch.utils.hooks import warn_if_has_hooks

        warn_if_has_hooks(t)  # hooks are not saved, as torch.save does not save them
        return rebuild_tensor, (
            self.canonical(t.untyped_storage()),
            t.storage_offset(),
            tuple(t.size()),
            tuple(t.stride()),
            str(t.dtype).removeprefix("torch."),
            t.requires_grad,
            self.torch._utils.get_tensor_metadata(t) or None,  # the conj and neg bits
            getattr(t, "__dict__", None) or None,
        )

    def parameter(self, p: Any) -> Any:
        if not self.saved_here(p):
            return NotImplemented
        return rebuild_parameter, (p.data, p.requires_grad, getattr(p, "__dict__", None) or None)

    def storage(self, s: Any) -> Any:
        if s.device.type not in DEVICES:
            return NotImplemented
        first = self.canonical(s)
        if first is not s:
            return same, (first,)
        nbytes = s.nbytes()
        if nbytes == 0:
            return rebuild_storage, (pickle.PickleBuffer(bytearray()), str(s.device))
        host = s if s.device.type == "cpu" else s.cpu()
        return rebuild_storage, (pickle.PickleBuffer(storage_bytes(host)), str(s.device))


def storage_bytes(storage: Any) -> Any:
    """A writable buffer over a CPU storage's bytes, no copy, holding the storage alive.
    Not ``tensor.numpy()``: that marks the storage not resizable for good, so saving a state
    made ``t.resize_`` fail in the computing run after its save."""
    import ctypes

    data = (ctypes.c_char * storage.nbytes()).from_address(storage.data_ptr())
    data.storage = storage  # the memory lives as long as the view
    return data


def tensor_reducer() -> TensorReducer | None:
    """A TensorReducer when torch is loaded (so the state may hold tensors), else None:
    pickling a state without tensors never imports torch."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "nn") or not hasattr(torch, "UntypedStorage"):
        return None
    return TensorReducer(torch)


def same(obj: Any) -> Any:
    """A second storage object for one storage restores as the first."""
    return obj


def rebuild_storage(data: Any, device: str) -> Any:
    """A storage over the restored buffer itself (the reader's final memory, or its
    copy-on-write map), moved to ``device`` when this process has it. A buffer of the pickle
    stream (a small storage) is copied into a storage of its own, resizable like the saved one
    (``t.resize_`` works after a hit as after the computing run; see ``arrays``)."""
    import torch

    buf = memoryview(data)
    if buf.nbytes == 0:
        storage = torch.UntypedStorage(0)
    elif isinstance(data, (bytes, bytearray)):
        storage = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8)
    else:
        if buf.readonly:  # a tensor is writable: torch.frombuffer wants writable memory
            buf = memoryview(bytearray(buf))
        storage = torch.frombuffer(buf, dtype=torch.uint8).untyped_storage()
    return storage if device == "cpu" else on_device(storage, device)


def on_device(storage: Any, device: str) -> Any:
    """``storage`` moved to the device it was saved from; kept on the CPU, with a warning,
    where this process has no such device."""
    import torch

    target = torch.device(device)
    if target.type == "cuda" and torch.cuda.is_available():
        if (target.index or 0) < torch.cuda.device_count():
            return storage.cuda(target.index)
        why = f"this process sees {torch.cuda.device_count()} CUDA device(s)"
    elif target.type == "cuda":
        why = "this process has no CUDA device (torch.cuda.is_available() is False)"
    else:
        why = f"statecache does not restore tensors onto {target.type!r} devices"
    warn(f"statecache: tensors saved on {device} are restored on the CPU: {why}")
    return storage


def torch_dtype(name: str) -> Any:
    """The torch dtype named ``name`` (e.g. "bfloat16"); ValueError if this torch has none."""
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"this torch ({torch.__version__}) has no dtype {name!r}")
    return dtype


def rebuild_tensor(
    storage: Any,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    dtype: str,
    requires_grad: bool,
    metadata: dict[str, bool] | None,
    state: dict[str, Any] | None,
) -> Any:
    """The tensor over ``storage`` as it was saved: a view of it, sharing it with every other
    tensor restored from the same storage."""
    import torch

    t = torch.empty((0,), dtype=torch_dtype(dtype), device=storage.device)
    if 0 not in size and _last_byte(offset, size, stride, t.element_size()) > storage.nbytes():
        # a small storage is resizable (``rebuild_storage``): set_ would grow it, not refuse
        raise ValueError(f"a tensor of shape {size} reaches past its storage of {storage.nbytes()} bytes")
    t.set_(storage, offset, size, stride)
    if metadata:
        torch._utils.set_tensor_metadata(t, metadata)
    if requires_grad:
        t.requires_grad_(True)
    for key, value in (state or {}).items():
        setattr(t, key, value)
    return t


def _last_byte(offset: int, size: tuple[int, ...], stride: tuple[int, ...], itemsize: int) -> int:
    """One past the last byte of its storage that a non-empty tensor's geometry reaches."""
    if offset < 0 or any(n < 0 for n in size) or any(st < 0 for st in stride):
        raise ValueError(f"a negative offset, size or stride ({offset}, {size}, {stride})")
    return (offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True)) + 1) * itemsize


def rebuild_parameter(data: Any, requires_grad: bool, state: dict[str, Any] | None) -> Any:
    """An ``nn.Parameter`` over the restored tensor ``data`` (sharing its storage)."""
    import torch

    p = torch.nn.Parameter(data, requires_grad)
    for key, value in (state or {}).items():
        setattr(p, key, value)
    return p
