"""The names of the libraries that read files from compiled code, and of their readers.

Data only, so that the import watch (``key.importwatch``, installed at ``import statecache``)
can tell which modules to hand to ``key.readers.wrap_module`` right after they run, without
importing ``key.readers`` itself; ``key.readers`` wraps what is named here.
"""

from __future__ import annotations

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
    "torch": ("from_file",),  # C++ reads; torch.load opens its file with Python's open()
    "safetensors.torch": ("load_file",),  # Rust reads (safe_open)
    "safetensors.numpy": ("load_file",),
}

#: module -> its reader classes defined in Python, whose ``__init__`` takes the path after self
READER_CLASSES: dict[str, tuple[str, ...]] = {
    "pyarrow.parquet": ("ParquetFile", "ParquetDataset"),
}

#: module -> its compiled reader classes (which cannot be changed in place), each with its
#: methods that take the path first: the module's name for the class is pointed at a subclass
#: whose methods note the path, and which ``isinstance`` takes for the class itself
COMPILED_CLASSES: dict[str, dict[str, tuple[str, ...]]] = {
    "pyarrow": {"OSFile": ("__init__",)},
    "pyarrow.fs": {"LocalFileSystem": ("open_input_file", "open_input_stream")},
}

#: module -> its classes defined in Python with reader class methods inherited from compiled
#: code, which take the path first: wrapped in place on the class, which stays the same object
READER_CLASS_METHODS: dict[str, dict[str, tuple[str, ...]]] = {
    "torch": {"UntypedStorage": ("from_file",)},  # C++ reads (the TypedStorages call it)
}

#: libraries known to open files from compiled code that no wrapper sees
UNSEEN = ("h5py", "netCDF4", "tables", "h5netcdf", "lmdb", "fitsio", "duckdb")


def watch() -> None:
    """Have the import watch hand each module named here to ``readers.wrap_module`` right
    after it runs, and at once if it is loaded (which only then imports ``key.readers``).
    Called at ``import statecache``; calling it again does nothing new."""
    from .importwatch import after_import

    for name in {**READERS, **READER_CLASSES, **COMPILED_CLASSES, **READER_CLASS_METHODS}:
        after_import(name, f"{__package__}.readers:wrap_module")
