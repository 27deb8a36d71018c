"""Text repair and sentence splitting shared by every source (sources.py).

`clean_text` is the one cleaning function: invalid UTF-8 becomes U+FFFD, control
characters go, whitespace becomes single spaces, words over MAX_WORD_CHARS are split.
`split_sentences` is the one sentence rule. `pieces` reads a file's lines in bounded
memory (a line over MAX_LINE_CHARS comes in pieces), and `paragraph_events` turns
blank-line separated paragraphs into a stream of sentences and END marks. Every
repair is counted in the source's `SourceStats`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from bertjax import paths

if TYPE_CHECKING:
    from bertjax.data.source_base import SourceStats

MAX_LINE_CHARS = 10_000  # longer lines (and sentences) are split into pieces of at most this
MAX_WORD_CHARS = 100  # longer runs of non-space characters are split (URLs, base64, junk)

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


# ---------------------------------------------------------------- cleaning


def clean_text(text: str | bytes, stats: SourceStats) -> str:
    """The one cleaning function of every source: returns `text` repaired, counting
    repairs in `stats`.

    Bytes are decoded as UTF-8; undecodable bytes (or lone surrogates in a str, as
    errors="surrogateescape" leaves them) become U+FFFD. Control characters other than
    tab/newline/CR are removed, runs of whitespace become one space (no leading or
    trailing space), and words over MAX_WORD_CHARS are split into pieces. The
    characters examined and the U+FFFD already among them are counted too (`chars`,
    `replacement_chars`: what the sources' not-text check weighs).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    stats.chars += len(text)
    if "\ufffd" in text:  # replaced before it reached us (a lossy conversion upstream)
        stats.replacement_chars += text.count("\ufffd")
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


def cut(text: str, limit: int) -> tuple[str, str]:
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


class Paragraph:
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
            head, self.carry = cut(self.carry, MAX_LINE_CHARS)
            out.append(head)
        return out

    def flush(self) -> list[str]:
        """The last sentence, at the end of the paragraph."""
        out = [self.carry] if self.carry else []
        self.carry, self.splitting = "", False
        return out


# ---------------------------------------------------------------- reading lines


def open_text(path: str) -> IO[str]:
    """`path` as text: UTF-8 (BOM dropped), undecodable bytes kept as lone surrogates for
    `clean_text` to count, universal newlines; .gz/.bz2/.xz decompressed. A URL
    (gs://...) is streamed through bertjax.paths."""
    kw: dict[str, Any] = dict(encoding="utf-8-sig", errors="surrogateescape", newline=None)
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(
        os.path.splitext(path)[1].lower()
    )
    if paths.is_remote(path):
        raw = paths.open(path, "rb")
        return _TextOver(opener(raw, "rb") if opener is not None else raw, raw, **kw)
    if opener is not None:
        return opener(path, "rt", **kw)
    return open(path, **kw)


class _TextOver(io.TextIOWrapper):
    """Text over a binary stream that also closes `raw` (the remote file under a
    decompressor, which leaves the file it was given open)."""

    def __init__(self, buffer: IO[bytes], raw: IO[bytes], **kw: Any) -> None:
        super().__init__(buffer, **kw)
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def pieces(f: IO[str], stats: SourceStats) -> Iterator[str]:
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
            head, buf = cut(buf, MAX_LINE_CHARS)
            if head.strip():
                yield head
        if ended:
            if not long_line or buf.strip():
                yield buf
            if not chunk:
                return
            buf, long_line = "", False


def string_pieces(text: str, stats: SourceStats) -> Iterator[str]:
    return pieces(io.StringIO(text, newline=None), stats)


# Stream events produced by the per-format readers: a sentence (str), or END, which
# closes the current document (a document with no sentence is counted as empty).
END = None


def paragraph_events(
    pieces: Iterable[str], stats: SourceStats, paragraphs_are_documents: bool
) -> Iterator[str | None]:
    """Sentences of text whose blank lines separate paragraphs; END after each
    paragraph when paragraphs are documents."""
    para = Paragraph(stats)
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
