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

GLOB is a path, a shell pattern (`**` recurses) or a directory (all files under it);
files are read in sorted order, and .gz/.bz2/.xz files are decompressed on the fly.
The end of a file always ends a document.

Bad input never crashes a source; every repair is counted (fields of `SourceStats`):
invalid UTF-8 is replaced by U+FFFD, NUL and other control characters are removed,
whitespace is normalised to single spaces, lines and sentences over `MAX_LINE_CHARS`
and words over `MAX_WORD_CHARS` are split into pieces, documents over
`MAX_DOCUMENT_CHARS` are split, documents with no text left are skipped, and JSONL
lines that are not JSON objects with a string FIELD are skipped.
"""

from __future__ import annotations

import ast
import bz2
import dataclasses
import glob as globlib
import gzip
import hashlib
import inspect
import io
import json
import lzma
import os
import re
import sysconfig
import textwrap
import warnings
from collections.abc import Iterable, Iterator
from typing import IO, Any

MAX_LINE_CHARS = 10_000  # longer lines (and sentences) are split into pieces of at most this
MAX_WORD_CHARS = 100  # longer runs of non-space characters are split (URLs, base64, junk)
MAX_DOCUMENT_CHARS = 1_000_000  # longer documents are split, bounding memory per document
MAX_RECORD_CHARS = 64 << 20  # a longer JSONL line cannot be parsed in bounded memory: skipped

# A sentence boundary: ., ! or ? (plus closing quotes/brackets), whitespace, then an
# uppercase letter, a digit or an opening quote/bracket before one.
_BOUNDARY = re.compile(
    r"[.!?][\"'\u201d\u2019)\]]*(\s+)(?=[\"'\u201c\u2018(\[]?[A-Z0-9\u00c0-\u00d6\u00d8-\u00de])"
)
# Words after which a period does not end a sentence ("Mr. Smith", "J. R. R. Tolkien").
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e cf fig no vol al approx ca".split()
)
_LAST_WORD = re.compile(r"(?<!\S)(\S+)\.[\"'\u201d\u2019)\]]*$")
# Control characters (Unicode category Cc) except tab, newline and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Lone surrogates: undecodable bytes (decoded with errors="surrogateescape") or bad JSON
# escapes such as "\ud800"; either way not encodable, so replaced by U+FFFD.
_SURROGATES = re.compile(r"[\ud800-\udfff]+")
_LONG_WORD = re.compile(rf"\S{{{MAX_WORD_CHARS + 1},}}")


@dataclasses.dataclass
class SourceStats:
    """What a source read, and what it repaired or skipped on the way (all counts)."""

    documents: int = 0  # documents yielded
    sentences: int = 0  # sentences yielded
    bytes: int = 0  # UTF-8 bytes of the sentences yielded
    empty_documents: int = 0  # documents (paragraphs, records) with no text: skipped
    invalid_utf8: int = 0  # undecodable bytes, each replaced by U+FFFD
    control_chars: int = 0  # NUL / control characters removed
    long_lines_split: int = 0  # input lines over MAX_LINE_CHARS, split into pieces
    long_sentences_split: int = 0  # sentences over MAX_LINE_CHARS, split into pieces
    long_words_split: int = 0  # words over MAX_WORD_CHARS, split into pieces
    long_documents_split: int = 0  # documents over MAX_DOCUMENT_CHARS, split
    bad_records: int = 0  # JSONL lines that are not JSON objects with a string FIELD
    files: int = 0  # files opened

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, 0)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- cleaning


def clean_text(text: str | bytes, stats: SourceStats) -> str:
    """The one cleaning function of every source: returns `text` repaired, counting
    repairs in `stats`.

    Bytes are decoded as UTF-8; undecodable bytes (or lone surrogates in a str, as
    errors="surrogateescape" leaves them) become U+FFFD. Control characters other than
    tab/newline/CR are removed, runs of whitespace become one space (no leading or
    trailing space), and words over MAX_WORD_CHARS are split into pieces.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if _SURROGATES.search(text):
        text = _SURROGATES.sub(lambda m: _replace_surrogates(m.group(), stats), text)
    text, n = _CONTROL.subn("", text)
    stats.control_chars += n
    text = " ".join(text.split())
    if len(text) > MAX_WORD_CHARS and _LONG_WORD.search(text):
        text = _LONG_WORD.sub(lambda m: _split_word(m.group(), stats), text)
    return text


def _replace_surrogates(run: str, stats: SourceStats) -> str:
    escaped = [c for c in run if "\udc80" <= c <= "\udcff"]  # bytes 0x80..0xff escaped
    stats.invalid_utf8 += len(run)
    if len(escaped) == len(run):  # as errors="replace" would have decoded those bytes
        return run.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "\ufffd" * len(run)


def _split_word(word: str, stats: SourceStats) -> str:
    stats.long_words_split += 1
    return " ".join(word[i : i + MAX_WORD_CHARS] for i in range(0, len(word), MAX_WORD_CHARS))


def _cut(text: str, limit: int) -> tuple[str, str]:
    """(head, rest) with len(head) <= limit, cut at the last space in the second half
    of the window when there is one (so words stay whole), else inside a word: a bit
    short of `limit`, so the head still fits once its long words are split by spaces."""
    i = text.rfind(" ", limit // 2, limit + 1)
    if i > 0:
        return text[:i], text[i + 1 :]
    hard = limit * MAX_WORD_CHARS // (MAX_WORD_CHARS + 1)
    return text[:hard], text[hard:]


def split_sentences(text: str) -> list[str]:
    """Splits whitespace-normalised `text` into sentences with a simple, deterministic
    rule: after ., ! or ? (and closing quotes/brackets) followed by whitespace and an
    uppercase letter, digit or opening quote, unless the period ends a one-letter word
    or a common abbreviation (Mr., e.g., ...)."""
    out, start = [], 0
    for m in _BOUNDARY.finditer(text):
        end = m.start(1)
        if text[m.start()] == ".":
            w = _LAST_WORD.search(text, max(start, end - 12), end)
            if w and (len(w.group(1)) == 1 or w.group(1).lower() in _ABBREVIATIONS):
                continue
        if end > start:
            out.append(text[start:end])
        start = m.end(1)
    if start < len(text):
        out.append(text[start:])
    return out


class _Paragraph:
    """Turns the lines of a paragraph, fed one by one, into sentences, holding at most
    one unfinished sentence (<= ~2 * MAX_LINE_CHARS characters) in memory."""

    def __init__(self, stats: SourceStats) -> None:
        self.stats = stats
        self.carry = ""  # the last, possibly unfinished, sentence
        self.splitting = False  # the carried sentence already went over the limit

    def feed(self, line: str) -> list[str]:
        """Sentences completed by the cleaned, non-empty `line`."""
        text = f"{self.carry} {line}" if self.carry else line
        out = split_sentences(text)
        self.carry = out.pop()
        if len(out):
            self.splitting = False
        while len(self.carry) > MAX_LINE_CHARS:
            if not self.splitting:
                self.stats.long_sentences_split += 1
                self.splitting = True
            head, self.carry = _cut(self.carry, MAX_LINE_CHARS)
            out.append(head)
        return out

    def flush(self) -> list[str]:
        """The last sentence, at the end of the paragraph."""
        out = [self.carry] if self.carry else []
        self.carry, self.splitting = "", False
        return out


# ---------------------------------------------------------------- reading lines


def _open_text(path: str) -> IO[str]:
    """`path` as text: UTF-8 (BOM dropped), undecodable bytes kept as lone surrogates for
    `clean_text` to count, universal newlines; .gz/.bz2/.xz decompressed."""
    kw: dict[str, Any] = dict(encoding="utf-8-sig", errors="surrogateescape", newline=None)
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(
        os.path.splitext(path)[1].lower()
    )
    if opener is not None:
        return opener(path, "rt", **kw)
    return open(path, **kw)


def _pieces(f: IO[str], stats: SourceStats) -> Iterator[str]:
    """Raw lines of `f` without their newline ("" for an empty line). A line longer than
    MAX_LINE_CHARS comes as several non-blank pieces (cut at spaces where possible) and
    is counted; memory stays under 2 * MAX_LINE_CHARS characters however long it is."""
    buf, long_line = "", False
    while True:
        chunk = f.readline(MAX_LINE_CHARS)
        if not chunk and not buf and not long_line:
            return
        ended = not chunk or chunk.endswith("\n")
        buf += chunk[:-1] if chunk.endswith("\n") else chunk
        while len(buf) > MAX_LINE_CHARS:
            if not long_line:
                stats.long_lines_split += 1
                long_line = True
            head, buf = _cut(buf, MAX_LINE_CHARS)
            if head.strip():
                yield head
        if ended:
            if not long_line or buf.strip():
                yield buf
            if not chunk:
                return
            buf, long_line = "", False


def _string_pieces(text: str, stats: SourceStats) -> Iterator[str]:
    return _pieces(io.StringIO(text, newline=None), stats)


# Stream events produced by the per-format readers: a sentence (str), or END, which
# closes the current document (a document with no sentence is counted as empty).
END = None


def _paragraph_events(
    pieces: Iterable[str], stats: SourceStats, paragraphs_are_documents: bool
) -> Iterator[str | None]:
    """Sentences of text whose blank lines separate paragraphs; END after each
    paragraph when paragraphs are documents."""
    para = _Paragraph(stats)
    in_para = False
    for raw in pieces:
        if not raw.strip():
            if in_para:
                yield from para.flush()
                if paragraphs_are_documents:
                    yield END
            in_para = False
            continue
        in_para = True
        line = clean_text(raw, stats)
        if line:
            yield from para.feed(line)
    if in_para:
        yield from para.flush()
        if paragraphs_are_documents:
            yield END


# ---------------------------------------------------------------- sources


class Source:
    """A deterministic stream of documents. Subclasses implement `_events`."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.stats = SourceStats()

    def documents(self) -> Iterator[list[str]]:
        """Yields documents (lists of sentences) from the start; each call restarts and
        resets `stats`, which count what has been read so far."""
        stats = self.stats
        stats.reset()
        doc: list[str] = []
        chars = 0  # characters in `doc`
        parts = 0  # pieces of the current document already yielded (when it is too long)
        for event in self._events(stats):
            if event is END:
                if doc:
                    yield self._count(doc)
                elif not parts:
                    stats.empty_documents += 1
                doc, chars, parts = [], 0, 0
                continue
            pieces = []
            if len(event) > MAX_LINE_CHARS:  # rare: word splitting added spaces
                stats.long_sentences_split += 1
                while len(event) > MAX_LINE_CHARS:
                    head, event = _cut(event, MAX_LINE_CHARS)
                    pieces.append(head)
            pieces.append(event)
            for sentence in pieces:
                if chars + len(sentence) > MAX_DOCUMENT_CHARS and doc:
                    if not parts:
                        stats.long_documents_split += 1
                    yield self._count(doc)
                    doc, chars, parts = [], 0, parts + 1
                doc.append(sentence)
                chars += len(sentence)
        if doc:
            raise AssertionError(f"{self.spec}: internal error, a document was not closed")

    def _count(self, doc: list[str]) -> list[str]:
        self.stats.documents += 1
        self.stats.sentences += len(doc)
        self.stats.bytes += sum(len(s.encode("utf-8")) for s in doc)
        return doc

    def _events(self, stats: SourceStats) -> Iterator[str | None]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[str]]:
        return self.documents()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def _resolve_glob(spec: str, pattern: str) -> list[str]:
    """Sorted files matching `pattern` (a path, a glob, or a directory: every file
    under it); FileNotFoundError naming the spec when there are none."""
    if not pattern:
        raise ValueError(f"source {spec!r}: no path or glob after the kind")
    pattern = os.path.expanduser(pattern)
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "**", "*")
    files = sorted({p for p in globlib.glob(pattern, recursive=True) if os.path.isfile(p)})
    if not files:
        raise FileNotFoundError(f"source {spec!r}: no files match {pattern}")
    return files


class _FileSource(Source):
    def __init__(self, spec: str, pattern: str) -> None:
        super().__init__(spec)
        self.files = _resolve_glob(spec, pattern)

    def _events(self, stats: SourceStats) -> Iterator[str | None]:
        for path in self.files:
            stats.files += 1
            with _open_text(path) as f:
                yield from self._file_events(f, stats)

    def _file_events(self, f: IO[str], stats: SourceStats) -> Iterator[str | None]:
        raise NotImplementedError


class BertSource(_FileSource):
    """One sentence per line, blank (whitespace-only) lines between documents. A long
    line's pieces are separate sentences; a line that cleans to nothing is dropped."""

    def _file_events(self, f: IO[str], stats: SourceStats) -> Iterator[str | None]:
        in_doc = False
        for raw in _pieces(f, stats):
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
        return _paragraph_events(_pieces(f, stats), stats, paragraphs_are_documents=True)


class JsonlSource(_FileSource):
    """One JSON object per line; `field` holds a document's text (str). Blank lines are
    ignored; other lines that are not such objects are skipped and counted."""

    def __init__(self, spec: str, pattern: str, field: str) -> None:
        super().__init__(spec, pattern)
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
            yield from _paragraph_events(_string_pieces(text, stats), stats, False)
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

    def __init__(self, spec: str, rest: str, data_dir: str | None = None) -> None:
        super().__init__(spec)
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

        builder = self._builder = self._builder or self._make_builder()
        builder.download_and_prepare()
        try:
            ds = builder.as_dataset(split=self.split, shuffle_files=False)
        except (ValueError, KeyError) as e:
            msg = " ".join(str(e).split())[:300]
            raise ValueError(
                f"source {self.spec!r}: cannot read split {self.split!r} ({msg})"
            ) from e
        for example in tfds.as_numpy(ds):
            value = example[self.feature]
            if isinstance(value, bytes):
                value = value.decode("utf-8", "surrogateescape")
            yield from _paragraph_events(_string_pieces(str(value), stats), stats, False)
            yield END


# ---------------------------------------------------------------- demo corpus

# Installed packages whose docstrings extend the demo corpus, in this order: the ones
# requirements.txt installs (directly or as a dependency of jax / tensorflow), so the
# corpus is the same wherever bertjax runs with that environment.
DEMO_PACKAGES = ("numpy", "flax", "optax", "absl", "ml_collections", "jax", "scipy", "tensorflow")
_RST_ROLE = re.compile(r":[\w:.-]+:`([^`]*)`")
_RST_LITERAL = re.compile(r"``([^`]*)``")
_UNDERLINE = re.compile(r"[-=~^*+#_`'\"]{3,}\s*")
_NOT_LETTER = re.compile(r"[^\w ]|[\d_]")  # neither a letter nor a space
_PROSE_END = re.compile(r"[.!?:][\"')\]]*$")
_NOT_PROSE = (">>>", "...", "..", "|", "$", ":", "+", "#", "%")
_SECTIONS = re.compile(
    r"(Args|Arguments|Parameters|Returns|Yields|Raises|Attributes|Examples?|Notes?|"
    r"See Also|References|Usage|Warning|Todo)\s*:?\s*$"
)


def _prose(paragraph: str) -> str | None:
    """`paragraph` (of a docstring) as one line if it reads as English prose, else None.

    Prose: uniformly indented lines (a hanging indent means an argument list or code),
    at least 7 words, mostly letters, ending with a full stop (or a colon introducing an
    example); not a doctest, table, directive, field list or section header. RST roles
    and literals (:func:`x`, ``x``) are reduced to their text.
    """
    lines = textwrap.dedent(paragraph).split("\n")
    if any(
        ln[:1].isspace() or _UNDERLINE.fullmatch(ln) or ln.startswith(_NOT_PROSE) for ln in lines
    ):
        return None
    text = " ".join(ln.strip() for ln in lines)
    if not _PROSE_END.search(text) or text.endswith("::") or _SECTIONS.match(text):
        return None
    text = _RST_LITERAL.sub(r"\1", _RST_ROLE.sub(r"\1", text))
    if len(_NOT_LETTER.findall(text)) > 0.2 * len(text) or text.count(" ") < 6 or "http" in text:
        return None
    return text


# Python's lexical structure, just enough to find docstrings: from a position, skips
# code, comments and one-line strings up to the next triple quote (group 1), in one call
# of the regex engine. Possessive quantifiers keep it linear; a stray quote is skipped.
_TO_TRIPLE_QUOTE = re.compile(
    r"""(?:[^#"']++|#[^\n]*+|"(?!"")(?:\\.|[^"\\\n])*+"|'(?!'')(?:\\.|[^'\\\n])*+'|"(?!"")|'(?!''))*+"""
    r"""(\"\"\"|''')"""
)


def _string_end(src: str, start: int, quote: str) -> int:
    """Index just past the triple-quoted string whose body starts at `start` (-1: none)."""
    j = start
    while True:
        k = src.find(quote, j)
        if k < 0:
            return -1
        b = k
        while b > start and src[b - 1] == "\\":
            b -= 1
        if (k - b) % 2 == 0:  # the quote is not escaped
            return k + 3
        j = k + 1


_BLOCK_KEYWORDS = re.compile(
    r"(if|elif|else|for|while|try|except|finally|with|match|case|async\s+for|async\s+with)\b"
)


def _opens_body(src: str, line_start: int) -> bool:
    """Whether the code before `line_start` is empty (a module docstring) or ends with a
    `def`/`class` header: a line ending in ':' (comments aside) that does not start an
    if/for/while/try/with... block."""
    end = line_start
    while end > 0:
        begin = src.rfind("\n", 0, end - 1) + 1
        line = src[begin:end].strip()
        if line and not line.startswith("#"):
            line = re.sub(r"\s+#[^'\"]*$", "", line)
            return line.endswith(":") and not _BLOCK_KEYWORDS.match(line)
        end = begin
    return True


def _docstrings(path: str) -> Iterator[str]:
    """Docstrings (modules, classes, functions) of one Python file, in source order.

    The file is read as text, never imported or parsed: a small lexer skips comments and
    strings and takes the triple-quoted strings that start a module or a `def`/`class`
    body (4x faster than `ast.parse`, which matters for ~50 MB of source). Python's
    pydoc_data/topics.py holds the language reference as a dict of strings: those count
    as docstrings too (read with `ast`)."""
    try:
        with open(path, encoding="utf-8") as f:
            src = f.read()
    except (UnicodeDecodeError, OSError):
        return
    if path.endswith(os.path.join("pydoc_data", "topics.py")):
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError):
            return
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for v in node.values:
                    if isinstance(v, ast.Constant) and isinstance(v.value, str):
                        yield v.value
        return
    pos = 0
    while (m := _TO_TRIPLE_QUOTE.match(src, pos)) is not None:
        end = _string_end(src, m.end(), m.group(1))
        if end < 0:
            return
        pos = end
        start = m.start(1)
        while start > 0 and m.start(1) - start < 2 and src[start - 1] in "rRuUbBfF":
            start -= 1
        line_start = src.rfind("\n", 0, start) + 1
        prefix = src[start : m.start(1)].lower()
        if "b" in prefix or "f" in prefix or src[line_start:start].strip():
            continue
        if not _opens_body(src, line_start):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences in old code
                value = ast.literal_eval(src[start:end])
        except (SyntaxError, ValueError):
            continue
        doc = inspect.cleandoc(value)
        if doc:
            yield doc


def _python_files(root: str, skip: tuple[str, ...]) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def _demo_files() -> Iterator[str]:
    """The stdlib's files, then those of DEMO_PACKAGES that are installed."""
    paths = sysconfig.get_paths()
    yield from _python_files(
        paths["stdlib"],
        ("site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo"),
    )
    for package in DEMO_PACKAGES:
        for site in dict.fromkeys((paths["purelib"], paths["platlib"])):
            root = os.path.join(site, package)
            if os.path.isdir(root):
                yield from _python_files(root, ("test", "tests", "testing", "_vendor"))
                break


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

    def _events(self, stats: SourceStats) -> Iterator[str | None]:
        seen: set[bytes] = set()  # repeated docstrings (inherited, generated) count once
        for path in _demo_files():
            stats.files += 1
            for doc in _docstrings(path):
                kept = [p for p in map(_prose, re.split(r"\n\s*\n", doc)) if p]
                if not kept or sum(map(len, kept)) < self.min_chars:
                    continue  # nothing (or too little) prose: not a document at all
                digest = hashlib.blake2b(
                    "\n".join(kept).encode("utf-8", "replace"), digest_size=16
                ).digest()
                if digest in seen:
                    continue
                seen.add(digest)
                yield from _paragraph_events(_string_pieces("\n\n".join(kept), stats), stats, False)
                yield END
                if self.max_bytes is not None and stats.bytes >= self.max_bytes:
                    return


def open_source(spec: str, *, tfds_data_dir: str | None = None) -> Source:
    """The `Source` for `spec` (see the module docstring for the forms).

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
    if kind == "bert":
        return BertSource(spec, rest)
    if kind == "text":
        return TextSource(spec, rest)
    if kind == "jsonl":
        pattern, hash_, field = rest.rpartition("#") if "#" in rest else (rest, "", "text")
        if hash_ and not field:
            raise ValueError(f"source {spec!r}: empty FIELD after '#'")
        return JsonlSource(spec, pattern, field)
    if kind == "tfds":
        return TfdsSource(spec, rest, data_dir=tfds_data_dir)
    raise ValueError(
        f"source {spec!r}: unknown kind {kind!r}; expected demo, bert, text, jsonl or tfds"
    )


def demo_corpus(max_bytes: int = 8 << 20, min_chars: int = 200) -> Iterator[str]:
    """Texts of the demo corpus's documents (sentences joined by spaces) with at least
    `min_chars` characters of prose, until `max_bytes` of text have been yielded."""
    for doc in DemoSource(max_bytes=max_bytes, min_chars=min_chars).documents():
        yield " ".join(doc)
