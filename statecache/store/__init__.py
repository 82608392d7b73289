"""A cache directory on disk: layout names, the Store (locks, versions) and maintenance."""
