"""The ``statecache`` command: parser, plugins and one module per command group."""
