"""The package version, in one place: read by ``__init__``, the CLI and the entry writer."""

__version__ = "0.1.0"
