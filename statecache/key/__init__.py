"""What a key is made of: source and AST digests, value fingerprints, imports, data files and
random generators, and the one classifier of paths (interpreter, installed, user, data)."""
