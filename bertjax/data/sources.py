"""Text sources: where pretraining text comes from, as a stream of documents.

A document is a `list[str]` of sentences: non-empty, cleaned strings. A `Source`
yields documents in a deterministic order, streaming with bounded memory, and counts
what it skipped, split or cleaned in `Source.stats` (a `SourceStats`). Spec forms:

  demo                              built-in demo corpus: ~6 MB of docstring prose of the
                                    stdlib and installed packages (see `DemoSource`)
  bert:GLOB                         one sentence per line, blank line between documents
                                    (the format of Google's create_pretraining_data.py)
  text:GLOB                         plain text; blank-line separated paragraphs are
                                    documents, split into sentences
  jsonl:GLOB#FIELD                  one JSON object per line, FIELD (default "text") holds
                                    a document's text; blank lines inside it separate
                                    paragraphs, which are split into sentences
  tfds:NAME[:SPLIT][#FEATURE]       a tensorflow-datasets text dataset, one example per
                                    document (default split "train", feature "text"), e.g.
                                    tfds:wikipedia/20230601.en:train#text, tfds:c4/en:3.1.0

GLOB is a path, a shell pattern (`**` recurses) or a directory (all files under it),
local or a gs:// URL (listed with bertjax.paths.glob and streamed, never copied whole);
files are read in sorted order, and .gz/.bz2/.xz files are decompressed on the fly.
The end of a file always ends a document.

Bad input never crashes a source; every repair is counted (fields of `SourceStats`):
invalid UTF-8 is replaced by U+FFFD, NUL and other control characters are removed,
whitespace is normalised to single spaces, lines and sentences over `MAX_LINE_CHARS`
and words over `MAX_WORD_CHARS` are split into pieces, documents over
`MAX_DOCUMENT_CHARS` are split, documents with no text left are skipped, and JSONL
lines that are not JSON objects with a string FIELD are skipped. The cleaning and the
sentence rule are text.py's; the demo corpus's text is demo_corpus.py's; `Source`,
`SourceStats` and the not-text check are source_base.py's.

Input that is mostly not text is refused instead (`source_base.NotTextError`, naming
the file and its counts): a file, TFDS dataset or whole source whose undecodable bytes,
control characters and U+FFFD are more than `max_bad_fraction` (default
MAX_BAD_FRACTION, 10%) of its characters; one over WARN_BAD_FRACTION (1%) is used and
reported once on stderr.
"""

from __future__ import annotations

import glob as globlib
import json
import os
import re
from collections.abc import Iterator
from typing import IO, Any

from bertjax import paths
from bertjax.data import demo_corpus as demo_corpus_lib
from bertjax.data.source_base import MAX_BAD_FRACTION, Source, SourceStats
from bertjax.data.text import (
    END,
    MAX_LINE_CHARS,
    clean_text,
    open_text,
    paragraph_events,
    pieces,
    string_pieces,
)

MAX_RECORD_CHARS = 64 << 20  # a longer JSONL line cannot be parsed in bounded memory: skipped


def _resolve_glob(spec: str, pattern: str) -> list[str]:
    """Sorted files matching `pattern` (a path, a glob, or a directory: every file
    under it); FileNotFoundError naming the spec when there are none."""
    if not pattern:
        raise ValueError(f"source {spec!r}: no path or glob after the kind")
    if paths.is_remote(pattern):
        if not set("*?[") & set(pattern) and paths.isdir(pattern):
            pattern = paths.join(pattern, "**")
        files = sorted(p for p in set(paths.glob(pattern)) if paths.isfile(p))
        if not files:
            raise FileNotFoundError(f"source {spec!r}: no files match {pattern}")
        return files
    pattern = os.path.expanduser(pattern)
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "**", "*")
    files = sorted({p for p in globlib.glob(pattern, recursive=True) if os.path.isfile(p)})
    if not files:
        raise FileNotFoundError(f"source {spec!r}: no files match {pattern}")
    return files


class _FileSource(Source):
    def __init__(
        self, spec: str, pattern: str, max_bad_fraction: float | None = MAX_BAD_FRACTION
    ) -> None:
        super().__init__(spec, max_bad_fraction)
        self.files = _resolve_glob(spec, pattern)

    def _events(self, stats: SourceStats) -> Iterator[str | None]:
        for path in self.files:
            stats.files += 1
            check = self._bad_text(path)
            with open_text(path) as f:
                for event in self._file_events(f, stats):
                    yield event
                    check.step()
            check.end()

    def _file_events(self, f: IO[str], stats: SourceStats) -> Iterator[str | None]:
        raise NotImplementedError


class BertSource(_FileSource):
    """One sentence per line, blank (whitespace-only) lines between documents. A long
    line's pieces are separate sentences; a line that cleans to nothing is dropped."""

    def _file_events(self, f: IO[str], stats: SourceStats) -> Iterator[str | None]:
        in_doc = False
        for raw in pieces(f, stats):
            if not raw.strip():
                if in_doc:
                    yield END
                in_doc = False
                continue
            in_doc = True
            line = clean_text(raw, stats)
            if line:
                yield line
        if in_doc:
            yield END


class TextSource(_FileSource):
    """Plain text: each blank-line separated paragraph is a document; its lines are
    joined and split into sentences."""

    def _file_events(self, f: IO[str], stats: SourceStats) -> Iterator[str | None]:
        return paragraph_events(pieces(f, stats), stats, paragraphs_are_documents=True)


class JsonlSource(_FileSource):
    """One JSON object per line; `field` holds a document's text (str). Blank lines are
    ignored; other lines that are not such objects are skipped and counted."""

    def __init__(
        self, spec: str, pattern: str, field: str, max_bad_fraction: float | None = MAX_BAD_FRACTION
    ) -> None:
        super().__init__(spec, pattern, max_bad_fraction)
        self.field = field

    def _file_events(self, f: IO[str], stats: SourceStats) -> Iterator[str | None]:
        while True:
            line = f.readline(MAX_RECORD_CHARS)
            if not line:
                return
            if not line.endswith("\n") and len(line) == MAX_RECORD_CHARS:
                stats.bad_records += 1  # too long to parse: skip the rest of the line
                while line and not line.endswith("\n"):
                    line = f.readline(MAX_LINE_CHARS)
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # JSONDecodeError, and lone surrogates in a str
                record = None
            text = record.get(self.field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                stats.bad_records += 1
                continue
            yield from paragraph_events(string_pieces(text, stats), stats, False)
            yield END


def _hide_gpus_from_tensorflow() -> None:
    """Keeps TensorFlow (tf.data under TFDS) off the accelerators, which JAX owns."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialised its devices
        pass


def _parse_tfds(spec: str, rest: str) -> tuple[str, str, str]:
    """(name, split, feature) of NAME[:VERSION][:SPLIT][#FEATURE]."""
    body, _, feature = rest.partition("#")
    m = re.fullmatch(r"(?P<name>[^:\[\]]+(?::\d[\d.*]*)?)(?::(?P<split>.+))?", body)
    if not m or (feature == "" and "#" in rest):
        raise ValueError(
            f"source {spec!r}: expected tfds:NAME[:SPLIT][#FEATURE], "
            "e.g. tfds:wikipedia/20230601.en:train#text"
        )
    return m.group("name"), m.group("split") or "train", feature or "text"


class TfdsSource(Source):
    """A tensorflow-datasets dataset, read with `tfds.builder(name)`: prepared first if
    needed (`download_and_prepare`, a no-op when the data is there), then read in file
    order (`shuffle_files=False`). One example is one document; its FEATURE (a text
    feature) is split into paragraphs and sentences like a JSONL field.

    The dataset is looked up in $TFDS_DATA_DIR (default ~/tensorflow_datasets), or in
    `data_dir` when given.
    """

    def __init__(
        self,
        spec: str,
        rest: str,
        data_dir: str | None = None,
        max_bad_fraction: float | None = MAX_BAD_FRACTION,
    ) -> None:
        super().__init__(spec, max_bad_fraction)
        self.name, self.split, self.feature = _parse_tfds(spec, rest)
        self.data_dir = data_dir
        self._builder = self._make_builder()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for worker processes: the builder is made again where it is used.
        return {**self.__dict__, "_builder": None}

    def _make_builder(self) -> Any:
        _hide_gpus_from_tensorflow()
        import tensorflow_datasets as tfds

        try:
            builder = tfds.builder(self.name, data_dir=self.data_dir)
        except Exception as e:  # DatasetNotFoundError, config/version errors, ...
            msg = str(e).strip().split("\n")[0][:200]  # not tfds' list of every dataset
            what = "unknown" if type(e).__name__ == "DatasetNotFoundError" else "cannot open"
            raise ValueError(
                f"source {self.spec!r}: {what} TFDS dataset {self.name!r} ({msg})"
            ) from e
        features = builder.info.features
        names = list(features.keys()) if hasattr(features, "keys") else []
        if self.feature not in names:
            raise ValueError(
                f"source {self.spec!r}: TFDS dataset {self.name} has no feature "
                f"{self.feature!r}; features: {names}"
            )
        return builder

    def _events(self, stats: SourceStats) -> Iterator[str | None]:
        import tensorflow_datasets as tfds

        from bertjax.data.tfds_load import prepare

        builder = prepare(self._builder or self._make_builder(), self.name)
        self._builder = builder
        try:
            ds = builder.as_dataset(split=self.split, shuffle_files=False)
        except (ValueError, KeyError) as e:
            msg = " ".join(str(e).split())[:300]
            raise ValueError(
                f"source {self.spec!r}: cannot read split {self.split!r} ({msg})"
            ) from e
        check = self._bad_text(self.spec)
        for example in tfds.as_numpy(ds):
            value = example[self.feature]
            if isinstance(value, bytes):
                value = value.decode("utf-8", "surrogateescape")
            yield from paragraph_events(string_pieces(str(value), stats), stats, False)
            yield END
            check.step()
        check.end()


# ---------------------------------------------------------------- demo corpus


class DemoSource(Source):
    """Real English prose that every bertjax installation already has, no download: the
    docstrings of the Python standard library (plus the language reference held in
    pydoc_data/topics.py), then those of the installed DEMO_PACKAGES (numpy, flax,
    optax, absl, ml_collections, jax, scipy, tensorflow), in sorted file order; the
    files are read as text, never imported. A docstring is a document; only its prose
    paragraphs are kept (no code, doctests, argument lists, tables), split into
    sentences; repeated docstrings count once. With Python 3.11 and requirements.txt
    that is ~24,000 documents, ~64,000 sentences, 5.8 MB, read in ~8 s of CPU.
    Stops after `max_bytes` of text when given; documents with less than `min_chars`
    characters of prose are left out."""

    def __init__(
        self, spec: str = "demo", max_bytes: int | None = None, min_chars: int = 0
    ) -> None:
        super().__init__(spec)
        self.max_bytes = max_bytes
        self.min_chars = min_chars

    def _bad_text(self, name: str) -> None:
        return None  # docstrings of installed packages: text, and not the user's to fix

    def _events(self, stats: SourceStats) -> Iterator[str | None]:
        seen: set[bytes] = set()  # repeated docstrings (inherited, generated) count once
        for path in demo_corpus_lib.files():
            stats.files += 1
            for text in demo_corpus_lib.prose_texts(path, self.min_chars, seen):
                yield from paragraph_events(string_pieces(text, stats), stats, False)
                yield END
                if self.max_bytes is not None and stats.bytes >= self.max_bytes:
                    return


def open_source(
    spec: str,
    *,
    tfds_data_dir: str | None = None,
    max_bad_fraction: float | None = MAX_BAD_FRACTION,
) -> Source:
    """The `Source` for `spec` (see the module docstring for the forms); its documents()
    refuse a file, dataset or source with more than `max_bad_fraction` bad characters
    (None: never; see MAX_BAD_FRACTION).

    Raises:
      ValueError: an unknown kind, a malformed spec, an unknown TFDS dataset or feature.
      FileNotFoundError: a GLOB that matches no file.
    """
    if spec == "demo":
        return DemoSource(spec)
    kind, sep, rest = spec.partition(":")
    if not sep:
        raise ValueError(
            f"source {spec!r}: expected demo, bert:GLOB, text:GLOB, jsonl:GLOB#FIELD or "
            "tfds:NAME[:SPLIT][#FEATURE]"
        )
    if max_bad_fraction is not None and not 0 <= max_bad_fraction:
        raise ValueError(
            f"data.max_bad_fraction={max_bad_fraction!r} must be >= 0 (1 accepts any input)"
        )
    if kind == "bert":
        return BertSource(spec, rest, max_bad_fraction)
    if kind == "text":
        return TextSource(spec, rest, max_bad_fraction)
    if kind == "jsonl":
        pattern, hash_, field = rest.rpartition("#") if "#" in rest else (rest, "", "text")
        if hash_ and not field:
            raise ValueError(f"source {spec!r}: empty FIELD after '#'")
        return JsonlSource(spec, pattern, field, max_bad_fraction)
    if kind == "tfds":
        return TfdsSource(spec, rest, data_dir=tfds_data_dir, max_bad_fraction=max_bad_fraction)
    raise ValueError(
        f"source {spec!r}: unknown kind {kind!r}; expected demo, bert, text, jsonl or tfds"
    )


def demo_corpus(max_bytes: int = 8 << 20, min_chars: int = 200) -> Iterator[str]:
    """Texts of the demo corpus's documents (sentences joined by spaces) with at least
    `min_chars` characters of prose, until `max_bytes` of text have been yielded."""
    for doc in DemoSource(max_bytes=max_bytes, min_chars=min_chars).documents():
        yield " ".join(doc)
