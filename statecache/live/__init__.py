"""``statecache live``: the edit-and-rerun loop on forked snapshots."""
