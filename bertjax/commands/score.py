r"""`python -m bertjax score`: score a predictions file as the reference scripts do.

  python -m bertjax score --task=squad_v1 --gold=dev-v1.1.json --predictions=predictions.json
  python -m bertjax score --task=squad_v2 --gold=dev-v2.0.json --predictions=predictions.json \
      --na_probs=null_odds.json
  python -m bertjax score --task=sst2 --gold=/data/glue/SST-2/dev.tsv --predictions=SST-2.tsv
  python -m bertjax score --task=ner --predictions=ner.txt
  python -m bertjax score --task=ner --gold=eng.testb --predictions=ner.txt

SQuAD (squad_v1, squad_v2): the official JSON and a {question id: answer text} file
(v2.0: "" for no answer, and optionally --na_probs, {question id: no-answer
probability}); the figures are evaluate-v1.1.py's / evaluate-v2.0.py's
(bertjax/scoring/squad.py), in percent. v1.1 scores a question without a prediction 0
and says how many there were on stderr; v2.0 needs a prediction (and, with --na_probs,
a probability) for every question, as the script does.

GLUE (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli): the task's dev file in its
original layout and a GLUE submission file: a header with an `index` column and a
prediction column, then one row per example (label names or 0 / 1 as `predict` writes
them, numbers for STS-B). Index i is the i-th example of the dev file; rows may come in
any order, but every index from 0 to the number of examples - 1 must appear exactly
once. MNLI: --gold is dev_matched.tsv or dev_mismatched.tsv. Scores are fractions, as
`evaluate` prints them (bertjax/scoring/classification.py).

NER (ner, alias conll2003): entity-level precision, recall and F1, micro-averaged and
per type, with conlleval's chunk rules (IOB1, IOB2 or IOBES; bertjax/scoring/entities.py),
as fractions like `evaluate`'s (conlleval prints percentages), plus the chunk counts
conlleval reports. --predictions is CoNLL lines, whitespace-separated columns, blank
lines between sentences:
  - alone, conlleval's input: `token ... gold predicted` per line (at least three
    columns), such as `predict` writes for CoNLL files (their lines, the predicted tag
    appended);
  - with --gold, a CoNLL file whose last column is the gold tag (CoNLL-2003's files):
    the predictions' last column is the predicted tag, so `word predicted` lines
    (`predict` on TFDS data) work too; the two files must hold the same sentences of
    the same words.
-DOCSTART- lines and conlleval's `-X-` boundary lines end a sentence as a blank line
does (conlleval reads a -DOCSTART- line as a token tagged O: the same chunks). Token
accuracy is not reported: conlleval compares raw tags, so an IOB1 gold column against
IOB2 predictions reads low while every chunk is right.

Prints one JSON object. Bad input is one line naming the file and the line, index or
key: a missing or repeated index, an unknown label, a malformed tag, misaligned files.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from typing import Any

from absl import flags

from bertjax import paths
from bertjax.commands import flags as common

_TASK = flags.DEFINE_string(
    "task",
    None,
    "squad_v1 | squad_v2 | ner (alias conll2003) | a GLUE task: cola, sst2, "
    "mrpc, qqp, stsb, mnli, qnli, rte, wnli.",
)
_GOLD = flags.DEFINE_string(
    "gold",
    None,
    "The gold file: SQuAD's dev JSON; the GLUE task's dev TSV; ner "
    "(optional): a CoNLL file whose last column is the gold tag.",
)
_PREDICTIONS = flags.DEFINE_string(
    "predictions",
    None,
    "SQuAD: JSON {question id: answer}; GLUE: a submission TSV "
    "(index<TAB>prediction, matched to the dev file by index); ner: CoNLL lines ending in "
    "the predicted tag, the gold tag before it unless --gold is given.",
)
_NA_PROBS = flags.DEFINE_string(
    "na_probs",
    None,
    "squad_v2: JSON {question id: no-answer probability}; adds "
    "best_exact / best_f1 and their thresholds.",
)

HELP = {"score": common.Usage((_TASK, _GOLD, _PREDICTIONS, _NA_PROBS), "finetuning.md")}

NER_TASKS = ("ner", "conll2003")


# ---------------------------------------------------------------------------- SQuAD


def _squad(version: str, gold: str, predictions: str, na_probs: str | None) -> dict:
    from bertjax.scoring import squad

    dataset = paths.read_json(gold)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise ValueError(f'{gold}: not a SQuAD file (no "data" list)')
    try:
        golds = squad.questions(dataset["data"])
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{gold}: not a SQuAD file (an article, paragraph, question or answer lacks {e})"
        ) from None
    preds = paths.read_json(predictions)
    if not isinstance(preds, dict):
        raise ValueError(f"{predictions}: expected a JSON object of question id -> answer")
    for qid, answer in preds.items():
        if not isinstance(answer, str):
            raise ValueError(f"{predictions}: question {qid!r}: answer {answer!r} is not a string")
    missing = [q for q in golds if q not in preds]
    if version == "squad_v1":
        empty = [q for q, answers in golds.items() if not answers]
        if empty:  # evaluate-v1.1.py would stop on max() of nothing
            raise ValueError(
                f"{gold}: question {empty[0]!r} has no gold answer (a v2.0 "
                "file? use --task=squad_v2)"
            )
        if missing:
            print(
                f"warning: {predictions}: no prediction for {len(missing)} of {len(golds)} "
                f"questions (first {missing[0]!r}); they score 0, as evaluate-v1.1.py "
                "scores them",
                file=sys.stderr,
            )
        return squad.score_v1(dataset["data"], preds)
    if missing:  # evaluate-v2.0.py stops with a KeyError: there is no score to compare
        raise ValueError(
            f"{predictions}: no prediction for question {missing[0]!r} "
            f"({len(missing)} of {len(golds)} questions of {gold} missing)"
        )
    probs = None
    if na_probs:
        probs = paths.read_json(na_probs)
        if not isinstance(probs, dict):
            raise ValueError(
                f"{na_probs}: expected a JSON object of question id -> no-answer probability"
            )
        for qid, p in probs.items():
            if isinstance(p, bool) or not isinstance(p, int | float):
                raise ValueError(f"{na_probs}: question {qid!r}: {p!r} is not a number")
        lacking = [q for q in golds if q not in probs]
        if lacking:
            raise ValueError(
                f"{na_probs}: no no-answer probability for question "
                f"{lacking[0]!r} ({len(lacking)} of {len(golds)} missing)"
            )
    return squad.score_v2(dataset["data"], preds, probs)


# ----------------------------------------------------------------------------- GLUE


def _read_text(path: str) -> str:
    """The file's text (a UTF-8 byte-order mark dropped); an undecodable one is a
    one-line error naming it."""
    text = paths.read_text(path)  # local or gs://; not UTF-8: one line naming it
    return text.removeprefix("\ufeff")


_INTEGER = re.compile(r"[+-]?[0-9]+")


def read_submission(path: str, count: int, gold: str) -> list[tuple[int, str]]:
    """The prediction column of a GLUE submission file, put in the dev file's order by
    its `index` column: [count] (line number, raw value). Every index 0..count-1 exactly
    once, or a ValueError naming `path` and the row."""
    rows = list(csv.reader(_read_text(path).splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise ValueError(f"{path}: empty; expected a header, then index<TAB>prediction rows")
    header = [c.strip().lower() for c in rows[0]]
    if "index" not in header:
        raise ValueError(
            f"{path}:1: no index column in the header "
            f"({', '.join(rows[0]) or 'empty'}); expected index<TAB>prediction"
        )
    if len(header) != 2:
        raise ValueError(
            f"{path}:1: {len(header)} columns in the header; expected index<TAB>prediction"
        )
    at = header.index("index")
    values: list[tuple[int, str] | None] = [None] * count
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise ValueError(f"{path}:{n}: {len(row)} columns; expected index<TAB>prediction")
        text = row[at].strip()
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"{path}:{n}: index {row[at]!r} is not an integer")
        i = int(text)
        if not 0 <= i < count:
            raise ValueError(
                f"{path}:{n}: index {i} out of range: {gold} has {count} "
                f"examples (indices 0..{count - 1})"
            )
        seen = values[i]
        if seen is not None:
            raise ValueError(f"{path}:{n}: index {i} repeated (first on line {seen[0]})")
        values[i] = (n, row[1 - at])
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise ValueError(
            f"{path}: no prediction for index {missing[0]} ({len(missing)} of "
            f"the {count} examples of {gold} missing)"
        )
    return [v for v in values if v is not None]


def _glue(name: str, gold: str, predictions: str) -> dict:
    from bertjax.data import glue
    from bertjax.scoring import classification

    task = glue.TASKS[name]
    if not task.dev_splits:
        raise ValueError(
            f"--task={name}: GLUE's diagnostic set has no dev split to score "
            "against here (the GLUE server scores AX.tsv)"
        )
    split = "validation" if "validation" in task.dev_splits else task.dev_splits[0]
    examples = glue.read_tsv(task, gold, split)
    if not examples:
        raise ValueError(f"{gold}: no examples")
    preds = [
        glue.parse_label(task, value, f"{predictions}:{n}")
        for n, value in read_submission(predictions, len(examples), gold)
    ]
    labels = [e.label for e in examples]
    return {m: getattr(classification, m)(labels, preds) for m in task.metrics}


# ------------------------------------------------------------------------------ NER

Line = tuple[int, list[str]]  # (line number from 1, whitespace-separated columns)


def read_conll_sentences(path: str) -> list[list[Line]]:
    """The sentences of a CoNLL file: runs of non-blank lines. -DOCSTART- lines and
    conlleval's `-X-` boundary lines end a sentence as a blank line does (conlleval
    reads a -DOCSTART- line as a token tagged O, which opens and closes no chunk)."""
    out: list[list[Line]] = []
    current: list[Line] = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        cols = line.split()
        if not cols or cols[0] in ("-DOCSTART-", "-X-"):
            if current:
                out.append(current)
            current = []
            continue
        current.append((n, cols))
    if current:
        out.append(current)
    if not out:
        raise ValueError(f"{path}: no sentences")
    return out


def _tag(path: str, n: int, tag: str) -> str:
    from bertjax.scoring import entities

    try:
        entities.split_tag(tag)
    except ValueError as e:
        raise ValueError(f"{path}:{n}: {e}") from None
    return tag


def _ner(gold: str | None, predictions: str) -> dict:
    from bertjax.scoring import entities

    predicted = read_conll_sentences(predictions)
    gold_tags: list[list[str]] = []
    pred_tags: list[list[str]] = []
    if gold is None:
        for sentence in predicted:
            for n, cols in sentence:
                if len(cols) < 3:
                    raise ValueError(
                        f"{predictions}:{n}: {len(cols)} columns; expected token ... gold "
                        "predicted (conlleval's input), or give the gold file with --gold"
                    )
            gold_tags.append([_tag(predictions, n, cols[-2]) for n, cols in sentence])
            pred_tags.append([_tag(predictions, n, cols[-1]) for n, cols in sentence])
    else:
        golden = read_conll_sentences(gold)
        for g, p in zip(golden, predicted, strict=False):
            for (gn, gcols), (pn, pcols) in zip(g, p, strict=False):
                if len(gcols) < 2 or len(pcols) < 2:
                    path, n = (gold, gn) if len(gcols) < 2 else (predictions, pn)
                    raise ValueError(f"{path}:{n}: expected a word and its tag")
                if gcols[0] != pcols[0]:
                    raise ValueError(
                        f"{predictions}:{pn}: word {pcols[0]!r}, but {gold}:{gn} "
                        f"has {gcols[0]!r}: the files are not aligned"
                    )
            if len(g) != len(p):
                raise ValueError(
                    f"{predictions}:{p[0][0]}: a sentence of {len(p)} words, but "
                    f"{gold}:{g[0][0]} has {len(g)}: the files are not aligned"
                )
            gold_tags.append([_tag(gold, n, cols[-1]) for n, cols in g])
            pred_tags.append([_tag(predictions, n, cols[-1]) for n, cols in p])
        if len(golden) != len(predicted):
            longer, path = (
                (golden, gold) if len(golden) > len(predicted) else (predicted, predictions)
            )
            raise ValueError(
                f"{path}:{longer[len(gold_tags)][0][0]}: {len(golden)} sentences "
                f"in {gold} but {len(predicted)} in {predictions}"
            )
    return entities.score(gold_tags, pred_tags)


def main(argv: list[str]) -> None:
    del argv
    from bertjax.data import glue

    task = common.required(_TASK)
    predictions = common.required(_PREDICTIONS)
    scores: dict[str, Any]
    if task in NER_TASKS:
        scores = _ner(_GOLD.value or None, predictions)
    elif task in ("squad_v1", "squad_v2"):
        scores = _squad(task, common.required(_GOLD), predictions, _NA_PROBS.value)
    elif task in glue.TASKS:
        scores = _glue(task, common.required(_GOLD), predictions)
    else:
        raise ValueError(
            f"--task={task}: expected squad_v1, squad_v2, ner, conll2003 or one "
            f"of {', '.join(glue.TASKS)}"
        )
    print(json.dumps(scores, indent=2))
