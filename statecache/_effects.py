"""Changes a computation makes to the process itself, recorded and replayed on a hit.

A block that runs ``sys.path.insert(0, "src")``, ``os.environ["MODE"] = "eval"`` or
``del sys.argv[1:]`` leaves the process changed, and the code after it relies on that (a later
import, a library reading the variable). A hit skips the block, so the engine records the
difference of these before and after the computing run in the entry (``effects``) and applies
it after restoring the state: the process then looks as the computing run left it.

Besides these, the settings the block makes in a library's or the stdlib's registry
(``np.set_printoptions``, ``pd.set_option``, warnings filters, ``logging.basicConfig``, ...) and
the functions it registers with ``atexit`` are recorded the same way (``_registries``): under
``settings`` and ``atexit``; what cannot be recorded plainly is named under ``unreplayable``,
with one warning.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .entry.meta import EffectsRecord


class ProcessState(NamedTuple):
    """A copy of the process state a computation may change."""

    path: list[str]
    argv: list[str]
    environ: dict[str, str]
    settings: dict[str, dict[str, Any]]  # _registries.capture()
    atexit: Any  # _registries.AtExitMark
    stdin: int | None  # key.stdin.position(): where a regular-file standard input is read next
    modules: frozenset[str]  # the names in sys.modules


def capture() -> ProcessState:
    from . import _registries
    from .key.stdin import position

    return ProcessState(list(sys.path), list(sys.argv), dict(os.environ), _registries.capture(),
                        _registries.atexit_mark(), position(), frozenset(sys.modules))


def libraries_imported(before: ProcessState, after: ProcessState) -> frozenset[str]:
    """The modules of installed libraries (and of the standard library) first imported between
    ``before`` and ``after``: what their import set up (a handler on their own logger) is
    theirs, done again by whichever run imports them, not the block's to replay."""
    from .key.provenance import is_user_module_name

    return frozenset(name for name in after.modules - before.modules if not is_user_module_name(name))


def difference(before: ProcessState, after: ProcessState) -> EffectsRecord:
    """What changed from ``before`` to ``after`` (an empty record when nothing did)."""
    out: dict[str, Any] = {}
    old = set(before.path)
    added = []
    for i, entry in enumerate(after.path):
        if entry not in old:
            # anchored to the next entry that was already there, so that the replay puts it at
            # the same place relative to the entries the process had (front, middle or end)
            following = next((e for e in after.path[i + 1:] if e in old), None)
            added.append({"entry": entry, "before": following})
    if added:
        out["path_added"] = added
    new = set(after.path)
    removed = [entry for entry in before.path if entry not in new]
    if removed:
        out["path_removed"] = removed
    if after.argv != before.argv:
        out["argv"] = list(after.argv)
    changed = {k: v for k, v in after.environ.items() if before.environ.get(k) != v}
    if changed:
        out["environ_set"] = changed
    unset = [k for k in before.environ if k not in after.environ]
    if unset:
        out["environ_unset"] = unset
    if after.stdin is not None and after.stdin != before.stdin:
        out["stdin_position"] = after.stdin  # what the block consumed: a hit skips past it too
    out.update(_settings_difference(before, after))
    return out  # type: ignore[return-value]


def _settings_difference(before: ProcessState, after: ProcessState) -> dict[str, Any]:
    """The ``settings``/``atexit``/``unreplayable`` part of the record; a setting that cannot
    be recorded is named in one warning (a hit would leave the process without it)."""
    from . import _registries

    out: dict[str, Any] = {}
    settings, unplain = _registries.difference(before.settings, after.settings, libraries_imported(before, after))
    registered, not_recorded = _registries.atexit_since(before.atexit)
    unplain += not_recorded
    if settings:
        out["settings"] = settings
    if registered:
        out["atexit"] = registered
    if unplain:
        out["unreplayable"] = unplain
        _warn_unreplayable(unplain)
    return out


def _warn_unreplayable(what: list[str]) -> None:
    from ._warnings import warn

    warn(f"statecache: the block changed the process in a way a hit cannot set again: {'; '.join(what)}; "
         "the state is not saved. Move it above the block (or out of it), so that every run does it.")


def replay(effects: EffectsRecord) -> None:
    """Apply a recorded difference to this process."""
    for gone in effects.get("path_removed", []):
        while gone in sys.path:
            sys.path.remove(gone)
    for record in effects.get("path_added", []):
        entry: Any = record.get("entry")
        anchor: Any = record.get("before")
        if not isinstance(entry, str) or entry in sys.path:
            continue
        if isinstance(anchor, str) and anchor in sys.path:
            sys.path.insert(sys.path.index(anchor), entry)
        else:
            sys.path.append(entry)
    if "argv" in effects:
        sys.argv[:] = effects["argv"]
    for name, value in effects.get("environ_set", {}).items():
        os.environ[name] = value
    for name in effects.get("environ_unset", []):
        os.environ.pop(name, None)
    if "stdin_position" in effects:
        from .key.stdin import seek_to

        seek_to(effects["stdin_position"])
    extra: Any = effects
    if "settings" in extra or "atexit" in extra:
        from . import _registries

        _registries.apply(extra.get("settings", {}))
        _registries.atexit_apply(extra.get("atexit", []))
    if "unreplayable" in extra:
        from ._warnings import warn

        warn(f"statecache: this hit does not redo what the computing run did to the process: "
             f"{'; '.join(map(str, extra['unreplayable']))}. Move it above the block.")
