"""Process state that code reads without naming it as a variable: environment variables, the
whole environment, the working directory, the command line. One scan of the code's AST and one
reading of the current values, used for a block's own body (``key.inputs``) and for every
helper function of the user's that the key reaches (``key.codegraph``), so that the rule is the
same wherever the read happens.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Iterable

from .stdin import LABEL as STDIN_LABEL
from .stdin import reads_stdin, stdin_value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

#: Variables of the environment that change between shells and sessions without changing what
#: a program computes: left out when a block reads the whole environment.
VOLATILE_ENVIRON = frozenset({
    "_", "OLDPWD", "PWD", "SHLVL", "COLUMNS", "LINES", "TERM_SESSION_ID", "WINDOWID", "SSH_CLIENT",
    "SSH_CONNECTION", "SSH_TTY", "SSH_AUTH_SOCK", "TMUX", "TMUX_PANE", "STY", "PS1", "PROMPT_COMMAND",
    "SECURITYSESSIONID", "XDG_SESSION_ID", "DBUS_SESSION_BUS_ADDRESS",
})

#: Names of calls whose result depends on the working directory.
CWD_CALLS = frozenset({"getcwd", "getcwdb", "cwd", "resolve", "absolute", "abspath", "realpath"})
#: Names through which code reaches standard input, when only its names are known.
STDIN_NAMES = frozenset({"stdin", "__stdin__", "input", "fileinput"})
#: Names through which code reaches the environment.
ENVIRON_NAMES = frozenset({"environ", "environb", "getenv", "getenvb"})
# os.environ methods that take a key (a constant one is read as that variable) or only write.
_KEYED = frozenset({"get", "setdefault", "pop", "__contains__", "__getitem__"})
_WRITES = frozenset({"update", "clear", "__setitem__", "__delitem__"})

_HOME = ("USERPROFILE", "HOMEDRIVE", "HOMEPATH") if os.name == "nt" else ("HOME",)
_TEMP = ("TMPDIR", "TEMP", "TMP")
#: Standard-library calls that read environment variables inside the standard library, by the
#: called name: the variables each reads (``stdlib_reads`` applies their arguments: a ``path=``
#: or ``dir=`` given, or a constant path without ``~``, reads none).
STDLIB_ENV_CALLS: dict[str, tuple[str, ...]] = {
    "home": _HOME, "expanduser": _HOME,
    "getuser": ("LOGNAME", "USER", "LNAME", "USERNAME"),
    **dict.fromkeys(("gettempdir", "gettempdirb", "mkstemp", "mkdtemp", "mktemp", "NamedTemporaryFile",
                     "TemporaryDirectory", "TemporaryFile"), _TEMP),
    "which": ("PATH", "PATHEXT") if os.name == "nt" else ("PATH",),
}
#: The call whose argument names the variables it reads; a computed argument reads any of them.
EXPANDVARS = "expandvars"
_VARIABLE = re.compile(r"\$(\w+)|\$\{([^}]*)\}" + (r"|%([^%]*)%" if os.name == "nt" else ""))
#: Calls whose result is local time, which the C library takes from $TZ or the system's zone file.
LOCALTIME_CALLS = frozenset({"localtime", "mktime", "ctime", "asctime", "strftime", "fromtimestamp", "now",
                             "today", "astimezone", "timestamp"})
# Where those that can take a zone take it as an argument, which makes them read none.
_ZONE_ARGUMENT = {"fromtimestamp": 1, "now": 0, "astimezone": 0}


def is_environ(node: ast.AST) -> bool:
    """``os.environ`` or a bare ``environ`` (``from os import environ``)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ")


def _constant(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def keyed_environ(node: ast.AST) -> tuple[str | None, ast.AST | None]:
    """(the constant key, the ``os.environ`` node) when ``node`` reads or writes one variable
    (``os.environ["K"]``, ``.get("K")``, ``"K" in os.environ``) or only writes (``.update``);
    (the key, None) for ``os.getenv("K")``; (None, None) otherwise. A key that is not a constant
    reads the whole environment."""
    if isinstance(node, ast.Subscript) and is_environ(node.value):
        key = _constant(node.slice)
        return (key, node.value) if key is not None else (None, None)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)):
        key = _constant(node.left)
        if key is not None and is_environ(node.comparators[0]):
            return key, node.comparators[0]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_environ(node.func.value):
        if node.func.attr in _WRITES:
            return None, node.func.value
        key = _constant(node.args[0]) if node.args and node.func.attr in _KEYED else None
        if key is not None:
            return key, node.func.value
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name == "getenv":
            return _constant(node.args[0]), None
    return None, None


def _called_name(node: ast.Call) -> str | None:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def stdlib_reads(node: ast.AST) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(environment variables, kinds of process state) that a call of the standard library
    reads inside it (``STDLIB_ENV_CALLS``, ``EXPANDVARS``, ``LOCALTIME_CALLS``): ``Path.home()``
    reads $HOME, ``os.path.expandvars('$D/x')`` reads $D and, with a computed argument, the whole
    environment; ``datetime.fromtimestamp(t)`` reads the local timezone."""
    if not isinstance(node, ast.Call):
        return (), ()
    name = _called_name(node)
    if name == EXPANDVARS and node.args:
        text = _constant(node.args[0])
        if text is None:
            return (), ("environ",)
        return tuple(dict.fromkeys(next(g for g in m.groups() if g is not None)
                                   for m in _VARIABLE.finditer(text))), ()
    if name in LOCALTIME_CALLS:
        zoned = len(node.args) > _ZONE_ARGUMENT.get(name, len(node.args)) or any(k.arg == "tz" for k in node.keywords)
        return ((), ()) if zoned else (("TZ",), ("timezone",))
    variables = STDLIB_ENV_CALLS.get(name or "")
    if not variables or any(k.arg in ("path", "dir") for k in node.keywords):
        return (), ()
    path = _constant(node.args[0]) if name == "expanduser" and node.args else None
    return ((), ()) if path is not None and not path.startswith("~") else (variables, ())


def scan(nodes: Iterable[ast.AST]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(environment variables read with a constant key, the kinds of wider process state read:
    ``"cwd"`` for a call that resolves against the working directory, ``"environ"`` for the
    environment used otherwise: ``dict(os.environ)``, a loop, a computed key; ``"stdin"`` for
    standard input, ``key.stdin.reads_stdin``)."""
    keys: dict[str, None] = {}
    kinds: set[str] = set()
    skip: set[int] = set()  # os.environ nodes read with a constant key, or only written
    walked = [node for root in nodes for node in ast.walk(root)]
    for node in walked:
        key, environ = keyed_environ(node)
        if environ is not None:
            skip.add(id(environ))
        if key is not None:
            keys.setdefault(key, None)
        elif isinstance(node, ast.Call) and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "getenv")
            or (isinstance(node.func, ast.Name) and node.func.id == "getenv")
        ):
            kinds.add("environ")  # os.getenv(name) with a computed name
        read_keys, read_kinds = stdlib_reads(node)
        for read in read_keys:
            keys.setdefault(read, None)
        kinds.update(read_kinds)
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        if name in CWD_CALLS:
            kinds.add("cwd")
        if reads_stdin(node):
            kinds.add("stdin")
    for node in walked:
        if is_environ(node) and id(node) not in skip:
            kinds.add("environ")
    return tuple(keys), tuple(sorted(kinds))


def scan_names(names: Iterable[str]) -> tuple[str, ...]:
    """The kinds of process state that code mentioning ``names`` (its global and attribute
    names, as bytecode lists them) may read, when its source is unknown: any environment access
    reads the whole environment (when in doubt, miss)."""
    found = set(names)
    kinds = set()
    if found & CWD_CALLS:
        kinds.add("cwd")
    if found & (ENVIRON_NAMES | STDLIB_ENV_CALLS.keys() | {EXPANDVARS}):
        kinds.add("environ")
    if found & LOCALTIME_CALLS:
        kinds.add("timezone")
    if found & STDIN_NAMES:
        kinds.add("stdin")
    return tuple(sorted(kinds))


def ipython_shell() -> Any:
    """The IPython shell running this process, or None (IPython is never imported here)."""
    get = getattr(sys.modules.get("IPython"), "get_ipython", None)
    return get() if callable(get) else None


def in_ipython() -> bool:
    """Whether an IPython shell is running this process."""
    return ipython_shell() is not None


def argv_is_launch_line() -> bool:
    """Under IPython, whether ``sys.argv`` is still the shell's own launch line (new at every
    kernel start, so no input): its arguments are the tail of the interpreter's command line.
    ``%run script.py ARGS`` sets ``sys.argv`` to the script's, which are an input again."""
    args = sys.argv[1:]
    orig = list(getattr(sys, "orig_argv", ()))
    return not args or orig[len(orig) - len(args):] == args


def process_value(kind: str) -> tuple[str, Any]:
    """The label and current value of one kind of process state (``"argv"``, ``"cwd"``,
    ``"timezone"``: the zone the time module reads at start from $TZ or the system's zone file,
    ``"stdin"``: what standard input will give, ``key.stdin.stdin_value``, ``"environ"``)."""
    if kind == "argv":
        return "sys.argv[1:]", list(sys.argv[1:])
    if kind == "cwd":
        return "working directory", os.getcwd()
    if kind == "timezone":
        import time

        return "local timezone", [list(time.tzname), time.timezone, time.altzone, time.daylight]
    if kind == "stdin":
        return STDIN_LABEL, stdin_value()
    return "os.environ", {
        k: v for k, v in os.environ.items() if k not in VOLATILE_ENVIRON and not k.startswith("STATECACHE_")
    }


def environ_label(key: str) -> str:
    """How an environment variable read with a constant key is named among the inputs."""
    return f"os.environ[{key!r}]"


def current_values(keys: Iterable[str], kinds: Iterable[str]) -> list[tuple[str, Any]]:
    """(label, current value) of what a ``scan`` found: each environment variable read with a
    constant key (None when unset), then each kind of process state (``process_value``). The
    values a key counts for those reads, wherever the code that reads them is."""
    found: list[tuple[str, Any]] = [(environ_label(key), os.environ.get(key)) for key in keys]
    return found + [process_value(kind) for kind in kinds]
