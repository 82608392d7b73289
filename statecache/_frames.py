"""Frame tricks shared by ``checkpoint`` and ``branch``: skip the body of a running ``with``
block, and read or write the names of the frame that holds it.

Skipping: Python has no way for ``__enter__`` to skip the body, so, like marimo and the old
``withhacks``, we arm a trace function on the caller's frame. It raises ``SkipBody`` on the
frame's first *opcode* event, the instruction right after ``__enter__`` returns, which is the
first one the ``with``'s exception handler covers (checked on 3.10 to 3.13); the context
manager's ``__exit__`` swallows it. (A first *line* event is not enough: the ``NOP`` of a
``try:`` or ``pass`` opening the body lies outside every handler, and an exception raised there
escapes the ``with``; and a later line inside a ``try`` would run the body's ``except`` and
``finally`` clauses.) A tracer that was already installed (coverage, a debugger) keeps receiving
its events and is put back afterwards.

Writing: module and class frames hold a dict; function frames (before 3.13, PEP 667) keep fast
locals that a ``f_locals`` dict only mirrors, so writes go through ``PyFrame_LocalsToFast``.

Cells: ``frame_cells`` gives the cell objects of a function frame's variables that nested
functions close over (for a restored function to share them), read from the fast locals of
the CPython builds whose layout it checks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from types import FrameType

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

_CO_OPTIMIZED = 0x0001
_PEP667 = sys.version_info >= (3, 13)
_MISSING_CELL = object()


class SkipBody(Exception):
    """Raised by the trace function on the first opcode event of the frame after ``__enter__``
    returned (the body's first instruction); the context manager's ``__exit__`` swallows it."""


def _no_trace(frame: FrameType, event: str, arg: Any) -> None:
    """A global trace function that traces no new frame: it only switches tracing on."""
    return None


class ArmedSkip:
    """A skip armed on one frame; ``disarm()`` (call it from ``__exit__``) puts the tracers back.

    CPython switches tracing off entirely when a trace function raises, so the tracers that were
    installed before (coverage, a debugger) must be reinstalled after the ``SkipBody`` raise.
    """

    def __init__(self, frame: FrameType):
        self.frame = frame
        self.previous_global = sys.gettrace()
        self.previous_local = frame.f_trace
        self.previous_opcodes = frame.f_trace_opcodes
        self.armed = True
        frame.f_trace = self._local_trace
        frame.f_trace_lines = True
        frame.f_trace_opcodes = True
        sys.settrace(self._global_trace if self.previous_global is not None else _no_trace)

    def _local_trace(self, fr: FrameType, event: str, arg: Any) -> Any:
        if fr is self.frame and event == "opcode":
            fr.f_trace_opcodes = self.previous_opcodes
            raise SkipBody
        if event == "opcode" and not self.previous_opcodes:
            return self._local_trace
        if self.previous_local is not None:
            result = self.previous_local(fr, event, arg)
            return self._local_trace if result is not None else None
        return self._local_trace

    def _global_trace(self, fr: FrameType, event: str, arg: Any) -> Any:
        if self.previous_global is not None:
            return self.previous_global(fr, event, arg)  # type: ignore[arg-type]
        return None

    def disarm(self) -> None:
        """Put the previous tracers back (idempotent).

        With no previous tracer this is immediate. Otherwise the hand-back waits for the next
        event of the frame itself: a tracer such as coverage's keeps a stack of frames, and
        reinstalling it inside ``__exit__`` would show it returns of frames it never saw enter.
        """
        if not self.armed:
            return
        self.armed = False
        self.frame.f_trace_opcodes = self.previous_opcodes
        if self.previous_global is None and self.previous_local is None:
            self.frame.f_trace = None
            sys.settrace(None)
            return
        self.frame.f_trace = self._hand_back
        sys.settrace(_no_trace)

    def _hand_back(self, fr: FrameType, event: str, arg: Any) -> Any:
        if fr is not self.frame:
            return None
        fr.f_trace = self.previous_local
        sys.settrace(self.previous_global)
        if self.previous_local is not None:
            return self.previous_local(fr, event, arg)
        return None


def arm_skip(frame: FrameType) -> ArmedSkip:
    """Make the first opcode event of ``frame`` after this call (``__enter__`` returning into
    the ``with`` body) raise ``SkipBody``.

    Events of other frames go to whatever tracer was installed before. Call it last in
    ``__enter__``; the caller's ``__exit__`` must call ``disarm()`` on the result.
    """
    return ArmedSkip(frame)


def is_function_frame(frame: FrameType) -> bool:
    return bool(frame.f_code.co_flags & _CO_OPTIMIZED)


def write_names(frame: FrameType, values: Mapping[str, Any], unbind: Iterable[str] = ()) -> None:
    """Bind ``values`` (and unbind ``unbind``) in ``frame`` so that the code after it sees them."""
    unbind = [n for n in unbind if n not in values]
    if not is_function_frame(frame):
        namespace = frame.f_locals
        namespace.update(values)
        for name in unbind:
            namespace.pop(name, None)
        return
    if _PEP667:
        proxy = frame.f_locals
        for name, value in values.items():
            proxy[name] = value
        for name in unbind:
            try:
                del proxy[name]
            except (KeyError, ValueError):
                pass
        return
    import ctypes

    namespace = frame.f_locals  # a fresh snapshot of the fast locals
    namespace.update(values)
    for name in unbind:
        namespace.pop(name, None)
    ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(1))



def frame_cells(frame: FrameType) -> dict[str, Any] | None:
    """The cell objects of a running function frame's cell and free variables, by name, so
    that a function rebuilt by a hit can close over them (``main_functions``); None where this
    interpreter's frame layout is not one checked here (3.10 to 3.13, default builds) or the
    frame does not look as expected: then the caller must not pretend to share them.

    Python exposes only the cells' contents (``f_locals``, PEP 667's proxy included); the
    cells themselves are read from the frame's fast-locals array, whose place is checked
    against the frame's own code object and locals before any pointer in it is followed."""
    code = frame.f_code
    if not is_function_frame(frame) or not (code.co_cellvars or code.co_freevars):
        return {}
    try:
        slots = _fast_locals(frame)
    except (ValueError, OSError):
        return None
    if slots is None:
        return None
    return _cells_in(frame, slots)


def _slot_names(code: Any) -> list[str]:
    """The names of a code object's fast locals in the order of the frame's array."""
    if sys.version_info >= (3, 11):  # locals (arguments that are cells included), cells, frees
        varnames = set(code.co_varnames)
        return [*code.co_varnames, *(n for n in code.co_cellvars if n not in varnames), *code.co_freevars]
    return [*code.co_varnames, *code.co_cellvars, *code.co_freevars]


def _fast_locals(frame: FrameType) -> Any:
    """A ctypes array over the frame's fast locals (one pointer per ``_slot_names`` entry), or
    None when the frame's layout is not the expected one."""
    import ctypes

    if sys.version_info >= (3, 14) or ctypes.sizeof(ctypes.c_void_p) != 8 or not _default_build():
        return None
    head = object.__basicsize__  # PyObject_HEAD (16 in a default build)
    n = len(_slot_names(frame.f_code))
    word = ctypes.POINTER(ctypes.c_void_p)
    if sys.version_info < (3, 11):
        start = id(frame) + type(frame).__basicsize__ - 8  # f_localsplus ends the object
        if ctypes.cast(id(frame) + head + 16, word)[0] != id(frame.f_code):  # f_back, f_code
            return None
    else:
        data = ctypes.cast(id(frame) + head + 8, word)[0]  # f_back, then f_frame
        if not data:
            return None
        # _PyInterpreterFrame: the code object and frame_obj at these words, fast locals at 72
        code_at, frame_at = (4, 5) if sys.version_info < (3, 12) else (0, 6)
        words = ctypes.cast(data, word)
        if words[code_at] != id(frame.f_code) or words[frame_at] != id(frame):
            return None
        start = data + 72
    return ctypes.cast(start, ctypes.POINTER(ctypes.c_void_p * n))[0]


def _default_build() -> bool:
    """CPython built with the GIL: the frame layouts ``_fast_locals`` knows (not PyPy, whose
    frames are no C structs, nor a free-threaded build, whose object header differs)."""
    import sysconfig

    return sys.implementation.name == "cpython" and not sysconfig.get_config_var("Py_GIL_DISABLED")


def _cells_in(frame: FrameType, slots: Any) -> dict[str, Any] | None:
    """name -> cell of the frame's cell and free variables, after checking every plain local
    against ``f_locals`` (a wrong guess of the layout returns None before any pointer is
    followed)."""
    import ctypes
    import types

    code = frame.f_code
    names = _slot_names(code)
    cellish = set(code.co_cellvars) | set(code.co_freevars)
    values = frame.f_locals
    for index, name in enumerate(names):
        if name not in cellish and name in values and slots[index] != id(values[name]):
            return None
    type_at = object.__basicsize__ - 8  # ob_type closes PyObject_HEAD
    word = ctypes.POINTER(ctypes.c_void_p)
    cells: dict[str, Any] = {}
    for index, name in enumerate(names):
        pointer = slots[index]
        if name not in cellish or not pointer:
            continue
        if ctypes.cast(pointer + type_at, word)[0] != id(types.CellType):
            return None  # not made a cell yet (the frame is before MAKE_CELL): no sharing
        cell = ctypes.cast(pointer, ctypes.py_object).value
        content = _MISSING_CELL
        try:
            content = cell.cell_contents
        except ValueError:
            pass
        if values.get(name, _MISSING_CELL) is not content:
            return None
        cells[name] = cell
    return cells
