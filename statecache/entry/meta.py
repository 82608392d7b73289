"""The entry metadata schema: what the JSON section of an entry holds, and its one parser.

Every module that writes or reads metadata (the writer, the reader, the engine, the command
line, maintenance, IPython) uses ``EntryMeta`` and gets it through ``parse_meta``, so a field
has one name and one type everywhere. The types are TypedDicts for the type checker: at run
time the metadata stays the plain dict that ``json`` produced (``meta.get("unbound", [])``
keeps working), and fields this schema does not name pass through untouched (a newer writer
may add some).

``parse_meta`` checks the type of every field it knows, recursively. JSON that is valid but
has a wrong type inside (a hand edit, a foreign tool, damage that kept the checksum) raises
EntryError naming the field: the caller turns that into a miss with a warning, never a crash
further down and never a wrong hit.
"""

from __future__ import annotations

from .._errors import EntryError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

# the kinds of recorded data-file records: inputs (a file, a listing, a file found absent) and
# "output", a file the block wrote, which a hit needs to find (entries made before it have none)
FILE_KINDS = ("file", "dir", "missing", "output")


# The records are TypedDicts for the type checker only: at run time each name is ``dict``
# (what ``json`` gives and what calling a TypedDict returns). Building them costs more than a
# millisecond of import on every first hit (typing compiles each string annotation).
if TYPE_CHECKING:
    from typing import TypedDict

    class SourceRecord(TypedDict):
        """Where the checkpoint is: the file holding it and the line of the ``with``/``def``."""

        file: str
        line: int

    class FileRecord(TypedDict, total=False):
        """One data file or directory listing the computation read, or one file it wrote
        (kind "output": only the path, and where to look for it; see ``key.files``)."""

        path: str  # absolute
        kind: str  # one of FILE_KINDS
        size: int  # "file" only
        mtime_ns: int  # "file" only
        digest: str  # "file" and "dir": content (or listing) digest, hex
        racy: bool  # modified too close to its recording: always re-read the content
        relative: str  # the relative path it was opened by (another cwd is another file)

    class VariableRecord(TypedDict):
        """One saved variable: its type's qualified name and its pickled size in bytes."""

        type: str
        size: int

    class _RngFields(TypedDict):
        before: str
        after: Any

    class RngRecord(_RngFields, total=False):
        """A random generator the computation advanced: its fingerprint before, its state after;
        ``seeded`` when the code seeded it before drawing (then its state before is not checked)."""

        seeded: bool

    class EffectsRecord(TypedDict, total=False):
        """What the computing run changed in the process, replayed on a hit (see ``_effects``)."""

        path_added: list[dict[str, Any]]  # {"entry": str, "before": the entry it precedes, or None}
        path_removed: list[str]
        argv: list[str]  # sys.argv after the run
        environ_set: dict[str, str]
        environ_unset: list[str]
        settings: dict[str, dict[str, Any]]  # registry -> setting -> plain value (_registries)
        atexit: list[str]  # functions registered at exit, pickled by value (base64)
        unreplayable: list[str]  # what a hit cannot set again, named
        stdin_position: int  # where the block left a regular-file standard input

    class BlockSource(TypedDict):
        """The lines of a checkpoint block as it was computed: ``with`` line first."""

        first_line: int
        text: str

    class EntryMeta(TypedDict, total=False):
        """The metadata of one entry. The first group is the caller's (the engine), the second is
        added by the writer; ``cell``/``cell_outputs`` come from ``%%checkpoint`` only."""

        name: str
        key: str
        kind: str  # "checkpoint", "cached_setup", "cell"
        source: SourceRecord
        created: float  # seconds since the epoch
        compute_seconds: float
        files: list[FileRecord]
        components: dict[str, Any]  # the key's components (their contents belong to key/)
        unbound: list[str]  # names the block deleted
        rng: dict[str, RngRecord]
        cell: str
        cell_outputs: list[dict[str, Any]]
        effects: EffectsRecord
        block_source: BlockSource  # the block's text as computed, for `show --explain`'s line diff
        root_paths: dict[str, Any]  # {"root": str, "names": [str]}: key.rootpaths.root_record

        format: int
        pickler: str
        variables: dict[str, VariableRecord]
        state_size: int
        python: str  # "3.11"
        statecache_version: str
        signed: bool

else:
    SourceRecord = FileRecord = VariableRecord = RngRecord = EffectsRecord = dict
    BlockSource = EntryMeta = dict


# An expected JSON type is a Python type (checked exactly: JSON gives exact types, and a bool
# is not an int here), a tuple of types, or a checker function for a nested record. The checks
# are plain ``type() is`` tests: ``ls`` parses the metadata of every entry in the cache.
_NUMBER = (int, float)
_NAMES = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
          list: "array", dict: "object"}


def _type_name(value: Any) -> str:
    return _NAMES.get(type(value), type(value).__name__)


def _expected_name(expected: Any) -> str:
    if isinstance(expected, tuple):
        return "number"
    return _NAMES.get(expected, "object")


def _check(field: str, value: Any, expected: Any) -> None:
    if type(expected) is type:
        if type(value) is not expected:
            raise _fail(field, value, _expected_name(expected))
    elif type(expected) is tuple:
        if type(value) not in expected:
            raise _fail(field, value, _expected_name(expected))
    else:
        expected(field, value)


def _fail(field: str, value: Any, expected: str) -> EntryError:
    return EntryError(f"metadata field {field!r} is {_type_name(value)}, expected {expected}")


def _check_record(field: str, value: Any, fields: dict[str, Any], required: tuple[str, ...]) -> None:
    if type(value) is not dict:
        raise _fail(field, value, "object")
    for name in required:
        if name not in value:
            raise EntryError(f"metadata field {field!r} has no {name!r}")
    for name, expected in fields.items():
        if name in value:
            v = value[name]
            if type(v) is not expected:  # the field's name is built only when needed
                _check(f"{field}.{name}", v, expected)


def _list_of(item: Any) -> Any:
    def check(field: str, value: Any) -> None:
        if type(value) is not list:
            raise _fail(field, value, "array")
        for i, element in enumerate(value):
            if type(element) is not item:
                _check(f"{field}[{i}]", element, item)

    return check


def _dict_of(item: Any) -> Any:
    def check(field: str, value: Any) -> None:
        if type(value) is not dict:
            raise _fail(field, value, "object")
        for name, element in value.items():
            if type(element) is not item:
                _check(f"{field}[{name!r}]", element, item)

    return check


def _record(fields: dict[str, Any], required: tuple[str, ...]) -> Any:
    """A checker for a JSON object with these typed fields (extra fields are allowed)."""

    def check(field: str, value: Any) -> None:
        _check_record(field, value, fields, required)

    return check


_FILE_FIELDS = {"path": str, "kind": str, "size": int, "mtime_ns": int, "digest": str,
                "racy": bool, "relative": str}
_FILE_KEYS = ("path", "kind")
_FILE_REQUIRED = {"file": ("size", "mtime_ns", "digest"), "dir": ("digest",), "missing": (), "output": ()}


def _file_record(field: str, value: Any) -> None:
    _check_record(field, value, _FILE_FIELDS, _FILE_KEYS)
    kind = value["kind"]
    if kind not in _FILE_REQUIRED:
        raise EntryError(f"metadata field {field + '.kind'!r} is {kind!r}, expected one of "
                         f"{', '.join(FILE_KINDS)}")
    for name in _FILE_REQUIRED[kind]:
        if name not in value:
            raise EntryError(f"metadata field {field!r} (a {kind!r} record) has no {name!r}")


def _variable(field: str, value: Any) -> None:
    if type(value) is dict and type(value.get("type")) is str and type(value.get("size")) is int:
        return  # the common case, fast: every entry has one record per saved variable
    _check_record(field, value, {"type": str, "size": int}, ("type", "size"))


_TOP: dict[str, Any] = dict(
    name=str,
    key=str,
    kind=str,
    source=_record({"file": str, "line": int}, ("file", "line")),
    created=_NUMBER,
    compute_seconds=_NUMBER,
    files=_list_of(_file_record),
    components=dict,
    unbound=_list_of(str),
    rng=_dict_of(_record({"before": str, "seeded": bool}, ("before", "after"))),
    cell=str,
    cell_outputs=_list_of(dict),
    block_source=_record({"first_line": int, "text": str}, ("first_line", "text")),
    root_paths=_record({"root": str, "names": _list_of(str)}, ("root", "names")),
    effects=_record({"path_added": _list_of(dict), "path_removed": _list_of(str), "argv": _list_of(str),
                     "environ_set": _dict_of(str), "environ_unset": _list_of(str),
                     "settings": _dict_of(dict), "atexit": _list_of(str), "unreplayable": _list_of(str), "stdin_position": int}, ()),
    format=int,
    pickler=str,
    variables=_dict_of(_variable),
    state_size=int,
    python=str,
    statecache_version=str,
    signed=bool,
)

WRITER_FIELDS = ("format", "pickler", "variables", "state_size", "python", "statecache_version",
                 "signed")  # what write_entry adds: present in every entry it wrote


def parse_meta(raw: object) -> EntryMeta:
    """``raw`` (decoded JSON) checked against the schema and returned as EntryMeta (the same
    dict). Raises EntryError naming the first bad or missing field."""
    if not isinstance(raw, dict):
        raise EntryError(f"metadata is {_type_name(raw)}, expected object")
    for name in WRITER_FIELDS:
        if name not in raw:
            raise EntryError(f"metadata has no {name!r} field")
    for name, value in raw.items():
        expected = _TOP.get(name)
        if expected is not None:
            _check(name, value, expected)
    checked: EntryMeta = raw  # type: ignore[assignment]  # a TypedDict to mypy only: no typing.cast at run time
    return checked
