"""statecache quickstart: run this file twice.

The first run computes the slow setup (a few seconds) and saves it; the second run restores it
in milliseconds and goes straight to the part you are iterating on. Edit `build_index` or
`CORPUS_SIZE` and run again: statecache notices and recomputes.
"""

import random
import time

import statecache as sc

CORPUS_SIZE = 200_000


def make_corpus(n):
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    return [" ".join(rng.choice(words) + str(rng.randrange(500)) for _ in range(12)) for _ in range(n)]


def build_index(corpus):
    index = {}
    for doc_id, doc in enumerate(corpus):
        for word in doc.split():
            index.setdefault(word, []).append(doc_id)
    time.sleep(1.5)  # stands in for the rest of a slow setup
    return index


started = time.perf_counter()
with sc.checkpoint("index"):
    corpus = make_corpus(CORPUS_SIZE)
    index = build_index(corpus)
print(f"setup took {time.perf_counter() - started:.2f} s")

# The interesting part: change it freely, the setup above stays cached.
query = "gamma42"
print(f"{query!r} appears in {len(index.get(query, []))} of {len(corpus)} documents")
