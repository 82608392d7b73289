"""One entry file: metadata schema, binary format, codec, pickling chain, writer and reader."""
