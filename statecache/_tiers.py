"""Second store tiers (a remote cache): consulted by the engine after a local miss and fed
every local save. A tier copies an entry into the local store, which then loads and verifies
it as any other, so a tier never decides a hit by itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Tier(Protocol):
    """A second store consulted on a local miss and fed after a local save (e.g. remote).

    ``fetch`` may hold something for the key (a lease: "this machine computes it"); the engine
    then calls ``publish`` after a save, or ``abandon`` (if the tier has it) when nothing is
    saved (the code raised, the state could not be pickled, the disk was full)."""

    def fetch(self, name: str, key: str, dest: str, check: Callable[[Any], bool] | None = None) -> Any:
        """Put the entry ``name``/``key`` at the path ``dest`` (atomically: write a temporary
        file beside it, then rename); truthy when it did (an object with ``.url`` and
        ``.seconds`` has the engine's status line name where it came from and count the time). ``check(meta)`` says whether an entry's
        metadata is still valid here (its recorded files, its age). Never raises for a
        missing entry."""
        ...

    def publish(self, name: str, key: str, path: str) -> None:
        """Offer the entry just saved at ``path``; must not delay the program (queue it)."""
        ...


_tiers: list[Tier] = []


def add_tier(tier: Tier) -> None:
    """Consult ``tier`` after every local miss and feed it every local save, from now on (the
    remote tier of ``STATECACHE_REMOTE`` is added by the engine itself)."""
    if tier not in _tiers:
        _tiers.append(tier)


def remove_tier(tier: Tier) -> None:
    if tier in _tiers:
        _tiers.remove(tier)


def active_tiers(remote_url: str | None, shared: bool = True) -> list[Tier]:
    """The tiers added with ``add_tier``, then the remote tier of ``remote_url`` (``remote=``
    or ``STATECACHE_REMOTE``) if any; none at all when not ``shared`` (``remote=False``: nothing
    of this checkpoint leaves the machine, and nothing is fetched for it)."""
    if not shared:
        return []
    tiers = list(_tiers)
    if remote_url is not None:
        from .store.remote import engine_tier

        remote = engine_tier(remote_url)
        if remote is not None and remote not in tiers:
            tiers.append(remote)
    return tiers
