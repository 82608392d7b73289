"""The names of the libraries that read files from compiled code, and of their readers.

Data only, so that the import watch (``key.importwatch``, installed at ``import statecache``)
can tell which modules to hand to ``key.readers.wrap_module`` right after they run, without
importing ``key.readers`` itself; ``key.readers`` wraps what is named here.
"""

from __future__ import annotations

#: the attribute that marks a function statecache put in place of a library's (a reader, a
#: stat, ``sqlite3.connect``): a key counts the function it wraps (``key.codegraph``), so that
#: a key does not depend on whether an earlier block wrapped it
READER_WRAPPER = "__statecache_reader__"

#: module -> its functions that take a path (first argument, or a keyword) and read it
READERS: dict[str, tuple[str, ...]] = {
    "pyarrow": ("memory_map", "input_stream"),
    "pyarrow.parquet": ("read_table", "read_pandas", "read_metadata", "read_schema"),
    "pyarrow.csv": ("read_csv", "open_csv"),
    "pyarrow.feather": ("read_table", "read_feather"),
    "pyarrow.ipc": ("open_file", "open_stream"),
    "pyarrow.json": ("read_json",),
    "pyarrow.orc": ("read_table",),
    "pyarrow.dataset": ("dataset",),
    "polars": (
        "read_csv", "read_csv_batched", "read_parquet", "read_parquet_schema", "read_ipc",
        "read_ipc_stream", "read_ipc_schema", "read_ndjson", "read_json", "read_avro",
        "read_excel", "read_ods", "read_delta", "read_lines", "read_parquet_metadata",
        "scan_csv", "scan_parquet", "scan_ipc", "scan_ndjson", "scan_delta", "scan_lines",
        "scan_iceberg", "scan_lance",
    ),
    "pyarrow.fs": ("copy_files",),
    "torch": ("from_file",),  # C++ reads; torch.load opens its file with Python's open()
    # Rust reads (safe_open); each module's load_file, as the module may have taken the
    # unwrapped safe_open (imported before statecache)
    "safetensors.torch": ("load_file",),
    "safetensors.numpy": ("load_file",),
    "safetensors.flax": ("load_file",),
    "safetensors.tensorflow": ("load_file",),
    "safetensors.paddle": ("load_file",),
    "safetensors.mlx": ("load_file",),
}

#: module -> its compiled classes whose constructor takes the path first and which cannot be
#: subclassed (Rust's): the module's name for the class is pointed at a stand-in whose call
#: notes the path and makes the class's own object, which ``isinstance`` takes for the class
READER_FACTORIES: dict[str, tuple[str, ...]] = {
    "safetensors": ("safe_open",),
}

#: module -> its functions that run the plans of the polars ``LazyFrame``s they are given
PLAN_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "polars": ("collect_all", "collect_all_async", "explain_all"),
}

#: the ``LazyFrame`` methods that run its plan or resolve its schema, reading what it scans
#: (the ``schema``, ``columns``, ``dtypes`` and ``width`` properties call ``collect_schema``)
LAZY_METHODS = (
    "collect", "collect_async", "collect_batches", "collect_schema", "sink_batches", "sink_parquet",
    "sink_csv", "sink_ipc", "sink_ndjson", "sink_delta", "sink_iceberg", "explain", "describe",
    "show", "show_graph", "profile", "fetch", "execute", "pipe_with_schema", "_collect_eager",
)

#: module -> its reader classes defined in Python, whose ``__init__`` takes the path after self
READER_CLASSES: dict[str, tuple[str, ...]] = {
    "pyarrow.parquet": ("ParquetFile", "ParquetDataset"),
    "pyarrow.orc": ("ORCFile",),
    "pyarrow.ipc": ("RecordBatchFileReader", "RecordBatchStreamReader"),
}

#: module -> its compiled reader classes (which cannot be changed in place), each with its
#: methods that take the path first: the module's name for the class is pointed at a subclass
#: whose methods note the path, and which ``isinstance`` takes for the class itself
COMPILED_CLASSES: dict[str, dict[str, tuple[str, ...]]] = {
    "pyarrow": {"OSFile": ("__init__",)},
    # FileSystem.from_uri("file://...") returns the seen LocalFileSystem
    "pyarrow.fs": {"LocalFileSystem": ("open_input_file", "open_input_stream", "copy_file", "get_file_info",
                                       "from_uri"),
                   "FileSystem": ("from_uri",),
                   # paths below its root, noted where they are when it is over a local one
                   "SubTreeFileSystem": ("open_input_file", "open_input_stream", "copy_file", "get_file_info")},
}

#: module -> its classes defined in Python with reader class methods (their own, or inherited
#: from compiled code), which take the path first: wrapped in place on the class, which stays
#: the same object
READER_CLASS_METHODS: dict[str, dict[str, tuple[str, ...]]] = {
    "torch": {"UntypedStorage": ("from_file",)},  # C++ reads (the TypedStorages call it)
    # Rust reads a path given as a str or Path (a file object is read by Python)
    "polars": {"DataFrame": ("deserialize",), "LazyFrame": ("deserialize",), "Expr": ("deserialize",)},
}

#: libraries known to open files from compiled code that no wrapper sees
UNSEEN = ("h5py", "netCDF4", "tables", "h5netcdf", "lmdb", "fitsio", "duckdb")

#: the modules whose loading makes ``wrap_module`` run for them
WATCHED = (*READERS, *READER_CLASSES, *COMPILED_CLASSES, *READER_CLASS_METHODS, *READER_FACTORIES,
           *PLAN_FUNCTIONS)


def watch() -> None:
    """Have the import watch hand each module named here to ``readers.wrap_module`` right
    after it runs, and at once if it is loaded (which only then imports ``key.readers``).
    Called at ``import statecache``; calling it again does nothing new."""
    from .importwatch import after_import

    for name in dict.fromkeys(WATCHED):
        after_import(name, f"{__package__}.readers:wrap_module")
