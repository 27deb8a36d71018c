"""Named-entity data: sentences of words with one tag each, tags normalised to IOB2.

Sources (`finetune.data` of configs/finetune.py:conll2003 and custom NER data):

  tfds              tensorflow-datasets `conll2003` (its `tokens` and `ner` features)
  conll:DIR         CoNLL files DIR/train.txt, DIR/valid.txt (or dev.txt), DIR/test.txt:
                    one word a line, whitespace-separated columns, the word first and
                    its tag last (CoNLL-2003: word POS chunk NER); blank lines between
                    sentences; -DOCSTART- lines are skipped
  demo:demo_boundary  the built-in demo task (bertjax/data/demo_tasks.py)

Tags may be IOB1 (CoNLL-2003's original files: I- opens an entity unless it follows
one of the same type) or IOB2; both become IOB2 by conlleval's chunk rules
(bertjax/scoring/entities.py), so scores do not depend on which the files use. Any
tag set works. A malformed line (a single column, a tag that is not O / B-X / I-X)
is one error naming the file and line.
"""

from __future__ import annotations

import dataclasses
import os

from bertjax.data.glue import DatasetError
from bertjax.scoring.entities import to_iob2

SPLIT_FILES = {
    "train": ("train.txt",),
    "validation": ("valid.txt", "dev.txt"),
    "test": ("test.txt",),
}


@dataclasses.dataclass(frozen=True)
class Sentence:
    guid: str
    words: tuple[str, ...]
    tags: tuple[str, ...]  # IOB2; empty when the split is unlabelled
    lines: tuple[str, ...] = ()  # the original lines (CoNLL files), for predictions


def _check_tag(tag: str, where: str) -> None:
    if tag != "O" and (tag[:2] not in ("B-", "I-") or len(tag) < 3):
        raise DatasetError(f"{where}: tag {tag!r} is not O, B-TYPE or I-TYPE")


def read_conll(path: str, split: str) -> list[Sentence]:
    """The sentences of one CoNLL file."""
    out: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    lines: list[str] = []
    start = 0

    def flush() -> None:
        if words:
            out.append(
                Sentence(f"{split}-{start}", tuple(words), tuple(to_iob2(tags)), tuple(lines))
            )
        words.clear()
        tags.clear()
        lines.clear()

    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.rstrip("\n")
            cols = line.split()
            if not cols:
                flush()
                continue
            if cols[0] == "-DOCSTART-":
                flush()
                continue
            where = f"{path}:{n}"
            if len(cols) < 2:
                raise DatasetError(f"{where}: expected a word and its tag, found {line!r}")
            _check_tag(cols[-1], where)
            if not words:
                start = n
            words.append(cols[0])
            tags.append(cols[-1])
            lines.append(line)
    flush()
    return out


def tfds_tags() -> tuple[str, ...]:
    """TFDS conll2003's tag names, in its label order."""
    from bertjax.data.sources import _hide_gpus_from_tensorflow

    _hide_gpus_from_tensorflow()
    import tensorflow_datasets as tfds

    return tuple(tfds.builder("conll2003").info.features["ner"].feature.names)


def _read_tfds(path: str, split: str) -> tuple[list[Sentence], str]:
    from bertjax.data.sources import _hide_gpus_from_tensorflow
    from bertjax.data.tfds_load import prepared_builder

    _hide_gpus_from_tensorflow()
    import tensorflow_datasets as tfds

    names = tfds_tags()
    ds = prepared_builder("conll2003").as_dataset(split=split, shuffle_files=False)
    out = []
    for i, record in enumerate(tfds.as_numpy(ds)):
        words = tuple(w.decode("utf-8") for w in record["tokens"])
        tags = tuple(to_iob2([names[t] for t in record["ner"]]))
        out.append(Sentence(f"{split}-{i}", words, tags))
    return out, "tfds"


def _read_dir(path: str, split: str) -> tuple[list[Sentence], str]:
    names = SPLIT_FILES.get(split, (f"{split}.txt",))
    found = [os.path.join(path, n) for n in names if os.path.exists(os.path.join(path, n))]
    if not found:
        raise DatasetError(f"{os.path.join(path, names[0])}: missing (the {split} split)")
    return read_conll(found[0], split), f"conll:{path}"


# finetune.data KIND -> (path, split) -> (sentences, the source), for
# bertjax/data/datasets.py (which reads demo:demo_boundary).
SOURCES = {"tfds": _read_tfds, "conll": _read_dir}


def tag_set(sentences: list[Sentence]) -> tuple[str, ...]:
    """O, then every B-/I- tag of every type seen, types sorted: the label order."""
    types = sorted({t[2:] for s in sentences for t in s.tags if t != "O"})
    return ("O", *[f"{p}-{t}" for t in types for p in ("B", "I")])
