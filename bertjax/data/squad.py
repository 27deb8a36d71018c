"""SQuAD v1.1 / v2.0 questions with their contexts and answers.

Sources (`finetune.data` of configs/finetune.py:squad_v1 / squad_v2):

  tfds        tensorflow-datasets squad/v1.1 or squad/v2.0
  json:DIR    the official files: DIR/train-v1.1.json, DIR/dev-v1.1.json (v2.0:
              train-v2.0.json, dev-v2.0.json)
  demo:demo_intruder  the built-in demo task (v1.1; bertjax/data/demo_tasks.py)

Every answer's `answer_start` must point at its text: an answer where
`context[answer_start:answer_start + len(text)] != text`, like a malformed file (no
"data" list, a question without an id or a context), is one error naming the file and
the record. Answers that do point at their text but do not begin and end on token
boundaries (SQuAD has a few: "5" inside "1985") are the task's to count and report
(bertjax/tasks/squad.py); they are left out of training, never trained on a span that
is not theirs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from bertjax.data.glue import DatasetError

FILES = {
    "v1.1": {"train": "train-v1.1.json", "validation": "dev-v1.1.json"},
    "v2.0": {"train": "train-v2.0.json", "validation": "dev-v2.0.json"},
}


@dataclasses.dataclass(frozen=True)
class Question:
    qid: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]  # (text, answer_start), checked
    impossible: bool = False  # v2.0: no answer in the context


def questions(articles: Any, where: str) -> list[Question]:
    """The checked questions of an official "data" list read from `where`."""
    out = []
    if not isinstance(articles, list):
        raise DatasetError(f'{where}: no "data" list')
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise DatasetError(f"{where}: data[{a}].paragraphs[{p}] has no context")
            for q, qa in enumerate(paragraph.get("qas", [])):
                record = f"{where}: data[{a}].paragraphs[{p}].qas[{q}]"
                if not qa.get("id") or not isinstance(qa.get("question"), str):
                    raise DatasetError(f"{record}: needs an id and a question")
                answers = []
                for k, ans in enumerate(qa.get("answers", [])):
                    text, start = ans.get("text"), ans.get("answer_start")
                    if (
                        not isinstance(text, str)
                        or not text
                        or not isinstance(start, int)
                        or context[start : start + len(text)] != text
                    ):
                        raise DatasetError(
                            f"{record}.answers[{k}] (id {qa['id']}): text {text!r} is not "
                            f"the context at answer_start={start!r}"
                        )
                    answers.append((text, start))
                impossible = bool(qa.get("is_impossible", False)) or not answers
                out.append(Question(qa["id"], qa["question"], context, tuple(answers), impossible))
    return out


def _read_json(path: str) -> tuple[list[Question], list[Any]]:
    from bertjax.convert.hfdir import read_json

    try:
        data = read_json(path).get("data")
    except (OSError, ValueError) as e:
        raise DatasetError(str(e)) from None
    return questions(data, path), data


def _read_tfds(version: str, split: str) -> tuple[list[Question], list[Any]]:
    from bertjax.data.sources import _hide_gpus_from_tensorflow
    from bertjax.data.tfds_load import prepared_builder

    _hide_gpus_from_tensorflow()
    import tensorflow_datasets as tfds

    ds = prepared_builder(f"squad/{version}").as_dataset(split=split, shuffle_files=False)
    paragraphs: dict[str, dict[str, Any]] = {}
    for r in tfds.as_numpy(ds):
        context = r["context"].decode("utf-8")
        qa = {
            "id": r["id"].decode("utf-8"),
            "question": r["question"].decode("utf-8"),
            "answers": [
                {"text": t.decode("utf-8"), "answer_start": int(s)}
                for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"], strict=True)
            ],
        }
        if "is_impossible" in r:
            qa["is_impossible"] = bool(r["is_impossible"])
        paragraphs.setdefault(context, {"context": context, "qas": []})["qas"].append(qa)
    data = [{"title": "", "paragraphs": list(paragraphs.values())}]
    return questions(data, f"tfds squad/{version} {split}"), data


def _from_tfds(path: str, split: str, version: str) -> tuple[Any, str]:
    return _read_tfds(version, split), f"tfds squad/{version}"


def _from_json(path: str, split: str, version: str) -> tuple[Any, str]:
    where = os.path.join(path, FILES[version][split])
    return _read_json(where), where


# finetune.data KIND -> (path, split, version) -> ((questions, the official "data" list
# for scoring), where), for bertjax/data/datasets.py (which reads demo:demo_intruder).
SOURCES = {"tfds": _from_tfds, "json": _from_json}
