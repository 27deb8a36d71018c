"""The base of every text source: `Source`, a deterministic stream of documents, what it
counts on the way (`SourceStats`), and the not-text check that refuses input which is
mostly not text (`NotTextError`). The kinds of source and their spec forms are
sources.py's.

A document is a `list[str]` of sentences: non-empty, cleaned strings. Documents over
`MAX_DOCUMENT_CHARS` are split, and sentences over `MAX_LINE_CHARS` (text.py) cut into
pieces.

Input that is mostly not text is refused (`NotTextError`, naming the file and its
counts): a file, TFDS dataset or whole source whose undecodable bytes, control
characters and U+FFFD are more than `max_bad_fraction` (default MAX_BAD_FRACTION, 10%)
of its characters; one over WARN_BAD_FRACTION (1%) is used and reported once on stderr.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator

from bertjax.data.text import END, MAX_LINE_CHARS, cut

MAX_DOCUMENT_CHARS = 1_000_000  # longer documents are split, bounding memory per document
# Input that is mostly not text. A character is "bad" when it is an undecodable byte, a
# control character or a U+FFFD already in the text. Random bytes or a binary file score
# ~60%, UTF-16 ~50% (its NULs), Shift-JIS or GBK read as UTF-8 40% or more; Latin-1 or
# cp1252 prose, whose accented letters are the undecodable bytes, 1-5%; clean corpora
# well under 0.1%. Past MAX_BAD_FRACTION (config: data.max_bad_fraction) a file, a TFDS
# dataset or the whole source is refused: its text would be mostly U+FFFD and gaps.
# Past WARN_BAD_FRACTION a file is reported once with its counts and used.
MAX_BAD_FRACTION = 0.1
WARN_BAD_FRACTION = 0.01
_MIN_JUDGED_CHARS = 1000  # a smaller file is judged only with the rest of the source
_FIRST_CHECK_CHARS = 1 << 16  # a file is checked after this many characters, then 2x, 4x, ...


class NotTextError(ValueError):
    """A file (or a dataset, or a whole source) whose share of bad characters is over the
    limit; the message names it and gives the counts."""


class _BadText:
    """The not-text check of one input (a file, a TFDS dataset, or the whole source):
    the difference of `stats`' counters since it started. `step()` checks when the input
    has doubled since the last check, so a large binary file is refused after its first
    64K characters rather than at its end; `end()` checks and warns."""

    def __init__(
        self, name: str, stats: SourceStats, limit: float | None, warned: set[str]
    ) -> None:
        self.name, self.stats, self.limit, self.warned = name, stats, limit, warned
        self.start = self._now()
        self.next_check = _FIRST_CHECK_CHARS

    def _now(self) -> tuple[int, int, int, int]:
        st = self.stats
        return st.chars, st.invalid_utf8, st.control_chars, st.replacement_chars

    def step(self) -> None:
        if self.stats.chars - self.start[0] >= self.next_check:
            self.next_check *= 2
            self._check(partial=True)

    def end(self, warn: bool = True) -> None:
        chars, bad, what = self._check(partial=False)
        if (
            warn
            and bad > WARN_BAD_FRACTION * chars
            and chars >= _MIN_JUDGED_CHARS
            and self.name not in self.warned
        ):
            self.warned.add(self.name)
            print(
                f"warning: {self.name}: {bad:,} of {chars:,} characters ({bad / chars:.1%}) "
                f"are {what}: replaced or removed; is it UTF-8 text?",
                file=sys.stderr,
            )

    def _check(self, partial: bool) -> tuple[int, int, str]:
        chars, invalid, control, replaced = (
            a - b for a, b in zip(self._now(), self.start, strict=True)
        )
        bad = invalid + control + replaced
        what = (
            f"invalid UTF-8 ({invalid:,}), control characters ({control:,}) or U+FFFD "
            f"({replaced:,})"
        )
        if self.limit is not None and chars >= _MIN_JUDGED_CHARS and bad > self.limit * chars:
            where = "the first " if partial else ""
            raise NotTextError(
                f"{self.name}: not text: {bad:,} of {where}{chars:,} characters "
                f"({bad / chars:.1%}) are {what}, more than data.max_bad_fraction="
                f"{self.limit:g} allows (convert it to UTF-8 or leave it out)"
            )
        return chars, bad, what


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

    def __post_init__(self) -> None:
        # Not fields (the manifest's source_stats keep their keys): what clean_text
        # examined and the U+FFFD already in it, for the not-text check (`_BadText`).
        self.chars = 0
        self.replacement_chars = 0

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, 0)
        self.__post_init__()


class Source:
    """A deterministic stream of documents. Subclasses implement `_events`."""

    def __init__(self, spec: str, max_bad_fraction: float | None = MAX_BAD_FRACTION) -> None:
        self.spec = spec
        self.stats = SourceStats()
        # Most bad characters a file (or dataset, or the whole source) may hold; None:
        # no limit (warnings stay).
        self.max_bad_fraction = max_bad_fraction
        self._warned: set[str] = set()  # inputs already warned about (once per Source)

    def documents(self) -> Iterator[list[str]]:
        """Yields documents (lists of sentences) from the start; each call restarts and
        resets `stats`, which count what has been read so far.

        Raises:
          NotTextError: a file, a dataset or the whole source holds more bad characters
            (undecodable bytes, control characters, U+FFFD) than `max_bad_fraction`.
        """
        stats = self.stats
        stats.reset()
        whole = self._bad_text(self.spec)
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
                    head, event = cut(event, MAX_LINE_CHARS)
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
        if whole is not None and stats.files != 1:  # one file: judged on its own already
            whole.end(warn=not self._warned)  # no second warning about the same bytes

    def _bad_text(self, name: str) -> _BadText | None:
        """The not-text check of input `name` (None: this source is not checked)."""
        return _BadText(name, self.stats, self.max_bad_fraction, self._warned)

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
