"""Every fine-tuning dataset by name, and the one way their splits are read.

  DATASETS     name -> Dataset: the task that trains on it (bertjax/tasks: glue, ner or
               squad), its default `finetune.data` and labels, its SQuAD version.
               configs/finetune.py:NAME accepts exactly these names.
  read_split   a split of `finetune.data` (KIND[:PATH]) for a task. The reader modules
               (glue.py, conll.py, squad.py) say which source kinds they read in their
               `SOURCES`; the built-in demo tasks (demo:NAME, bertjax/data/demo_tasks.py),
               an unknown kind and an empty split are handled here, once for all three.

A GLUE-like sentence(-pair) classification or regression dataset is one `GlueTask` entry
in `TASKS` of bertjax/data/glue.py (its TFDS name and text features, TSV columns, label
names, metrics); it lands in DATASETS by itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from bertjax.data import conll, demo_tasks, glue, squad
from bertjax.data.glue import DatasetError


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    task: str  # the task that trains on it (bertjax/tasks): glue | ner | squad
    data: str = "tfds"  # finetune.data by default; "": the user's files must be named
    labels: tuple[str, ...] = ()  # finetune.labels by default (a demo task's classes)
    version: str = ""  # SQuAD: v1.1 | v2.0

    @property
    def demo(self) -> bool:
        """A built-in demo task (bertjax/data/demo_tasks.py): no download."""
        return self.data.startswith("demo:")


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        *(Dataset(name, "glue") for name in glue.TASKS),
        # Users' own classification data: jsonl:DIR | csv:DIR (finetune.labels, text_fields).
        Dataset("custom", "glue"),
        Dataset("conll2003", "ner"),
        Dataset("ner", "ner", data=""),  # users' own CoNLL files: conll:DIR
        Dataset("squad_v1", "squad", version="v1.1"),
        Dataset("squad_v2", "squad", version="v2.0"),
        Dataset("demo_next", "glue", data="demo:demo_next", labels=demo_tasks.NEXT_LABELS),
        Dataset("demo_boundary", "ner", data="demo:demo_boundary"),
        Dataset("demo_intruder", "squad", data="demo:demo_intruder", version="v1.1"),
    )
}


def get(name: str) -> Dataset:
    """The dataset `name`; a ValueError listing them otherwise."""
    if name not in DATASETS:
        raise ValueError(f"fine-tuning dataset {name!r}: expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclasses.dataclass(frozen=True)
class Reader:
    """How a task's splits are read: its reader module's source kinds and its demo task."""

    # KIND -> fn(path, split, **options) -> (examples, where they came from); a kind
    # listed in `dirs` is written KIND:DIR and needs its directory.
    sources: Mapping[str, Callable[..., tuple[Any, str]]]
    dirs: tuple[str, ...]
    demo: str  # the demo task of this shape (demo:NAME)
    from_demo: Callable[..., Any]  # fn(split, **options) -> examples
    empty: str  # the error for an empty split (format keys: where, split, options)
    size: Callable[[Any], int] = len


def _next(split: str, **options: Any) -> list[glue.Example]:
    return [
        glue.Example(f"{split}-{i}", a, b, label)
        for i, (a, b, label) in enumerate(demo_tasks.next_examples(split))
    ]


def _boundary(split: str, **options: Any) -> list[conll.Sentence]:
    return [
        conll.Sentence(f"{split}-{i}", words, tags)
        for i, (words, tags) in enumerate(demo_tasks.boundary_examples(split))
    ]


def _intruder(
    split: str, version: str = "v1.1", **options: Any
) -> tuple[list[squad.Question], list[Any]]:
    if version != "v1.1":
        raise DatasetError(f"finetune.data='demo:demo_intruder' is SQuAD v1.1, not {version}")
    data = demo_tasks.intruder_articles(split)
    return squad.questions(data, "demo:demo_intruder"), data


READERS: dict[str, Reader] = {
    "glue": Reader(
        glue.SOURCES,
        ("glue", "jsonl", "csv"),
        "demo_next",
        _next,
        "{where}: the {split} split of {spec.name} is empty",
    ),
    "ner": Reader(
        conll.SOURCES,
        ("conll",),
        "demo_boundary",
        _boundary,
        "{where}: the {split} split has no sentences",
    ),
    "squad": Reader(
        squad.SOURCES,
        ("json",),
        "demo_intruder",
        _intruder,
        "{where}: the {split} split has no questions",
        size=lambda examples: len(examples[0]),
    ),
}


def read_split(task: str, source: str, split: str, **options: Any) -> Any:
    """The examples of `split` ("train", a dev split, "test") from `source` for `task`
    (glue: [Example], options spec, text_fields, label_field; ner: [Sentence]; squad:
    (questions, the official "data" list), option version). A DatasetError names the
    source, the file and line, or the key otherwise."""
    reader = READERS[task]
    kind, _, path = source.partition(":")
    if kind == "demo" and path == reader.demo:
        examples, where = reader.from_demo(split, **options), source
    elif kind in reader.sources and bool(path) == (kind in reader.dirs):
        examples, where = reader.sources[kind](path, split, **options)
    else:
        forms = [f"{k}:DIR" if k in reader.dirs else k for k in reader.sources]
        raise DatasetError(
            f"finetune.data={source!r}: expected {', '.join(forms)} or demo:{reader.demo}"
        )
    if not reader.size(examples):
        raise DatasetError(reader.empty.format(where=where, split=split, **options))
    return examples
