"""Chunks of documents, as the main process reads them and sends them to workers.

`read_chunks` cuts the source's documents into chunks of `docs_per_shard` non-empty
documents (fewer once their text reaches MAX_CHUNK_BYTES), each a `PackedChunk` (its
sentences as UTF-8 in one buffer) with the sha256 of its text, and counts what it saw
(`InputStats`); one shard is made of one chunk. `worker_memory` bounds what a worker
allocates to build a chunk's shard, and `chunk_memory` is what the main process charges
a chunk in flight against max_inflight_mb (prepare.py).
"""

from __future__ import annotations

import array
import dataclasses
import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

# A chunk (= shard) also ends once its text reaches this many bytes, which bounds what
# one worker holds (chunks.worker_memory) on a corpus of huge documents. Chunks of
# docs_per_shard ordinary documents stay under it (2,000 Wikipedia articles: ~6 MB).
MAX_CHUNK_BYTES = 8 << 20


class PackedChunk:
    """A chunk's documents as the main process holds and sends them: the UTF-8 of every
    sentence ("surrogatepass": a lone surrogate survives) in one buffer, the byte length
    of each sentence and the sentence count of each document. About one byte of memory
    per byte of text plus 8 per sentence and per document, where lists of str take 1 to
    4 bytes per character (the widest character of a string decides) and ~60 more per
    sentence; `documents()` gives the lists back, one document at a time."""

    def __init__(self) -> None:
        self.text = bytearray()
        self.sentence_bytes = array.array("q")  # bytes of each sentence
        self.doc_sentences = array.array("q")  # sentences of each document

    def add(self, sentences: list[bytes]) -> None:
        """Appends a document: its sentences, UTF-8 encoded."""
        for b in sentences:
            self.text += b
            self.sentence_bytes.append(len(b))
        self.doc_sentences.append(len(sentences))

    def __len__(self) -> int:
        return len(self.doc_sentences)

    @property
    def nbytes(self) -> int:
        """Memory held (the text and the two length arrays)."""
        return len(self.text) + 8 * (len(self.sentence_bytes) + len(self.doc_sentences))

    def documents(self) -> Iterator[list[str]]:
        view, pos, k = memoryview(self.text), 0, 0
        for n in self.doc_sentences:
            doc = []
            for b in self.sentence_bytes[k : k + n]:
                doc.append(str(view[pos : pos + b], "utf-8", "surrogatepass"))
                pos += b
            k += n
            yield doc


# What a worker allocates for a chunk (`worker_memory`), at the worst density of one
# token a byte of text (punctuation runs; English prose is ~0.25): per byte, the text
# twice while it arrives and its tokens (int32); per instance ~1.2 KB of Python objects
# (one pass's instances at a time: max_seq_length tokens each, and at most one more per
# sentence); per byte and pass, the packed examples (uint16 ids, int8 types, masked
# positions and ids); and a fixed part for the tokenizer's batch of 2^16 characters and
# the slice of 2^16 tokens being encoded. Fitted to hostile corpora with a margin of
# about 1.2 (benchmarks/RESULTS.md, "Memory of prepare data").
_TEXT_COST = 8  # bytes per byte of text
_INSTANCE_COST = 1400  # bytes per instance
_PASS_COST = 7  # bytes per byte of text, per pass
_FIXED_COST = 32 << 20  # bytes


def worker_memory(chunk: PackedChunk, settings: dict[str, Any]) -> int:
    """Most bytes a worker allocates for `chunk` beyond what it holds between chunks, for
    any text (a token per byte at most), under `settings` (the output settings)."""
    passes = settings["dupe_factor"] if settings["masking"] == "static" else 1
    per_byte = _TEXT_COST + _INSTANCE_COST / settings["max_seq_length"] + passes * _PASS_COST
    extra_instances = len(chunk.sentence_bytes)  # a sentence may end one early
    return int(chunk.nbytes * per_byte + extra_instances * _INSTANCE_COST + _FIXED_COST)


def chunk_memory(chunk: PackedChunk, output_settings: dict[str, Any]) -> int:
    """What a chunk in flight is charged against max_inflight_mb (bytes): held here twice
    (the chunk, and its pickle on the way to a worker) plus what the worker allocates to
    build its shard (`chunks.worker_memory`, an upper bound for any text)."""
    return 2 * chunk.nbytes + worker_memory(chunk, output_settings)


@dataclasses.dataclass
class InputStats:
    """What the main process saw of the source."""

    documents: int = 0  # documents read
    sentences: int = 0  # string sentences read
    bytes: int = 0  # UTF-8 bytes of those sentences
    empty_documents: int = 0  # no non-blank string sentence: skipped
    invalid_documents: int = 0  # not a list of sentences: skipped
    invalid_sentences: int = 0  # not a string: skipped
    chunks: int = 0
    shards_written: int = 0
    shards_reused: int = 0  # resumed: already written by an earlier run


def read_chunks(
    documents: Iterator[Any], docs_per_shard: int, stats: InputStats, tick: Any
) -> Iterator[tuple[PackedChunk, str]]:
    """(chunk, sha256 of its text) for every `docs_per_shard` non-empty documents, or
    fewer once their text reaches MAX_CHUNK_BYTES (the last chunk may be smaller);
    `tick()` after each document."""
    chunk = PackedChunk()
    h = hashlib.sha256()
    for doc in documents:
        if _clean_document(doc, stats, h, chunk):
            if len(chunk) == docs_per_shard or len(chunk.text) >= MAX_CHUNK_BYTES:
                yield chunk, h.hexdigest()
                chunk, h = PackedChunk(), hashlib.sha256()
        tick()
    if len(chunk):
        yield chunk, h.hexdigest()


def _clean_document(doc: Any, stats: InputStats, h: Any, chunk: PackedChunk) -> bool:
    """Adds the document's string sentences to `chunk` (hashing them into `h`); False
    when it is skipped."""
    stats.documents += 1
    if isinstance(doc, str):
        doc = [doc]
    elif not isinstance(doc, Iterable):
        stats.invalid_documents += 1
        return False
    sentences, blank = [], True
    for s in doc:
        if not isinstance(s, str):
            stats.invalid_sentences += 1
            continue
        sentences.append(s)
        if blank and s and not s.isspace():
            blank = False
    if blank:
        stats.empty_documents += 1
        return False
    encoded = []
    for s in sentences:
        b = s.encode("utf-8", "surrogatepass")
        stats.bytes += len(b)
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
        encoded.append(b)
    h.update(b"\xff" * 8)  # document end
    stats.sentences += len(sentences)
    chunk.add(encoded)
    return True
