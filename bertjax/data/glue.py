"""GLUE and users' own sentence(-pair) classification data, as labelled examples.

Sources (`finetune.data`):

  tfds                 tensorflow-datasets `glue/NAME` (TFDS's feature names and label
                       orders; its test labels are -1)
  glue:DIR             an original GLUE task directory (train.tsv, dev.tsv, test.tsv;
                       MNLI: dev_matched.tsv, dev_mismatched.tsv, ...; each task's own
                       columns, read by header name; CoLA's train and dev have no header)
  jsonl:DIR, csv:DIR   users' data: DIR/SPLIT.jsonl or DIR/SPLIT.csv, one example a line
                       (a header line for csv), text and label under the field names
                       `finetune.text_fields` and `finetune.label_field`
  demo:demo_next       the built-in demo task (bertjax/data/demo_tasks.py)

`SOURCES` maps each kind to its reader; bertjax/data/datasets.py `read_split` picks one
(and reads the demo task, and refuses an empty split). A new GLUE-like dataset is one
`GlueTask` entry in `TASKS`: configs/finetune.py, the glue task and `score` take it from
there.

Labels are read by name (a TSV "entailment", a jsonl "positive") and become indices in
the task's label order, which is TFDS's (MNLI: entailment, neutral, contradiction;
BERT's run_classifier.py orders them contradiction, entailment, neutral: scores are the
same, exported label ids are not). Regression (STS-B) labels are floats.

Bad input is one error naming the file and line: a wrong column count, an unknown
label, a missing field, an empty split.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

SPLITS = ("train", "validation", "test")


class DatasetError(ValueError):
    """A dataset file cannot be read as the task expects; the message names where."""


@dataclasses.dataclass(frozen=True)
class Example:
    guid: str  # split-line or TFDS idx: where the example came from
    text_a: str
    text_b: str | None
    label: float | int | None  # None: unlabelled (a test split)


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """A sentence(-pair) classification or regression dataset: where its texts and labels
    are, what its labels are called and how it is scored."""

    name: str
    labels: tuple[str, ...] | None  # class names in TFDS's order; None: regression
    tfds_text: tuple[str, ...]  # TFDS feature names of text_a (and text_b)
    tsv_text: tuple[str | int, ...]  # TSV column names (or positions) of the texts
    tsv_label: str | int | None  # TSV label column (name or position)
    tsv_files: dict[str, str]  # split -> file in a GLUE directory
    # Splits the score is reported on; MNLI has two.
    dev_splits: tuple[str, ...] = ("validation",)
    tsv_header: bool = True  # CoLA's train / dev files have none
    tsv_label_names: tuple[str, ...] | None = None  # TSV spells labels so (CoLA: 0/1)
    tsv_test_text: tuple[str, ...] | None = None  # test.tsv's text columns, where others
    metrics: tuple[str, ...] = ("accuracy",)  # the first is the main one
    submission: str = ""  # the GLUE server's file name (MNLI: -m / -mm per test split)
    # The TFDS dataset ("": glue/NAME); its label feature is `label` and -1 means none.
    tfds_name: str = ""

    def test_files(self) -> dict[str, str]:
        """Test split -> predictions file name, as the GLUE server expects them."""
        tests = [s for s in self.tsv_files if s.startswith("test")] or ["test"]
        if len(tests) == 1:
            return {tests[0]: f"{self.submission or self.name}.tsv"}
        return {
            t: f"{self.submission}-{'m' if t.endswith('_matched') else 'mm'}.tsv" for t in tests
        }

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


def _files(dev: str = "dev.tsv") -> dict[str, str]:
    return {"train": "train.tsv", "validation": dev, "test": "test.tsv"}


_BINARY = ("0", "1")
TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask(
            "cola",
            ("unacceptable", "acceptable"),
            ("sentence",),
            (3,),
            1,
            _files(),
            tsv_header=False,
            tsv_label_names=_BINARY,
            tsv_test_text=("sentence",),
            metrics=("matthews", "accuracy"),
            submission="CoLA",
        ),
        GlueTask(
            "sst2",
            ("negative", "positive"),
            ("sentence",),
            ("sentence",),
            "label",
            _files(),
            tsv_label_names=_BINARY,
            submission="SST-2",
        ),
        GlueTask(
            "mrpc",
            ("not_equivalent", "equivalent"),
            ("sentence1", "sentence2"),
            ("#1 String", "#2 String"),
            "Quality",
            _files(),
            tsv_label_names=_BINARY,
            metrics=("f1", "accuracy"),
            submission="MRPC",
        ),
        GlueTask(
            "qqp",
            ("not_duplicate", "duplicate"),
            ("question1", "question2"),
            ("question1", "question2"),
            "is_duplicate",
            _files(),
            tsv_label_names=_BINARY,
            metrics=("f1", "accuracy"),
            submission="QQP",
        ),
        GlueTask(
            "stsb",
            None,
            ("sentence1", "sentence2"),
            ("sentence1", "sentence2"),
            "score",
            _files(),
            metrics=("pearson", "spearman"),
            submission="STS-B",
        ),
        GlueTask(
            "mnli",
            ("entailment", "neutral", "contradiction"),
            ("premise", "hypothesis"),
            ("sentence1", "sentence2"),
            "gold_label",
            {
                "train": "train.tsv",
                "validation_matched": "dev_matched.tsv",
                "validation_mismatched": "dev_mismatched.tsv",
                "test_matched": "test_matched.tsv",
                "test_mismatched": "test_mismatched.tsv",
            },
            dev_splits=("validation_matched", "validation_mismatched"),
            submission="MNLI",
        ),
        GlueTask(
            "qnli",
            ("entailment", "not_entailment"),
            ("question", "sentence"),
            ("question", "sentence"),
            "label",
            _files(),
            submission="QNLI",
        ),
        GlueTask(
            "rte",
            ("entailment", "not_entailment"),
            ("sentence1", "sentence2"),
            ("sentence1", "sentence2"),
            "label",
            _files(),
            submission="RTE",
        ),
        GlueTask(
            "wnli",
            ("not_entailment", "entailment"),
            ("sentence1", "sentence2"),
            ("sentence1", "sentence2"),
            "label",
            _files(),
            tsv_label_names=_BINARY,
            submission="WNLI",
        ),
        # The diagnostic set: MNLI's labels, a test split only (predict with an MNLI model).
        GlueTask(
            "ax",
            ("entailment", "neutral", "contradiction"),
            ("premise", "hypothesis"),
            ("sentence1", "sentence2"),
            None,
            {"test": "AX.tsv"},
            dev_splits=(),
            submission="AX",
        ),
    )
}


def parse_label(task: GlueTask, value: Any, where: str) -> float | int:
    if task.labels is None:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: label {value!r} is not a number") from None
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(task.labels):
            return value
        raise DatasetError(f"{where}: label {value} outside 0..{len(task.labels) - 1}")
    text = str(value).strip()
    for names in (task.labels, task.tsv_label_names or ()):
        if text in names:
            return names.index(text)
    known = ", ".join(task.labels + tuple(task.tsv_label_names or ()))
    raise DatasetError(f"{where}: unknown label {text!r}; expected one of {known}")


def read_tsv(task: GlueTask, path: str, split: str) -> list[Example]:
    if not os.path.exists(path):
        raise DatasetError(f"{path}: missing (the {split} split of {task.name})")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    test = split.startswith("test")
    header = task.tsv_header or test  # test files always have one
    text_cols: Sequence[str | int] = (
        (task.tsv_test_text or task.tsv_text) if test else task.tsv_text
    )
    label_col = None if test else task.tsv_label
    names = rows[0] if header and rows else []

    def col(c: str | int) -> int:
        if isinstance(c, int):
            return c
        if c not in names:
            raise DatasetError(
                f"{path}:1: no column {c!r} in the header ({', '.join(names) or 'empty'})"
            )
        return names.index(c)

    text_idx = [col(c) for c in text_cols]
    label_idx = col(label_col) if label_col is not None else None
    width = len(names) if header else (len(rows[0]) if rows else 0)
    out = []
    for n, row in enumerate(rows[1 if header else 0 :], start=2 if header else 1):
        where = f"{path}:{n}"
        if not row:
            continue
        if len(row) != width:
            raise DatasetError(f"{where}: {len(row)} columns, expected {width}")
        texts = [row[i] for i in text_idx]
        label = parse_label(task, row[label_idx], where) if label_idx is not None else None
        out.append(Example(f"{split}-{n}", texts[0], texts[1] if len(texts) > 1 else None, label))
    return out


def _read_records(
    path: str, kind: str, task: GlueTask, split: str, text_fields: Sequence[str], label_field: str
) -> list[Example]:
    if not os.path.exists(path):
        raise DatasetError(f"{path}: missing (the {split} split)")
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        if kind == "csv":
            reader = csv.DictReader(f)
            rows = ((n, r) for n, r in enumerate(reader, start=2))
        else:
            rows = ((n, line) for n, line in enumerate(f, start=1) if line.strip())
        for n, record in rows:
            where = f"{path}:{n}"
            if kind == "jsonl":
                try:
                    record = json.loads(record)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{where}: not JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise DatasetError(f"{where}: expected a JSON object")
            missing = [k for k in text_fields if record.get(k) is None]
            if missing:
                raise DatasetError(f"{where}: no field {missing[0]!r}")
            label = record.get(label_field)
            if label is None and not split.startswith("test"):
                raise DatasetError(f"{where}: no label field {label_field!r}")
            texts = [str(record[k]) for k in text_fields]
            out.append(
                Example(
                    f"{split}-{n}",
                    texts[0],
                    texts[1] if len(texts) > 1 else None,
                    parse_label(task, label, where) if label is not None else None,
                )
            )
    return out


def _read_tfds(task: GlueTask, split: str) -> list[Example]:
    from bertjax.data.sources import _hide_gpus_from_tensorflow
    from bertjax.data.tfds_load import prepared_builder

    _hide_gpus_from_tensorflow()
    import tensorflow_datasets as tfds

    name = task.tfds_name or f"glue/{task.name}"
    ds = prepared_builder(name).as_dataset(split=split, shuffle_files=False)
    out = []
    for i, record in enumerate(tfds.as_numpy(ds)):
        texts = [record[k].decode("utf-8") for k in task.tfds_text]
        label = record["label"].item()
        out.append(
            Example(
                f"{split}-{int(record['idx']) if 'idx' in record else i}",
                texts[0],
                texts[1] if len(texts) > 1 else None,
                None if label == -1 else parse_label(task, label, name),
            )
        )
    return out


def _read_glue_dir(
    path: str, split: str, spec: GlueTask, **options: Any
) -> tuple[list[Example], str]:
    if split not in spec.tsv_files:
        raise DatasetError(
            f"{spec.name} has no {split!r} split; it has {', '.join(spec.tsv_files)}"
        )
    return read_tsv(spec, os.path.join(path, spec.tsv_files[split]), split), f"glue:{path}"


def _records_reader(kind: str) -> Any:
    def read(
        path: str,
        split: str,
        spec: GlueTask,
        text_fields: Sequence[str] = ("text",),
        label_field: str = "label",
    ) -> tuple[list[Example], str]:
        return (
            _read_records(
                os.path.join(path, f"{split}.{kind}"), kind, spec, split, text_fields, label_field
            ),
            f"{kind}:{path}",
        )

    return read


# finetune.data KIND -> (path, split, spec, ...) -> (examples, the source), for
# bertjax/data/datasets.py.
SOURCES = {
    "tfds": lambda path, split, spec, **options: (_read_tfds(spec, split), "tfds"),
    "glue": _read_glue_dir,
    "jsonl": _records_reader("jsonl"),
    "csv": _records_reader("csv"),
}
