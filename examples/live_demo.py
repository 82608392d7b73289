"""Try `statecache live` on this file: `statecache live examples/live_demo.py`.

The setup takes a few seconds the first time. Then edit the last lines and save: the re-run
starts from the snapshot taken after the checkpoint, in milliseconds. Edit the setup and it
runs again; the branch() at the end tries two settings without touching `weights`.
"""

import time

import numpy as np

import statecache as sc

with sc.checkpoint("data"):
    time.sleep(3)  # stands in for loading a data set
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10_000, 50))
    y = X @ rng.normal(size=50) + rng.normal(scale=0.1, size=10_000)

weights = np.zeros(50)

# The part being iterated on: edit it and save.
for lr in (0.1, 0.3):
    with sc.branch() as run:
        for _ in range(20):
            weights -= lr * X.T @ (X @ weights - y) / len(y)
        run.keep(loss=float(np.mean((X @ weights - y) ** 2)))
    print(f"lr={lr}: loss {run.kept['loss']:.4f} (weights untouched: {not weights.any()})")
