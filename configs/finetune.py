r"""Fine-tuning configs: `DATASET[,PRESET][,runlocal]`.

  # SST-2 on a pretrained BERT (a bertjax model directory or a transformers directory
  # of any form and family; its architecture and tokenizer come with it):
  python -m bertjax train --config=configs/finetune.py:sst2 \
      --config.init_from=/ckpt/bert_base --workdir=/runs/sst2
  # From the original GLUE files instead of TFDS:
  python -m bertjax train --config=configs/finetune.py:mnli \
      --config.init_from=/ckpt/roberta_base --config.finetune.data=glue:/data/glue/MNLI ...
  # CoNLL-2003 NER from TFDS, or your own CoNLL files:
  python -m bertjax train --config=configs/finetune.py:ner --config.finetune.data=conll:/data/ner \
      --config.init_from=/ckpt/bert_base --workdir=/runs/ner
  # SQuAD v2.0 from the official JSON files (DIR/train-v2.0.json, DIR/dev-v2.0.json):
  python -m bertjax train --config=configs/finetune.py:squad_v2 \
      --config.finetune.data=json:/data/squad --config.init_from=/ckpt/bert_base ...
  # Your own data: DIR/train.jsonl and DIR/validation.jsonl, {"text": ..., "label": ...}
  python -m bertjax train --config=configs/finetune.py:custom \
      --config.finetune.data=jsonl:/data/reviews --config.finetune.labels='("neg","pos")' \
      --config.init_from=/ckpt/bert_base --workdir=/runs/reviews

DATASET: a GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, ax) or custom
(the glue task), conll2003 or ner (your CoNLL files; the ner task), squad_v1 or squad_v2
(the squad task), or a built-in demo task: demo_next, demo_boundary, demo_intruder
(bertjax/data/demo_tasks.py; no download).
PRESET names the family whose fine-tuning recipe applies (the papers': learning rate,
batch, epochs, warmup, Adam settings; configs/recipes.py) and the architecture
when training from scratch (no init_from); default bert_base. With init_from, the
architecture is the checkpoint's whatever the preset: pick a preset of its family for
its recipe; a recipe's `tasks` entry overrides it for one DATASET (ALBERT's per-task
steps, for example). `runlocal` shrinks the run for a laptop CPU.
"""

import os

import ml_collections

from bertjax import configfile
from bertjax.data import datasets


def _pretrain():
    """configs/pretrain.py, beside this file."""
    here = os.path.dirname(os.path.abspath(__file__))
    return configfile.load_module(os.path.join(here, "pretrain.py"), os.path.basename(__file__))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    dataset, *rest = (arg or "sst2").split(",")
    knobs = [k for k in rest if k == "runlocal"]
    presets = [k for k in rest if k != "runlocal"]
    if len(presets) > 1:
        raise ValueError(f"{arg!r}: expected DATASET[,PRESET][,runlocal]")
    preset = presets[0] if presets else "bert_base"
    spec = datasets.get(dataset)  # bertjax/data/datasets.py: its task, data and labels
    pretrain = _pretrain()
    config = pretrain.get_config(",".join([preset, *knobs]))
    # configs/recipes.py: the family's, then the preset's, then the DATASET's entry.
    recipe, optim = pretrain.recipes.finetune(config.model.family, preset, dataset)
    squad = spec.task == "squad"
    config.task = spec.task  # bertjax/tasks/glue.py, ner.py or squad.py
    epochs = (
        recipe.get("long_epochs", recipe["epochs"])
        if dataset in recipe.get("long_tasks", ())
        else recipe["epochs"]
    )
    demo = spec.demo
    config.finetune = ml_collections.ConfigDict(
        dict(
            dataset="custom" if demo else dataset,  # a GLUE task, or custom
            # glue: tfds | glue:DIR | jsonl:DIR | csv:DIR (bertjax/data/glue.py);
            # ner: tfds (CoNLL-2003) | conll:DIR (bertjax/data/conll.py)
            data=spec.data,
            text_fields=("text",),  # custom data: one field, or two for sentence pairs
            label_field="label",
            # custom data: the class names (empty: a regression); ner: the tag set
            labels=spec.labels,
            label_all_pieces=False,  # ner: tag every sub-token, not only a word's first
            epochs=float(epochs),  # over the train split; train.steps > 0 overrides
            warmup_proportion=float(recipe["warmup_proportion"]),  # of all steps
            warmup_steps=int(recipe.get("warmup_steps", 0)),  # > 0: this many instead
            pad_multiple=16,  # a batch is padded to its longest row rounded up to this
            # off | best_fit | first_fit: each train batch's sequences packed into rows of
            # max_seq_length (docs/packing.md); at most this many per row
            packing="off",
            packing_max_sequences=16,
            from_scratch=False,  # True: init_from's architecture and tokenizer, fresh weights
            seeds=1,  # K > 1: K runs (seed, seed + 1, ...) and their median (results.json)
        )
    )
    config.optim.update(
        name="adamw",
        learning_rate=float(recipe["learning_rate"]),
        warmup_steps=0,
        decay="linear",
        weight_decay=0.01,
        b1=0.9,
        b2=0.999,
        eps=1e-6,
        clip_norm=1.0,
        grad_accum_steps=1,
        # a pretraining recipe's warmup-stable-decay keys (ModernBERT's)
        warmup_fraction=0.0,
        warmup_tokens=0,
        decay_steps=0,
        decay_fraction=0.0,
        decay_tokens=0,
    )
    config.optim.update(optim)
    config.train.update(
        batch_size=int(recipe["batch_size"]),
        steps=int(recipe.get("steps", 0)),  # 0: finetune.epochs over the train split
        eval_every=0,  # evaluation at every epoch's end, and every N steps if > 0
        log_every=50,
        checkpoint_every=1000,
        max_to_keep=2,
    )
    config.max_seq_length = 128
    if squad:
        config.max_seq_length = 384
        config.finetune.update(
            version=spec.version,
            doc_stride=128,  # tokens between window starts (Google's; not HF's overlap)
            max_query_length=64,  # question tokens kept
            n_best=20,  # candidate starts and ends per window
            max_answer_length=30,  # tokens
            null_score_diff_threshold=0.0,  # v2.0: no answer when null - best > this
        )
    if dataset == "demo_intruder":
        config.finetune.max_answer_length = 8  # the answer is one word
    # Pretraining keys a fine-tuning run does not read.
    for key in ("data", "phase2", "max_predictions_per_seq", "electra", "downstream"):
        if key in config:
            del config[key]
    if "runlocal" in knobs:
        config.max_seq_length = 64
        config.train.update(batch_size=16, log_every=10, checkpoint_every=100)
        if demo:  # bert_tiny: higher than BERT's 2e-5, low enough to keep what a
            # CPU pretraining taught (1e-3 erases most of it; benchmarks/RESULTS.md)
            config.optim.learning_rate = 3e-4
        if (squad and dataset != "demo_intruder") or dataset == "demo_boundary":
            config.max_seq_length = 128  # three sentences: up to ~90 tokens
        if squad:
            config.finetune.update(doc_stride=48, max_query_length=32)
    return config
