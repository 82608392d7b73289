"""``statecache live``: the edit-and-rerun loop on forked snapshots.

Modules, each importing only those listed before it:

- ``terminal``: the loop's output, commands, and the terminal shared with the runs;
- ``protocol``: the typed messages between controller and workers, and their framing;
- ``plan``: a version of the script: statement digests (the keys' AST digest), snapshot
  points, the first changed statement;
- ``modules``: the user's modules a run imported;
- ``relocate``: compiling one statement at a time as ``python script.py`` would;
- ``runner``: one run, statement by statement; ``worker``: snapshots and the first worker;
- ``snapshots``, ``sources``, ``watcher``, ``group``: what the controller keeps: snapshots,
  watched files, the file watcher, the workers' process group;
- ``controller``: the loop; ``command``: ``add_parser``/``run`` for the CLI and ``main``.
"""
