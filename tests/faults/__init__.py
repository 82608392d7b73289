"""Fault-injection tests: crashes, damage, concurrency, full disks, permissions, version skew.

The default run uses small trial counts; ``pytest -m extended tests/faults`` runs the large ones
(the README's "Guarantees" section gives the figures)."""
