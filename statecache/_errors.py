"""The exceptions statecache raises: one base class, so ``except StateCacheError`` catches all."""

from __future__ import annotations


class StateCacheError(Exception):
    """Base of every statecache error. The message says what happened, where, and the fix."""


class InvalidNameError(StateCacheError):
    """A checkpoint name that is not 1-100 of ``[A-Za-z0-9._-]`` or starts with ``.``."""


class ConfigError(StateCacheError):
    """A bad argument or environment variable value (``STATECACHE_*``)."""


class SourceNotFoundError(StateCacheError):
    """The source of a checkpoint block cannot be read (``python -c``, ``exec`` of a string)."""


class FingerprintError(StateCacheError):
    """An input value that cannot be fingerprinted; the message names it and suggests ``ignore=``."""


class EntryError(StateCacheError):
    """A cache entry that is damaged, truncated, foreign, from another version or wrongly signed."""


class BranchError(StateCacheError):
    """An exception raised in a ``branch()`` child, re-raised in the parent with its traceback."""

    def __init__(self, message: str, child_traceback: str = "", exitcode: int | None = None):
        super().__init__(message)
        self.child_traceback = child_traceback
        self.exitcode = exitcode


class UnpicklableError(StateCacheError):
    """State that none of pickle, cloudpickle and dill can serialise; ``names`` lists the culprits."""

    def __init__(self, message: str, names: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.names = list(names)


class UsageError(StateCacheError):
    """A mistake in the command line: exit code 2."""


class StateCacheWarning(UserWarning):
    """A cache problem that does not stop the program: a damaged entry, a full disk, an
    unpicklable variable. The program goes on with the state it computed."""
