"""The global random generators (``random``, numpy's legacy ``np.random``, torch's CPU
generator) as hidden inputs and outputs of a cached computation.

A block that draws from a global generator depends on its state before the block (a changed
``seed()`` above it changes the result) and leaves it advanced. Which generators a block uses
is only known by running it, so, like data files, they are recorded during the computing run:
the state before (fingerprint) and after (value). A hit re-checks the state before and then
sets the state after, so the code after a restored block draws the same numbers as after a
computed one. Only generators of modules already imported are looked at.
"""

from __future__ import annotations

import base64
import sys
from typing import Any


def capture() -> dict[str, Any]:
    """The current state of every global generator whose module is imported."""
    states: dict[str, Any] = {}
    rnd = sys.modules.get("random")
    if rnd is not None:
        states["random"] = rnd.getstate()
    np = sys.modules.get("numpy")
    if np is not None and hasattr(np, "random") and hasattr(np.random, "get_state"):
        try:
            states["numpy"] = np.random.get_state()
        except Exception:
            pass
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "random"):
        try:
            states["torch"] = torch.random.get_rng_state()
        except Exception:
            pass
    return states


def _encode(name: str, state: Any) -> Any:
    """A JSON-able form of a generator state."""
    if name == "random":
        version, internal, gauss = state
        return [version, list(internal), gauss]
    if name == "numpy":
        kind, keys, pos, has_gauss, cached = state
        return [kind, base64.b64encode(keys.tobytes()).decode(), str(keys.dtype), int(pos), int(has_gauss), float(cached)]
    return base64.b64encode(state.numpy().tobytes()).decode()


def _decode(name: str, data: Any) -> Any:
    if name == "random":
        version, internal, gauss = data
        return (version, tuple(internal), gauss)
    if name == "numpy":
        import numpy as np

        kind, keys, dtype, pos, has_gauss, cached = data
        return (kind, np.frombuffer(base64.b64decode(keys), dtype=dtype).copy(), pos, has_gauss, cached)
    import torch

    return torch.frombuffer(bytearray(base64.b64decode(data)), dtype=torch.uint8)


def fingerprint(name: str, state: Any) -> str:
    import json

    from .hashing import digest

    return digest(json.dumps(_encode(name, state)).encode()).hex()


def records(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """{generator: {"before": fingerprint, "after": encoded state}} for the generators the
    computation advanced (or reseeded)."""
    out: dict[str, Any] = {}
    for name, state in after.items():
        if name not in before:
            continue
        old = fingerprint(name, before[name])
        if fingerprint(name, state) != old:
            out[name] = {"before": old, "after": _encode(name, state)}
    return out


def changed(recorded: dict[str, Any]) -> str | None:
    """None when every recorded generator is in the state it was in before the computation."""
    now = capture()
    for name, record in recorded.items():
        if name not in now or fingerprint(name, now[name]) != record["before"]:
            return f"random state of {name} changed (seed it before the block to make the block cacheable)"
    return None


def restore(recorded: dict[str, Any]) -> None:
    """Set each recorded generator to its state after the computation."""
    for name, record in recorded.items():
        state = _decode(name, record["after"])
        if name == "random":
            sys.modules["random"].setstate(state)
        elif name == "numpy":
            sys.modules["numpy"].random.set_state(state)
        else:
            sys.modules["torch"].random.set_rng_state(state)
