"""Documents -> tokens: `tokenize_documents` turns each document (a list of sentences)
into one flat token array plus the end offset of every sentence, an
`instances.TokenizedDocument`, from which instances.py cuts its segments.

Sentences are tokenized one by one without special tokens; for byte-level BPE
(RoBERTa) each gets back the space that separated it from the previous one, so its
first word carries the word-start marker 'Ġ' as it would in running text.

Sentences longer than MAX_SENTENCE_CHARS characters are cut (at whitespace where
possible) before tokenization, and those longer than the segment budget
(`instances.segment_budget`: max_seq_length - 3 for pairs, - 2 for single segments)
are split into pieces of that size, so no instance exceeds max_seq_length.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from bertjax.data.instances import InstanceStats, TokenizedDocument

# A sentence this many characters long is cut (at whitespace where possible) before
# tokenization: a 10 MB "sentence" would otherwise be one huge tokenizer call.
MAX_SENTENCE_CHARS = 20_000
# Sentences and characters per tokenizer call: bound the memory of the tokenizer's
# Encoding objects (about 100 bytes a token, offsets and token strings included).
_ENCODE_BATCH = 4096
_ENCODE_CHARS = 1 << 16


def _split_chars(text: str, limit: int) -> list[str]:
    """Cuts `text` into pieces of at most `limit` characters, at whitespace if any."""
    pieces = []
    start = 0
    while len(text) - start > limit:
        cut = text.rfind(" ", start + limit // 2, start + limit)
        cut = start + limit if cut < 0 else cut
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return [p for p in (p.strip() for p in pieces) if p]


def _encode(tokenizer, texts: list[str], stats: InstanceStats) -> list[list[int]]:
    """Ids per text; a text the tokenizer rejects gives [] and is counted."""
    try:
        return tokenizer.encode_batch(texts, add_special_tokens=False)
    except Exception:  # find the culprits one by one; never crash the run on one text
        out = []
        for t in texts:
            try:
                out.append(tokenizer.encode(t, add_special_tokens=False))
            except Exception:
                stats.tokenize_errors += 1
                out.append([])
        return out


def tokenize_documents(
    tokenizer,
    documents: Iterable[Sequence[str]],
    max_sentence_tokens: int,
    stats: InstanceStats | None = None,
) -> list[TokenizedDocument]:
    """Tokenizes documents (lists of sentence strings) without special tokens.

    Empty sentences and documents are skipped and counted; sentences longer than
    `max_sentence_tokens` tokens are cut into pieces of at most that many.

    Returns:
      one TokenizedDocument per document with at least one token, in input order.
    """
    stats = stats if stats is not None else InstanceStats()
    if max_sentence_tokens < 1:
        raise ValueError(f"max_sentence_tokens must be >= 1, got {max_sentence_tokens}")
    # Byte-level BPE marks a word start by its leading space ('Ġ'); sentences were
    # separated by whitespace in the text, so each gets its space back (as
    # RobertaTokenizer would give the same words mid-text).
    prefix = (
        " "
        if getattr(tokenizer, "kind", None) == "bpe"
        and not getattr(tokenizer, "options", {}).get("add_prefix_space", False)
        else ""
    )
    out: list[TokenizedDocument] = []
    batch: list[str] = []  # texts for the next tokenizer call
    owner: list[int] = []  # document index of each text in `batch`
    chars = 0  # characters in `batch`
    doc: list = [-1, [], []]  # the document being assembled: index, id arrays, lengths

    def finish_document() -> None:
        if doc[0] >= 0:
            done = _tokenized_document(doc[0], doc[1], doc[2], max_sentence_tokens, stats)
            if done is not None:
                out.append(done)
        doc[:] = [-1, [], []]

    def encode_batch() -> None:
        ids = _encode(tokenizer, batch, stats)
        lens = np.fromiter(map(len, ids), np.int64, len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(lens.sum()))
        del ids  # Python ints: ~36 bytes a token, the int32 copy above 4
        ends = np.cumsum(lens).tolist()
        for k, d in enumerate(owner):
            if d != doc[0]:
                finish_document()
                doc[0] = d
            doc[1].append(flat[ends[k] - int(lens[k]) : ends[k]])
            doc[2].append(int(lens[k]))
        batch.clear()
        owner.clear()

    counter = [0]  # documents seen
    for d, text in _sentence_texts(documents, prefix, stats, counter):
        batch.append(text)
        owner.append(d)
        chars += len(text)
        if len(batch) == _ENCODE_BATCH or chars >= _ENCODE_CHARS:
            encode_batch()
            chars = 0
    if batch:
        encode_batch()
    finish_document()
    stats.documents += counter[0]
    stats.documents_used += len(out)
    stats.empty_documents += counter[0] - len(out)
    return out


def _sentence_texts(
    documents: Iterable[Sequence[str]], prefix: str, stats: InstanceStats, counter: list[int]
) -> Iterator[tuple[int, str]]:
    """(document index, text) of the texts to tokenize: stripped non-empty sentences,
    cut when over MAX_SENTENCE_CHARS, with `prefix`; counter[0] counts the documents."""
    for d, doc in enumerate(documents):
        counter[0] += 1
        if isinstance(doc, str):  # a bare string is a one-sentence document
            doc = [doc]
        try:
            sentences = list(doc)
        except TypeError:
            stats.invalid_sentences += 1
            continue
        for s in sentences:
            if not isinstance(s, str):
                stats.invalid_sentences += 1
                continue
            s = s.strip()
            if not s:
                stats.empty_sentences += 1
                continue
            if len(s) > MAX_SENTENCE_CHARS:
                stats.long_sentences_split_chars += 1
                for p in _split_chars(s, MAX_SENTENCE_CHARS):
                    yield d, prefix + p
            else:
                yield d, prefix + s


def _tokenized_document(
    d: int,
    parts: list[np.ndarray],
    lengths: list[int],
    max_sentence_tokens: int,
    stats: InstanceStats,
) -> TokenizedDocument | None:
    """Document d from its sentences' ids (`parts`, `lengths` tokens each; None: no
    token), sentences over `max_sentence_tokens` cut into pieces."""
    cut = []
    for n in lengths:
        if n == 0:
            stats.empty_sentences += 1
        elif n > max_sentence_tokens:
            stats.long_sentences_split_tokens += 1
            full, rest = divmod(n, max_sentence_tokens)
            cut.extend([max_sentence_tokens] * full + ([rest] if rest else []))
        else:
            cut.append(n)
    if not cut:
        return None
    tokens = np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
    stats.sentences += len(cut)
    stats.source_tokens += len(tokens)
    return TokenizedDocument(tokens, np.cumsum(cut, dtype=np.int64), d)
