"""Training instances from tokenized documents, one recipe per family.

A document is a list of sentences; `tokenize_documents` (tokenize_documents.py) turns
each into one flat token array plus the end offset of every sentence, so every segment
below is a (start, end) range of one document's tokens, never a copied list. The
recipes (our own code, after Google's create_pretraining_data.py, ALBERT's version of
it and the RoBERTa paper):

  nsp             BERT. Sentences of a document are gathered into a chunk up to a target
                  length (max_seq_length - 3; with probability short_seq_prob a shorter
                  one drawn from [2, max]); the chunk is cut at a random sentence into A
                  and B. With probability 1/2 B is replaced by a span from ANOTHER
                  document (pair_label 1, "not next") and the sentences it displaced are
                  used again for the next instance; otherwise B is the actual next text
                  (pair_label 0). A chunk of one sentence is cut inside the sentence when
                  B must be the actual next. `truncate_seq_pair` then trims the longer
                  segment, randomly from the front or the back, until the pair fits.
                  [CLS] A [SEP] B [SEP], token types 0 for [CLS] A [SEP], 1 for B [SEP].
  sop             ALBERT. The same chunks; A and B always consecutive text of one
                  document, swapped with probability 1/2 (pair_label 1 = swapped).
  full_sentences  RoBERTa. Whole sentences packed contiguously, crossing document
                  boundaries (packing.py).
  doc_sentences   RoBERTa. The same within each document (packing.py).
  mlm             ELECTRA, DistilBERT. doc_sentences with the family's [CLS] / [SEP].

Deviations from Google's script, on purpose: the random next document is drawn
uniformly among the OTHER documents (Google's ten tries can return the same one);
with no other document at hand (a one-document chunk) B falls back to the actual next
text and the fallback is counted (`InstanceStats.nsp_random_unavailable`); a one-sentence
chunk that needs an actual next is split inside its sentence instead of forcing a
random next, which keeps the labels 50/50 (`single_sentence="random_next"` takes
Google's rule instead: such a chunk always gets a random next, so on a corpus of short
documents most labels are "not next": 75% on one 4 MB corpus); `truncate_seq_pair`
draws how many tokens go from the front as one binomial per segment, the same
distribution as Google's token by token coin flips. Everything is a pure function of
the inputs and the `np.random.Generator`.

Sentences longer than the segment budget (max_seq_length - 3 for pairs, - 2 for single
segments) come split into pieces of that size, so no instance exceeds max_seq_length.
Every `Instance` records which document ranges it holds (`spans`), for tests and
debugging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bertjax.data import packing

INSTANCE_KINDS = ("nsp", "sop", "full_sentences", "doc_sentences", "mlm")
PAIR_KINDS = ("nsp", "sop")
SINGLE_SENTENCE = ("split", "random_next")  # NSP for a one-sentence chunk (see above)
NO_PAIR_LABEL = -1


@dataclasses.dataclass
class InstanceStats:
    """Counters reported in the manifest (summed over shards)."""

    documents: int = 0  # documents given (empty ones included)
    documents_used: int = 0  # documents with at least one token
    empty_documents: int = 0  # no sentence with a token after tokenization: skipped
    sentences: int = 0  # non-empty sentences tokenized
    empty_sentences: int = 0  # sentences that were empty or gave no token: skipped
    invalid_sentences: int = 0  # not a string: skipped
    tokenize_errors: int = 0  # sentences the tokenizer raised on: skipped
    long_sentences_split_chars: int = 0  # sentences over MAX_SENTENCE_CHARS: cut
    long_sentences_split_tokens: int = 0  # sentences over the segment budget: cut
    source_tokens: int = 0  # tokens of the documents (no special tokens)
    instances: int = 0
    instance_tokens: int = 0  # tokens of the instances, special tokens included
    truncated_tokens: int = 0  # tokens cut by truncate_seq_pair
    random_next: int = 0  # nsp: pair_label 1
    actual_next: int = 0  # nsp: pair_label 0
    swapped: int = 0  # sop: pair_label 1
    nsp_random_unavailable: int = 0  # nsp: random next wanted, no other document
    dropped_one_token_chunks: int = 0  # pairs: a lone 1-token chunk cannot be split

    def add(self, other: InstanceStats) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def asdict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TokenizedDocument:
    """One document's tokens, all sentences concatenated.

    Attributes:
      tokens: [num_tokens] int32, no special tokens.
      ends: [num_sentences] int64, exclusive end offset of each sentence in `tokens`
        (after long sentences were split into pieces, each piece counts as a sentence).
      index: the document's position in the list given to `tokenize_documents`.
    """

    tokens: np.ndarray
    ends: np.ndarray
    index: int

    def start(self, sentence: int) -> int:
        return int(self.ends[sentence - 1]) if sentence > 0 else 0


@dataclasses.dataclass(slots=True)  # no __dict__: a chunk holds ~10^5 of them
class Instance:
    """One training example before masking.

    Attributes:
      input_ids: [length] int32, special tokens included, length <= max_seq_length.
      token_type_ids: [length] int32 (read-only: a view of one shared array).
      pair_label: nsp: 1 random next, 0 actual next; sop: 1 swapped, 0 in order; else -1.
      spans: (document index, token start, token end) of each run of document tokens in
        the order they appear in input_ids (pairs: exactly (A, B)). Document indices are
        positions in the list given to `tokenize_documents`.
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    pair_label: int
    spans: tuple[tuple[int, int, int], ...]


def segment_budget(kind: str, max_seq_length: int) -> int:
    """Most document tokens one segment (pairs: one pair) may hold."""
    check_kind(kind, max_seq_length)
    return max_seq_length - (3 if kind in PAIR_KINDS else 2)


def check_kind(kind: str, max_seq_length: int) -> None:
    """ValueError naming the setting when `kind` or `max_seq_length` cannot work."""
    if kind not in INSTANCE_KINDS:
        raise ValueError(f"instances={kind!r} is unknown; expected one of {INSTANCE_KINDS}")
    least = 5 if kind in PAIR_KINDS else 3  # specials plus one token per segment
    if not isinstance(max_seq_length, int) or max_seq_length < least:
        raise ValueError(
            f"max_seq_length={max_seq_length!r} is too small for instances={kind!r} "
            f"(at least {least})"
        )


# ---------------------------------------------------------------- pairs (NSP, SOP)


def truncate_seq_pair(
    a: tuple[int, int], b: tuple[int, int], max_num_tokens: int, rng: np.random.Generator
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Trims ranges `a` and `b` until their total length is at most `max_num_tokens`.

    As Google's truncate_seq_pair: one token at a time from the longer segment (from B
    on a tie), each from the front or the back with probability 1/2. How many come from
    the front of a segment is drawn as one binomial, the same distribution.

    Args:
      a, b: (start, end) token ranges, each at least 1 long.
    Returns:
      the trimmed (start, end) ranges, each still at least 1 long if max_num_tokens >= 2.
    """
    la, lb = a[1] - a[0], b[1] - b[0]
    excess = la + lb - max_num_tokens
    if excess <= 0:
        return a, b
    # Longer first until equal, then alternately B, A, B, ... (B loses the ties).
    cut_a = min(excess, max(la - lb, 0))
    cut_b = min(excess - cut_a, max(lb - la, 0))
    left = excess - cut_a - cut_b
    cut_b += (left + 1) // 2
    cut_a += left // 2
    front_a = int(rng.binomial(cut_a, 0.5)) if cut_a else 0
    front_b = int(rng.binomial(cut_b, 0.5)) if cut_b else 0
    return (
        (a[0] + front_a, a[1] - (cut_a - front_a)),
        (b[0] + front_b, b[1] - (cut_b - front_b)),
    )


def _pair_instance(
    cls_id: int,
    sep_id: int,
    seg_a: tuple[TokenizedDocument, int, int],
    seg_b: tuple[TokenizedDocument, int, int],
    label: int,
) -> Instance:
    (da, a0, a1), (db, b0, b1) = seg_a, seg_b
    la, lb = a1 - a0, b1 - b0
    ids = np.empty(la + lb + 3, np.int32)
    ids[0] = cls_id
    ids[1 : la + 1] = da.tokens[a0:a1]
    ids[la + 1] = sep_id
    ids[la + 2 : la + lb + 2] = db.tokens[b0:b1]
    ids[-1] = sep_id
    types = _token_types(la + 2, lb + 1)
    return Instance(ids, types, label, ((da.index, a0, a1), (db.index, b0, b1)))


_TYPES = np.zeros(0, np.int32)  # n zeros then n ones, read-only; grown when needed


def _token_types(zeros: int, ones: int) -> np.ndarray:
    """[zeros + ones] int32: `zeros` 0s then `ones` 1s, a read-only view of one shared
    array (a chunk's instances hold no token type data of their own)."""
    global _TYPES
    n = len(_TYPES) // 2
    if zeros > n or ones > n:
        n = max(zeros, ones, 2 * n, 512)
        _TYPES = np.concatenate([np.zeros(n, np.int32), np.ones(n, np.int32)])
        _TYPES.flags.writeable = False
    return _TYPES[n - zeros : n + ones]


def _pairs_from_document(
    docs: Sequence[TokenizedDocument],
    d: int,
    kind: str,
    max_num_tokens: int,
    short_seq_prob: float,
    cls_id: int,
    sep_id: int,
    rng: np.random.Generator,
    stats: InstanceStats,
    out: list[Instance],
    single_sentence: str = "split",
) -> None:
    doc = docs[d]
    ends = doc.ends
    n_sent = len(ends)
    # Mostly full-length pairs; sometimes shorter ones, so that the model also sees
    # the short sequences of fine-tuning (Google draws this once per document).
    target = max_num_tokens
    if rng.random() < short_seq_prob:
        target = int(rng.integers(2, max_num_tokens + 1))
    first = 0  # first sentence of the current chunk
    i = 0
    while i < n_sent:
        chunk_len = int(ends[i]) - doc.start(first)
        if i < n_sent - 1 and chunk_len < target:
            i += 1
            continue
        n = i - first + 1
        a_end = first + (int(rng.integers(1, n)) if n >= 2 else 1)  # sentences [first, a_end)
        a = (doc.start(first), doc.start(a_end))
        seg_b: tuple[TokenizedDocument, int, int] | None = None
        label = 0
        # Google: `len(current_chunk) == 1 or rng.random() < 0.5` (no draw for one).
        forced = n == 1 and single_sentence == "random_next"
        if kind == "nsp" and (forced or rng.random() < 0.5):
            if len(docs) < 2:
                stats.nsp_random_unavailable += 1
            else:
                label = 1
                r = int(rng.integers(0, len(docs) - 1))
                r += r >= d  # uniform among the other documents
                other = docs[r]
                start = int(rng.integers(0, len(other.ends)))
                want = max(target - (a[1] - a[0]), 1)
                j = int(np.searchsorted(other.ends, other.start(start) + want))
                j = min(j, len(other.ends) - 1)
                seg_b = (other, other.start(start), int(other.ends[j]))
                i = a_end - 1  # the sentences B displaced start the next chunk
        if seg_b is None:
            if n >= 2:
                seg_b = (doc, a[1], int(ends[i]))
            else:  # one sentence: cut inside it so that B is the actual next text
                length = a[1] - a[0]
                if length < 2:
                    stats.dropped_one_token_chunks += 1
                    first, i = i + 1, i + 1
                    continue
                cut = a[0] + int(rng.integers(1, length))
                seg_b = (doc, cut, a[1])
                a = (a[0], cut)
        other_doc, b0, b1 = seg_b
        before = (a[1] - a[0]) + (b1 - b0)
        a, (b0, b1) = truncate_seq_pair(a, (b0, b1), max_num_tokens, rng)
        stats.truncated_tokens += before - (a[1] - a[0]) - (b1 - b0)
        seg_a = (doc, a[0], a[1])
        seg_b = (other_doc, b0, b1)
        if kind == "sop":
            if rng.random() < 0.5:
                seg_a, seg_b, label = seg_b, seg_a, 1
                stats.swapped += 1
        elif label:
            stats.random_next += 1
        else:
            stats.actual_next += 1
        out.append(_pair_instance(cls_id, sep_id, seg_a, seg_b, label))
        first = i + 1
        i += 1


# ---------------------------------------------------------------- entry points


def create_instances(
    docs: Sequence[TokenizedDocument],
    kind: str,
    *,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    rng: np.random.Generator,
    short_seq_prob: float = 0.1,
    stats: InstanceStats | None = None,
    shuffle: bool = True,
    single_sentence: str = "split",
) -> list[Instance]:
    """Instances of `kind` from tokenized documents (see the module docstring).

    Args:
      docs: from `tokenize_documents` with max_sentence_tokens = segment_budget(...).
        NSP draws its random next segments from these documents only.
      kind: one of INSTANCE_KINDS.
      max_seq_length: no instance is longer (special tokens included).
      cls_id, sep_id: [CLS]/[SEP] (RoBERTa: <s>/</s>) ids.
      rng: the only source of randomness.
      short_seq_prob: nsp/sop: probability of a shorter target length for a document.
      stats: counters to add to.
      shuffle: shuffle the instances (as Google does), else document order.
      single_sentence: nsp: a one-sentence chunk is split ("split") or always gets a
        random next ("random_next", Google's rule).
    """
    stats = stats if stats is not None else InstanceStats()
    budget = segment_budget(kind, max_seq_length)
    if single_sentence not in SINGLE_SENTENCE:
        raise ValueError(
            f"nsp_single_sentence={single_sentence!r} must be one of {', '.join(SINGLE_SENTENCE)}"
        )
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob={short_seq_prob!r} must be in [0, 1]")
    for doc in docs:  # a contract check, cheap: pieces must fit one segment
        if len(doc.ends) and int(np.diff(doc.ends, prepend=0).max()) > budget:
            raise ValueError(
                f"a sentence of document {doc.index} is longer than {budget} tokens; "
                "tokenize with max_sentence_tokens=segment_budget(kind, max_seq_length)"
            )
    out: list[Instance] = []
    if kind in PAIR_KINDS:
        for d in range(len(docs)):
            _pairs_from_document(
                docs,
                d,
                kind,
                budget,
                short_seq_prob,
                cls_id,
                sep_id,
                rng,
                stats,
                out,
                single_sentence,
            )
    else:
        for ids, spans in packing.packed_instances(
            docs, budget, kind == "full_sentences", cls_id, sep_id
        ):
            out.append(Instance(ids, _token_types(len(ids), 0), NO_PAIR_LABEL, spans))
    if shuffle and out:
        out = [out[k] for k in rng.permutation(len(out))]
    stats.instances += len(out)
    stats.instance_tokens += sum(len(x.input_ids) for x in out)
    return out
