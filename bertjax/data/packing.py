"""Single-segment instances: whole sentences packed into max_seq_length (RoBERTa).

  full_sentences  Whole sentences packed contiguously, crossing document boundaries
                  with an extra separator (</s>) between documents, into <s> ... </s> of
                  at most max_seq_length; pair_label -1, token types 0.
  doc_sentences   The same, but an instance never crosses a document boundary (the last
                  one of a document may be short).
  mlm             ELECTRA, DistilBERT: doc_sentences with the family's [CLS] / [SEP].

`instances.create_instances` makes these kinds' Instances of `packed_instances`; a
sentence never exceeds the budget (tokenize_documents cut it), so every one fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bertjax.data.instances import TokenizedDocument

Span = tuple[int, int, int]  # (document index, token start, token end)


def packed_instances(
    docs: Sequence[TokenizedDocument],
    budget: int,
    cross_documents: bool,
    cls_id: int,
    sep_id: int,
) -> list[tuple[np.ndarray, tuple[Span, ...]]]:
    """(input_ids [length] int32, the document spans it holds) of each packed instance
    of `docs`: whole sentences, up to `budget` document tokens (and separators) each,
    between [CLS] and [SEP]; across documents with a [SEP] between them when
    `cross_documents`, else a document's last instance ends with it."""
    out: list[tuple[np.ndarray, tuple[Span, ...]]] = []
    spans: list[list] = []  # [doc, start, end] runs of the instance being filled
    length = 0  # document tokens plus document separators in `spans`

    def emit() -> None:
        nonlocal spans, length
        if not spans:
            return
        pieces = [np.array([cls_id], np.int32)]
        for k, (doc, s, e) in enumerate(spans):
            if k:  # a new document inside the instance: RoBERTa's extra separator
                pieces.append(np.array([sep_id], np.int32))
            pieces.append(doc.tokens[s:e])
        pieces.append(np.array([sep_id], np.int32))
        out.append((np.concatenate(pieces), tuple((doc.index, s, e) for doc, s, e in spans)))
        spans, length = [], 0

    for doc in docs:
        prev = 0
        for end in doc.ends.tolist():
            n = end - prev
            new_doc = bool(spans) and spans[-1][0] is not doc
            if spans and length + new_doc + n > budget:
                emit()
                new_doc = False
            if spans and not new_doc:
                spans[-1][2] = end  # sentences of one document are contiguous
            else:
                spans.append([doc, prev, end])
            length += new_doc + n
            prev = end
        if not cross_documents:
            emit()
    emit()
    return out
