"""The check behind tests/test_finetune_families.py and tests/test_modernbert_finetune.py:
a family's tiny pretrained model directory (with the family's own kind of tokenizer) is
fine-tuned by bertjax for an epoch on a task kind (sequence classification, token
classification, extractive question answering); its best checkpoint is exported and
loaded by transformers' *ForSequenceClassification / *ForTokenClassification /
*ForQuestionAnswering, which must give the same dev logits (<= 1e-5, finite) and so the
same dev score as bertjax recorded.
"""

from __future__ import annotations

import json
import os

import modellib
import numpy as np
import pytest
from tasklib import (
    COUNTRY,
    NER_PEOPLE,
    NER_PLACES,
    READER_PEOPLE,
    READER_PLACES,
    WORDS,
    conll_sentences,
    pair_task,
    reading_task,
    write_conll,
    write_lines,
    write_squad,
)

from bertjax.models import modernbert

TINY = dict(
    vocab_size=320,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    max_position_embeddings=40,
)
# family -> its fields here beyond modellib's: RoBERTa's real position offset (2 + 40)
# and eps; DistilBERT's learned positions.
FAMILY = {
    "bert": {},
    "roberta": dict(max_position_embeddings=42, layer_norm_eps=1e-5),
    "albert": {},
    "distilbert": dict(sinusoidal_positions=False),
    "electra": modellib.NO_GENERATOR,
}
CLASSES = {
    "glue": "ForSequenceClassification",
    "ner": "ForTokenClassification",
    "squad": "ForQuestionAnswering",
}
HEAD = {"glue": "classifier", "ner": "token_classifier", "squad": "span"}
MAIN = {"glue": "accuracy", "ner": "f1", "squad": "f1"}
# ModernBERT's switches; its trained tokenizer (bpe-modernbert) has [PAD] at id 3; layer
# 0 global, layer 1 local (32-token rows, window 8).
MODERNBERT = {
    **{
        k: v
        for k, v in modernbert.FAMILY.defaults.items()
        if k not in ("vocab_size", "max_position_embeddings")
    },
    "pad_token_id": 3,
    "local_window": 8,
}
FIELDS = {**FAMILY, "modernbert": MODERNBERT}
PREFIX = {
    "bert": "Bert",
    "roberta": "Roberta",
    "albert": "Albert",
    "distilbert": "DistilBert",
    "electra": "Electra",
    "modernbert": "ModernBert",
}


def write_data(root):
    """The three tasks' files under `root` (pairs/, ner/, squad/); returns `root`."""
    rng = np.random.default_rng(3)
    for split, n in (("train", 96), ("validation", 40)):
        write_lines(
            str(root / "pairs" / f"{split}.jsonl"),
            [json.dumps({"p": a, "h": b, "label": str(y)}) for a, b, y in pair_task(rng, n)],
        )
    write_conll(str(root / "ner" / "train.txt"), conll_sentences(rng, 96))
    write_conll(str(root / "ner" / "valid.txt"), conll_sentences(rng, 40))
    write_squad(str(root / "squad" / "train-v1.1.json"), reading_task(rng, 64))
    write_squad(str(root / "squad" / "dev-v1.1.json"), reading_task(rng, 32))
    return root


def pretrained(family: str, root) -> str:
    """A tiny model directory of `family` with its own kind of tokenizer."""
    import jax

    from bertjax import modeldir
    from bertjax.data.train_tokenizer import train as train_tokenizer
    from bertjax.models import build, init_params
    from bertjax.models.registry import family as record

    texts = [
        " ".join(
            WORDS
            + NER_PEOPLE
            + NER_PLACES
            + ["city"]
            + READER_PEOPLE
            + READER_PLACES
            + list(COUNTRY.values())
            + "lives in which is ? .".split()
        )
    ] * 30
    tok = train_tokenizer(
        texts, record(family).tokenizer_kind, 320, str(root / "tok"), family=family
    )
    cfg = modellib.tiny(family, TINY, **FIELDS[family], heads=())
    params = jax.tree.map(
        np.asarray, jax.jit(lambda: __import__("flax").linen.unbox(init_params(build(cfg))))()
    )
    out = str(root / "pretrained")
    modeldir.save(out, cfg, params, tok)
    return out


def check(family: str, kind: str, data, tmp_path) -> None:
    """Fine-tunes `family`'s tiny model on `kind` for an epoch, exports its best checkpoint,
    and asserts transformers' class gives the same dev logits (<= 1e-5, finite) and the
    same dev score as bertjax recorded."""
    import finetune
    import torch
    import transformers

    from bertjax import modeldir, tasks, train
    from bertjax.convert.hfdir import export_hf
    from bertjax.models import build

    dataset = {"glue": "custom", "ner": "ner", "squad": "squad_v1"}[kind]
    c = finetune.get_config(f"{dataset},{family}_base,runlocal")
    c.init_from = pretrained(family, tmp_path)
    if kind == "glue":
        c.finetune.update(data=f"jsonl:{data / 'pairs'}", text_fields=("p", "h"), labels=("0", "1"))
    elif kind == "ner":
        c.finetune.update(data=f"conll:{data / 'ner'}")
    else:
        c.finetune.update(data=f"json:{data / 'squad'}", doc_stride=8, max_query_length=8)
    c.finetune.update(epochs=1.0, pad_multiple=32)  # one length: one compiled step
    c.train.update(batch_size=16, checkpoint_every=0, peak_flops=1e12)
    c.max_seq_length = 32
    work = str(tmp_path / "run")
    train.train(c, work)
    best = os.path.join(work, "best")
    with open(os.path.join(best, "config.json")) as f:
        recorded = json.load(f)["scores"]["validation"]
    out = str(tmp_path / "hf")
    export_hf(best, out)
    cls = getattr(transformers, PREFIX[family] + CLASSES[kind])
    model, info = cls.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.eval()

    task = tasks.get(c)
    cfg, params = modeldir.load(best)
    head = HEAD[kind]
    batches, order = task.eval_batches("validation")
    ours, theirs = [], []
    for b in batches:
        logits = np.asarray(
            build(cfg).apply(
                {"params": params},
                b["input_ids"],
                b["token_type_ids"],
                b["attention_mask"],
                heads=(head,),
            )[0][head]
        )
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        if cfg.type_vocab_size:
            inputs["token_type_ids"] = b["token_type_ids"]
        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()})
        ref = (
            np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)
            if kind == "squad"
            else out.logits.numpy()
        )
        real = b["weights"] > 0
        mask = b["attention_mask"][real].astype(bool) if kind != "glue" else slice(None)
        assert np.isfinite(logits).all() and np.isfinite(ref).all()
        np.testing.assert_allclose(logits[real][mask], ref[real][mask], atol=1e-5, rtol=0)
        if kind == "ner":  # per token: ids of the same shape for the score
            ours.append(np.pad(logits.argmax(-1), [(0, 0), (0, 32 - logits.shape[1])]))
            theirs.append(np.pad(ref.argmax(-1), [(0, 0), (0, 32 - ref.shape[1])]))
        elif kind == "squad":  # per token: [rows, 32, 2]
            ours.append(np.pad(logits, [(0, 0), (0, 32 - logits.shape[1]), (0, 0)]))
            theirs.append(np.pad(ref, [(0, 0), (0, 32 - ref.shape[1]), (0, 0)]))
        else:
            ours.append(logits)
            theirs.append(ref)
    from bertjax.tasks.finetune import ordered

    score = task.scores("validation", ordered(theirs, order))
    main = MAIN[kind]
    assert score[main] == pytest.approx(recorded[main], abs=1e-6)
    assert task.scores("validation", ordered(ours, order))[main] == pytest.approx(
        recorded[main], abs=1e-6
    )
