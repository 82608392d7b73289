# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "statecache",
#     "numpy>=1.26",
# ]
#
# [tool.uv.sources]
# statecache = { path = "..", editable = true }  # this checkout; drop the line once installed
# ///
"""One file, its dependencies inline (PEP 723): `uv run examples/pep723_example.py`, twice.

uv builds an environment with what the block above lists and runs the script; plain
`python examples/pep723_example.py` works too where statecache and numpy are installed. The
first run computes the embedding table (a few seconds) and saves it; the second restores it.
"""

import time

import numpy as np

import statecache as sc

VOCAB = 50_000
DIM = 64


def embed(vocab, dim, seed=0):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((vocab, dim)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    time.sleep(1.0)  # stands in for the rest of a slow setup
    return table


start = time.perf_counter()
with sc.checkpoint("embeddings"):
    table = embed(VOCAB, DIM)
print(f"setup took {time.perf_counter() - start:.2f} s")

# the part being iterated on
query = table[42]
nearest = np.argsort(table @ query)[-4:-1][::-1]
print("nearest to 42:", nearest.tolist())
