"""GGUF files: the format (reader, writer), split shard sets, merging and chat-template rewrites.

Talks to nothing but files. The modules:

* ``format``     format facts as named constants, the header reader and the in-memory writer;
* ``shards``     llama.cpp's split naming and whole-set validation;
* ``fileio``     atomic outputs and the kernel-side copy loop, shared by every writer here;
* ``merge``      split shards -> one file (byte-identical to ``llama-gguf-split --merge``);
* ``retemplate`` a copy of a GGUF with another chat template.
"""

from __future__ import annotations

from ollamads.gguf.format import GGUFFile, GGUFWriter, read_gguf

__all__ = ["GGUFFile", "GGUFWriter", "read_gguf"]
