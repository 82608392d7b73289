"""The files a live loop watches, the script and the user's modules its runs imported, with
the text last seen of each: which of them a batch of saves changed in code."""

from __future__ import annotations

import ast
import os
import sys
from dataclasses import dataclass, field

from .plan import module_digest, read_text
from .terminal import say


@dataclass
class Edit:
    """What a batch of saves changed."""

    script: bool = False  # the script's text (its code may be the same)
    modules: set[str] = field(default_factory=set)  # modules whose code changed
    saved: float = 0.0  # the newest mtime among the changed files


class Sources:
    def __init__(self, script: str):
        self.script = script  # real path
        self.texts: dict[str, str] = {}
        self.digests: dict[str, str | None] = {}
        self.dirs: set[str] = set()

    @property
    def module_count(self) -> int:
        return len(self.texts) - 1

    def script_text(self) -> str:
        return self.texts[self.script]

    def watch(self, path: str) -> bool:
        """Start following ``path``; True when its folder is new (the watcher must widen)."""
        f = os.path.realpath(path)
        if f in self.texts:
            return False
        self.texts[f] = read_text(f) or ""
        if f != self.script:
            self.digests[f] = module_digest(f, self.texts[f])
        d = os.path.dirname(f)
        if d in self.dirs:
            return False
        self.dirs.add(d)
        return True

    def edits(self, paths: set[str]) -> Edit:
        """Read the watched files among ``paths``; report a module whose new text does not
        parse or changes nothing but comments and layout, and leave it out."""
        edit = Edit()
        for p in paths:
            real = os.path.realpath(p)
            if real not in self.texts:
                continue
            text = read_text(real)
            if text is None or text == self.texts[real]:
                continue
            self.texts[real] = text
            try:
                edit.saved = max(edit.saved, os.stat(real).st_mtime)
            except OSError:
                pass
            if real == self.script:
                edit.script = True
            elif self._module_changed(real, text):
                edit.modules.add(real)
        return edit

    def _module_changed(self, path: str, text: str) -> bool:
        digest = module_digest(path, text)
        if digest is None:
            print_syntax_error_of(path, text)
            say("waiting for the next save")
            return False
        if digest == self.digests.get(path):
            say(f"{os.path.basename(path)}: no change in code (comments or layout)")
            return False
        self.digests[path] = digest
        return True


def print_syntax_error(exc: SyntaxError) -> None:
    import traceback

    sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
    sys.stderr.flush()


def print_syntax_error_of(path: str, text: str) -> None:
    try:
        ast.parse(text, path)
    except SyntaxError as exc:
        print_syntax_error(exc)
