"""The global random generators (``random``, numpy's legacy ``np.random``, torch's CPU
generator, polars') as hidden inputs and outputs of a cached computation.

A block that draws from a global generator depends on its state before the block (a changed
``seed()`` above it changes the result) and leaves it advanced. Which generators a block uses
is only known by running it, so, like data files, they are recorded during the computing run:
the state before (fingerprint) and after (value). A hit re-checks the state before and then
sets the state after, so the code after a restored block draws the same numbers as after a
computed one. Only generators of modules already imported are looked at.

polars' generator cannot be read: the seed last given to ``pl.set_random_seed`` (wrapped in
the module, ``watch_polars``), with the number of such calls, stands for its state, and counts
for every block once it is set (a block that draws nothing then misses when the seed changes).
A hit replays the block's own last seeding, not the draws after it. A generator never seeded
counts for nothing: polars seeds it afresh in every process, so no run can reproduce its draws.
"""

from __future__ import annotations

import base64
import functools
import sys
from collections.abc import Callable
from typing import Any

#: [the seed last given to pl.set_random_seed, how many times it was called], once called
_polars_seed: list[Any] = []
_polars_set_seed: Callable[..., Any] | None = None  # polars' own set_random_seed
_POLARS = "polars"


def watch_polars(module: Any) -> None:
    """Wrap ``module.set_random_seed`` (polars' and its ``functions``'), once, to note the seed."""
    global _polars_set_seed
    from .readernames import READER_WRAPPER

    original: Any = getattr(module, "set_random_seed", None)
    if not callable(original) or getattr(original, READER_WRAPPER, False):
        return
    _polars_set_seed = original

    @functools.wraps(original)
    def set_random_seed(seed: Any, *args: Any, **kwargs: Any) -> Any:
        done = original(seed, *args, **kwargs)
        _polars_seed[:] = [seed if isinstance(seed, int) else repr(seed), _polars_calls() + 1]
        return done

    setattr(set_random_seed, READER_WRAPPER, True)
    from .rebinding import register

    for namespace in (module, getattr(module, "functions", None)):
        if getattr(namespace, "set_random_seed", None) is original:
            namespace.set_random_seed = set_random_seed  # type: ignore[union-attr]
    register(original, set_random_seed)


def _polars_calls() -> int:
    return int(_polars_seed[1]) if _polars_seed else 0


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
    if _POLARS in sys.modules:
        states[_POLARS] = list(_polars_seed) or None
    return states


def _encode(name: str, state: Any) -> Any:
    """A JSON-able form of a generator state."""
    if name == "random":
        version, internal, gauss = state
        return [version, list(internal), gauss]
    if name == "numpy":
        kind, keys, pos, has_gauss, cached = state
        return [kind, base64.b64encode(keys.tobytes()).decode(), str(keys.dtype), int(pos), int(has_gauss), float(cached)]
    if name == _POLARS:
        return state
    return base64.b64encode(state.numpy().tobytes()).decode()


def _decode(name: str, data: Any) -> Any:
    if name == "random":
        version, internal, gauss = data
        return (version, tuple(internal), gauss)
    if name == "numpy":
        import numpy as np

        kind, keys, dtype, pos, has_gauss, cached = data
        return (kind, np.frombuffer(base64.b64decode(keys), dtype=dtype).copy(), pos, has_gauss, cached)
    if name == _POLARS:
        return data
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
        # polars' is read by its seed alone: once seeded it counts whether or not it was drawn from
        if fingerprint(name, state) != old or (name == _POLARS and state is not None):
            out[name] = {"before": old, "after": _encode(name, state)}
    return out


def changed(recorded: dict[str, Any]) -> str | None:
    """None when every recorded generator is in the state it was in before the computation."""
    now = capture()
    for name, record in recorded.items():
        if name not in now or fingerprint(name, now[name]) != record["before"]:
            if name == _POLARS:
                return "the seed of polars' random generator changed (pl.set_random_seed)"
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
        elif name == _POLARS:
            _reseed_polars(state, record["before"])
        else:
            sys.modules["torch"].random.set_rng_state(state)


def _reseed_polars(state: Any, before: str) -> None:
    """Replay the block's last ``pl.set_random_seed`` (when it seeded: its state is not the one
    before), and count it as the computing run did."""
    if state is None or _polars_set_seed is None or fingerprint(_POLARS, state) == before:
        return
    seed, calls = state
    if isinstance(seed, int):  # another kind of seed is kept by its repr only
        _polars_set_seed(seed)
    _polars_seed[:] = [seed, calls]
