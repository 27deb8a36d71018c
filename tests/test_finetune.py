"""Fine-tuning a classifier (bertjax/tasks/glue.py) end to end, and its GLUE readers.

The GLUE readers are checked on small files in each task's own layout (CoLA without a
header, MNLI's named columns and label names), with bad files named to the line. A
tiny BERT fine-tunes on a learnable sentence-pair task (the label needs both sentences)
from a model directory: its
dev accuracy rises above the majority class, the best checkpoint is kept, batches are
padded to their own length, and the exported BertForSequenceClassification gives
transformers' logits and the same dev accuracy.
"""

from __future__ import annotations

import json
import os
import re
import sys

import modellib
import numpy as np
import pytest
from tasklib import (
    WORDS,
    conll_sentences,
    eval_scalars,
    pair_task,
    write_conll,
    write_lines,
)

from bertjax.data import datasets, glue

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))


def test_glue_tsv_files_in_each_tasks_layout(tmp_path):
    # CoLA: no header in train/dev; (source, label, original label, sentence).
    write_lines(
        str(tmp_path / "CoLA/train.tsv"), ["gj04\t1\t\tThe cat sat.", "gj04\t0\t*\tCat the."]
    )
    ex = datasets.read_split("glue", f"glue:{tmp_path}/CoLA", "train", spec=glue.TASKS["cola"])
    assert [(e.text_a, e.label) for e in ex] == [("The cat sat.", 1), ("Cat the.", 0)]
    # CoLA's test file has a header and the sentence under its name.
    write_lines(str(tmp_path / "CoLA/test.tsv"), ["index\tsentence", "0\tA test."])
    assert (
        datasets.read_split("glue", f"glue:{tmp_path}/CoLA", "test", spec=glue.TASKS["cola"])[
            0
        ].label
        is None
    )
    # MNLI: columns by name, labels by name, in TFDS's order (BERT's differs).
    header = (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse"
        "\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
    )
    rows = [
        f"{i}\t0\t0\tg\tp\tp\tp\tp\tPremise {i}.\tHypothesis {i}.\t{lab}\t{lab}"
        for i, lab in enumerate(["contradiction", "entailment", "neutral"])
    ]
    write_lines(str(tmp_path / "MNLI/dev_matched.tsv"), [header, *rows])
    ex = datasets.read_split(
        "glue", f"glue:{tmp_path}/MNLI", "validation_matched", spec=glue.TASKS["mnli"]
    )
    assert [e.label for e in ex] == [2, 0, 1]  # entailment, neutral, contradiction
    assert (ex[0].text_a, ex[0].text_b) == ("Premise 0.", "Hypothesis 0.")
    # STS-B: a float score.
    write_lines(
        str(tmp_path / "STS-B/dev.tsv"),
        [
            "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
            "0\tg\tf\ty\t0\ts\ts\tA man.\tA person.\t4.25",
        ],
    )
    assert (
        datasets.read_split(
            "glue", f"glue:{tmp_path}/STS-B", "validation", spec=glue.TASKS["stsb"]
        )[0].label
        == 4.25
    )


@pytest.mark.parametrize(
    "lines, says",
    [
        (["sentence\tlabel", "good film\t1", "bad\tfilm\t0"], r"dev.tsv:3: 3 columns, expected 2"),
        (["sentence\tlabel", "good film\t7"], r"dev.tsv:2: unknown label '7'"),
        (["sentence\tlabel"], r"the validation split of sst2 is empty"),
        (["text\tlabel", "good film\t1"], r"dev.tsv:1: no column 'sentence'"),
    ],
)
def test_bad_glue_files_are_named_to_the_line(tmp_path, lines, says):
    write_lines(str(tmp_path / "dev.tsv"), lines)
    with pytest.raises(glue.DatasetError, match=says):
        datasets.read_split("glue", f"glue:{tmp_path}", "validation", spec=glue.TASKS["sst2"])


def test_custom_jsonl_and_csv(tmp_path):
    task = glue.GlueTask("custom", ("neg", "pos"), (), (), None, {})
    write_lines(
        str(tmp_path / "train.jsonl"),
        [
            json.dumps({"a": "x", "b": "y", "y": "pos"}),
            json.dumps({"a": "z", "b": "w", "y": "neg"}),
        ],
    )
    ex = datasets.read_split(
        "glue", f"jsonl:{tmp_path}", "train", spec=task, text_fields=("a", "b"), label_field="y"
    )
    assert [(e.text_a, e.text_b, e.label) for e in ex] == [("x", "y", 1), ("z", "w", 0)]
    write_lines(str(tmp_path / "validation.csv"), ["a,y", '"hello, world",neg'])
    ex = datasets.read_split(
        "glue", f"csv:{tmp_path}", "validation", spec=task, text_fields=("a",), label_field="y"
    )
    assert (ex[0].text_a, ex[0].label) == ("hello, world", 0)
    write_lines(str(tmp_path / "test.jsonl"), ['{"a": 1}', "not json"])
    with pytest.raises(glue.DatasetError, match=r"test.jsonl:2: not JSON"):
        datasets.read_split(
            "glue", f"jsonl:{tmp_path}", "test", spec=task, text_fields=("a",), label_field="y"
        )


# --- fine-tuning end to end ----------------------------------------------------------


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    import jax

    from bertjax import modeldir, train
    from bertjax.data.tokenizers import train_wordpiece
    from bertjax.models import build, init_params

    root = tmp_path_factory.mktemp("finetune")
    rng = np.random.default_rng(0)
    for split, n in (("train", 320), ("validation", 90), ("test", 30)):
        write_lines(
            str(root / "data" / f"{split}.jsonl"),
            [
                json.dumps({"p": a, "h": b, **({"label": str(y)} if split != "test" else {})})
                for a, b, y in pair_task(rng, n)
            ],
        )
    tok = train_wordpiece([" ".join(WORDS)] * 20, vocab_size=120)
    # vocab_size: the tokenizer's above.
    cfg = modellib.tiny(
        "bert", vocab_size=120, num_heads=2, intermediate_size=64, max_position_embeddings=64
    )
    params = jax.tree.map(
        np.asarray, jax.jit(lambda: __import__("flax").linen.unbox(init_params(build(cfg))))()
    )
    pretrained = str(root / "pretrained")
    modeldir.save(pretrained, cfg, params, tok)

    import finetune

    c = finetune.get_config("custom,bert_base,runlocal")
    c.init_from = pretrained
    c.finetune.update(
        data=f"jsonl:{root / 'data'}",
        text_fields=("p", "h"),
        labels=("0", "1"),
        epochs=10.0,
        pad_multiple=8,
    )
    c.optim.learning_rate = 1e-3
    c.train.update(batch_size=16, checkpoint_every=0, peak_flops=1e12)
    c.max_seq_length = 32
    work = str(root / "run")
    result = train.train(c, work)
    return {"config": c, "work": work, "result": result, "root": root}


def test_fine_tuning_beats_the_majority_class_and_keeps_the_best(finetuned):
    result, work = finetuned["result"], finetuned["work"]
    assert result["status"] == "done" and result["step"] == 10 * (320 // 16)
    accuracy = eval_scalars(work)["validation/accuracy"]
    assert len(accuracy) == 10  # one evaluation per epoch, over the whole split
    with open(os.path.join(finetuned["root"], "data", "validation.jsonl")) as f:
        labels = [json.loads(line)["label"] for line in f]
    majority = max(labels.count("0"), labels.count("1")) / len(labels)
    assert max(accuracy) > majority + 0.2, (accuracy, majority)
    with open(os.path.join(work, "best", "config.json")) as f:
        best = json.load(f)
    assert best["best"]["value"] == pytest.approx(max(accuracy), abs=1e-6)
    assert best["model"]["heads"] == ["pooler", "classifier"]
    assert best["model"]["label_names"] == ["0", "1"]


def test_batches_are_padded_to_their_own_length(finetuned):
    from bertjax import tasks

    task = tasks.get(finetuned["config"])
    b = task.global_train_batch(0)
    longest = int(b["attention_mask"].sum(axis=1).max())
    assert b["input_ids"].shape[1] == -(-longest // 8) * 8 < 32
    # A function of the step: the same batch again, another one next.
    assert np.array_equal(task.global_train_batch(0)["input_ids"], b["input_ids"])
    batches, order = task.eval_batches("validation")
    assert sum(int(x["weights"].sum()) for x in batches) == 90 == len(order)


def test_exported_classifier_gives_transformers_logits_and_accuracy(finetuned, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bertjax import tasks
    from bertjax.convert.hfdir import export_hf
    from bertjax.tasks.finetune import ordered

    best = os.path.join(finetuned["work"], "best")
    out = str(tmp_path / "hf")
    export_hf(best, out)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.id2label == {0: "0", 1: "1"}
    task = tasks.get(finetuned["config"])
    batches, order = task.eval_batches("validation")
    from bertjax import modeldir
    from bertjax.models import build

    cfg, params = modeldir.load(best)
    ours, theirs = [], []
    for b in batches:
        ours.append(
            np.asarray(
                build(cfg).apply(
                    {"params": params},
                    b["input_ids"],
                    b["token_type_ids"],
                    b["attention_mask"],
                    heads=("classifier",),
                )[0]["classifier"]
            )
        )
        with torch.no_grad():
            theirs.append(
                model(
                    **{
                        k: torch.from_numpy(b[k].astype(np.int64))
                        for k in ("input_ids", "token_type_ids", "attention_mask")
                    }
                ).logits.numpy()
            )
    ours, theirs = ordered(ours, order), ordered(theirs, order)
    assert np.isfinite(ours).all() and np.isfinite(theirs).all()
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    with open(os.path.join(best, "config.json")) as f:
        best_accuracy = json.load(f)["best"]["value"]
    assert task.scores("validation", theirs)["accuracy"] == pytest.approx(best_accuracy)


def test_the_init_from_table_names_the_classifier_created(finetuned, capsys, tmp_path):
    from bertjax import train

    c = finetuned["config"]
    c.train.steps = 1
    train.Trainer(c, str(tmp_path / "again"))
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\s+(\w+)\s+(loaded|created|dropped)\s", out, re.M))
    assert rows == {
        "embeddings": "loaded",
        "encoder": "loaded",
        "pooler": "loaded",
        "classifier": "created",
        "mlm": "dropped",
        "nsp": "dropped",
    }, out


def test_tfds_glue_through_tensorflow_datasets_mock_data():
    """TFDS's own feature names and splits (mock_data builds them from the real builder's
    spec, offline)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=4):
        for name in ("sst2", "mnli", "stsb"):
            task = glue.TASKS[name]
            for split in task.dev_splits:
                ex = datasets.read_split("glue", "tfds", split, spec=task)
                assert len(ex) == 4 and all(e.text_a for e in ex)
                assert (ex[0].text_b is None) == (name == "sst2")
                if task.labels:
                    assert all(0 <= e.label < len(task.labels) for e in ex)
                else:
                    assert isinstance(ex[0].label, float)


def test_several_seeds_write_every_score_and_the_median(finetuned, tmp_path):
    from bertjax.tools.seeds import run_seeds

    c = finetuned["config"].copy_and_resolve_references()
    c.train.steps = 20  # one epoch: one evaluation per run
    c.finetune.seeds = 3
    results = run_seeds(c, str(tmp_path), 3)
    with open(tmp_path / "results.json") as f:
        assert json.load(f) == results
    assert results["seeds"] == [c.seed, c.seed + 1, c.seed + 2]
    accuracies = [r["scores"]["validation"]["accuracy"] for r in results["runs"]]
    assert results["median"]["validation"]["accuracy"] == float(np.median(accuracies))
    for r in results["runs"]:
        assert os.path.isdir(os.path.join(r["workdir"], "best")) and r["best_step"] == 20


def test_fine_tuning_from_and_into_a_bucket(finetuned, bucket, tmp_path):
    """init_from a model directory in a bucket (the local Cloud Storage emulator), the
    workdir there too: the same scores as from and on local disk, and results.json and
    each seed's best/ in the bucket."""
    import jax

    from bertjax import modeldir, paths
    from bertjax.tools.seeds import run_seeds

    local = str(finetuned["root"] / "pretrained")
    for name in paths.walk_files(local):
        paths.upload(os.path.join(local, name), f"{bucket}/pretrained/{name}")
    c = finetuned["config"].copy_and_resolve_references()
    c.train.steps = 20
    on_disk = run_seeds(c, str(tmp_path / "local"), 1)
    c.init_from = f"{bucket}/pretrained"
    in_bucket = run_seeds(c, f"{bucket}/ft", 1)
    assert paths.read_json(f"{bucket}/ft/results.json") == in_bucket
    assert in_bucket["runs"][0]["scores"] == on_disk["runs"][0]["scores"]
    best = in_bucket["runs"][0]["workdir"] + "/best"
    assert best.startswith(f"{bucket}/ft/seed_")
    _, params = modeldir.load(best)
    _, want = modeldir.load(on_disk["runs"][0]["workdir"] + "/best")
    jax.tree.map(np.testing.assert_array_equal, params, want)


def test_evaluate_and_predict_commands_on_the_best_checkpoint(finetuned, tmp_path):
    from clilib import bertjax

    best = os.path.join(finetuned["work"], "best")
    with open(os.path.join(best, "config.json")) as f:
        recorded = json.load(f)["scores"]
    data = f"jsonl:{finetuned['root'] / 'data'}"
    common = [
        "--config=configs/finetune.py:custom,bert_base,runlocal",
        f"--config.finetune.data={data}",
        "--config.finetune.text_fields=('p','h')",
        "--config.finetune.labels=('0','1')",
        "--config.max_seq_length=32",
        "--config.finetune.pad_multiple=8",
        f"--checkpoint={best}",
    ]
    r = bertjax("evaluate", *common, ok=True, timeout=300)
    got = json.loads(r.stdout[r.stdout.index("{") :])
    assert got["validation"]["accuracy"] == pytest.approx(recorded["validation"]["accuracy"])
    bertjax("predict", *common, f"--out={tmp_path / 'out'}", ok=True, timeout=300)
    with open(tmp_path / "out" / "custom.tsv") as f:
        lines = f.read().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 31
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}
    # A checkpoint without the task's head is refused in one line.
    r = bertjax(
        "evaluate", *common[:-1], f"--checkpoint={finetuned['root'] / 'pretrained'}", timeout=300
    )
    assert r.returncode == 1 and "has no classifier head" in r.stderr.strip().splitlines()[-1]


# --- NER -----------------------------------------------------------------------------


def test_conll_files_normalise_iob1_and_name_bad_lines(tmp_path):
    from bertjax.data import conll

    write_lines(
        str(tmp_path / "train.txt"),
        [
            "-DOCSTART- -X- -X- O",
            "",
            "Anna NNP I-NP I-PER",
            "visits VBZ I-VP O",
            "Lyon NNP I-NP I-LOC",
            "City NNP I-NP I-LOC",
            "",
            "Rome NNP I-NP I-LOC",
        ],
    )
    train = datasets.read_split("ner", f"conll:{tmp_path}", "train")
    assert [s.words for s in train] == [("Anna", "visits", "Lyon", "City"), ("Rome",)]
    assert train[0].tags == ("B-PER", "O", "B-LOC", "I-LOC") and train[1].tags == ("B-LOC",)
    assert conll.tag_set(train) == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    write_lines(str(tmp_path / "valid.txt"), ["Anna NNP I-NP I-PER", "lonely"])
    with pytest.raises(glue.DatasetError, match=r"valid.txt:2: expected a word and its tag"):
        datasets.read_split("ner", f"conll:{tmp_path}", "validation")
    write_lines(str(tmp_path / "valid.txt"), ["Anna NNP I-NP X-PER"])
    with pytest.raises(glue.DatasetError, match=r"valid.txt:1: tag 'X-PER'"):
        datasets.read_split("ner", f"conll:{tmp_path}", "validation")


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory, finetuned):
    import finetune

    from bertjax import train
    from bertjax.data.tokenizers import train_wordpiece

    root = tmp_path_factory.mktemp("ner")
    rng = np.random.default_rng(1)
    write_conll(str(root / "data" / "train.txt"), conll_sentences(rng, 240, iob1=True))
    write_conll(str(root / "data" / "valid.txt"), conll_sentences(rng, 60))
    write_conll(str(root / "data" / "test.txt"), conll_sentences(rng, 20))
    # A tokenizer that splits the names into pieces, so first-piece labelling matters.
    from bertjax import modeldir
    from bertjax.models import build, init_params

    tok = train_wordpiece([" ".join(WORDS + ["city"])] * 20, vocab_size=120)
    cfg, _ = modeldir.load(str(finetuned["root"] / "pretrained"))
    import jax

    params = jax.tree.map(
        np.asarray, jax.jit(lambda: __import__("flax").linen.unbox(init_params(build(cfg))))()
    )
    pretrained = str(root / "pretrained")
    modeldir.save(pretrained, cfg, params, tok)
    c = finetune.get_config("ner,bert_base,runlocal")
    c.init_from = pretrained
    c.finetune.update(data=f"conll:{root / 'data'}", epochs=12.0, pad_multiple=8)
    c.optim.learning_rate = 2e-3
    c.train.update(batch_size=16, checkpoint_every=0, peak_flops=1e12)
    c.max_seq_length = 32
    work = str(root / "run")
    return {"config": c, "work": work, "result": train.train(c, work), "root": root}


def test_ner_learns_entities_and_maps_predictions_back_to_words(ner_run):
    from bertjax import tasks

    assert ner_run["result"]["status"] == "done"
    f1 = eval_scalars(ner_run["work"])["validation/f1"]
    assert max(f1) > 0.8, f1
    with open(os.path.join(ner_run["work"], "best", "config.json")) as f:
        best = json.load(f)
    assert best["model"]["heads"] == ["token_classifier"]
    assert best["model"]["label_names"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    task = tasks.get(ner_run["config"])
    # Names split into several pieces: only the first carries the tag.
    feats = task.features("validation")
    pieces = sum(int((w > 0).sum()) for w in feats.extra["label_weights"])
    words = sum(len(s.words) for s in task.sentences("validation"))
    assert pieces == words < sum(len(x) - 2 for x in feats.ids)


def test_ner_predict_writes_conll_with_a_predicted_column(ner_run, tmp_path):
    from bertjax.commands import evaluate

    best = os.path.join(ner_run["work"], "best")
    written = evaluate.predict(ner_run["config"], best, str(tmp_path / "out"))
    assert [os.path.basename(p) for p in written] == ["ner.txt"]
    with open(written[0]) as f:
        blocks = [b.splitlines() for b in f.read().strip().split("\n\n")]
    assert len(blocks) == 20
    with open(ner_run["root"] / "data" / "test.txt") as f:
        gold = [b.splitlines() for b in f.read().strip().split("\n\n")[1:]]
    right = total = 0
    for ours, theirs in zip(blocks, gold, strict=True):
        assert [line.rsplit(" ", 1)[0] for line in ours] == theirs  # the original lines
        right += sum(o.split()[-1] == t.split()[-1] for o, t in zip(ours, theirs, strict=True))
        total += len(theirs)
    assert right / total > 0.9
    scores = evaluate.evaluate(ner_run["config"], best)
    assert scores["validation"]["f1"] == pytest.approx(
        max(eval_scalars(ner_run["work"])["validation/f1"]), abs=1e-6
    )
