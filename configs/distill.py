r"""Distillation configs: `TEACHER_to_STUDENT` for any two presets of configs/pretrain.py.

  # DistilBERT (Sanh et al.): a 6-layer student from layers 0,2,4,7,9,11 of BERT-Base.
  python -m bertjax train --config=configs/distill.py:bert_base_to_distilbert_base \
      --config.distill.teacher_path=/ckpt/bert_base --config.data.dir=/data/wiki_mlm \
      --workdir=/runs/distilbert
  # "Pretrained distillation" into any cell of the 24-model grid:
  python -m bertjax train --config=configs/distill.py:bert_large_to_bert_L4_H256 ...
  # On a laptop CPU (demo corpus; the teacher is a `train` run's WORKDIR/model):
  python -m bertjax train --config=configs/distill.py:bert_mini_to_bert_tiny,runlocal \
      --config.distill.teacher_path=/tmp/mini_run/model --config.data.dir=/tmp/demo_mlm \
      --workdir=/tmp/distill_run

The student is STUDENT's pretraining config (architecture, data, mesh, train keys; the
`runlocal` knob as there) with task "distillation": soft-target KL at temperature T
(times T²) + hard MLM + cosine between last hidden states, weighted alpha_ce, alpha_mlm,
alpha_cos (DistilBERT: 5, 2, 1, T = 2). The teacher (config.teacher, from TEACHER's
preset) is read from distill.teacher_path, frozen, and never saved with the student.
Data are MLM instances with dynamic masking, as DistilBERT trained; prepare them with
this same config so the teacher's tokenizer can be checked against them.

Defaults that depend on the pair: when the student's layers have the teacher's shape,
it starts from teacher layers (`distill.init=teacher`, evenly spaced unless
`distill.teacher_layers` says) and the cosine loss is on; when the widths differ it
starts from scratch and alpha_cos is 0 (the cosine needs equal widths).
"""

import os

import ml_collections

from bertjax import configfile
from bertjax.models.config import ModelConfig


def _pretrain():
    """configs/pretrain.py, beside this file."""
    here = os.path.dirname(os.path.abspath(__file__))
    return configfile.load_module(os.path.join(here, "pretrain.py"), os.path.basename(__file__))


def _same_layer_shape(a, b) -> bool:
    keys = ("hidden_size", "num_heads", "intermediate_size", "embed_dim")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name, *knobs = (arg or "bert_base_to_distilbert_base").split(",")
    teacher_name, sep, student_name = name.partition("_to_")
    if not (sep and teacher_name and student_name):
        raise ValueError(
            f"distillation config {name!r}: expected TEACHER_to_STUDENT, e.g. "
            "bert_base_to_distilbert_base"
        )
    pretrain = _pretrain()
    config = pretrain.get_config(",".join([student_name, *knobs]))
    teacher = ModelConfig.from_preset(teacher_name)
    student = ModelConfig.from_preset(student_name)
    config.task = "distillation"  # bertjax/tasks/distill.py
    # Every ModelConfig field but the task's, so any can be overridden (the vocabulary is
    # the student's: they share one tokenizer).
    config.teacher = pretrain.model_fields(teacher_name)
    config.teacher.vocab_size = config.model.vocab_size
    config.teacher.pad_token_id = config.model.pad_token_id  # ModernBERT's 50283 at runlocal
    layers_fit = _same_layer_shape(teacher, student) and student.num_layers <= teacher.num_layers
    config.distill = ml_collections.ConfigDict(
        dict(
            teacher_path="",  # model dir (train's WORKDIR/model, import, init) or HF dir
            teacher_dtype="auto",  # auto: the student's compute dtype; bfloat16 halves memory
            temperature=2.0,  # softmax temperature of the soft targets
            alpha_ce=5.0,  # soft-target KL (times T²)
            alpha_mlm=2.0,  # hard MLM loss of the student
            alpha_cos=1.0 if teacher.hidden_size == student.hidden_size else 0.0,
            init="teacher" if layers_fit else "scratch",  # teacher | scratch
            teacher_layers=(),  # one teacher layer per student layer; (): evenly spaced
        )
    )
    # DistilBERT trained on MLM instances with dynamic masking.
    config.data.update(instances="mlm", masking="dynamic", dupe_factor=1)
    if "runlocal" not in knobs:
        recipe = pretrain.recipes.PRETRAIN["distilbert"]  # AdamW 5e-4, batch 4k, 5% warmup
        config.optim.update(recipe["optim"])
        config.train.update(batch_size=recipe["batch_size"], steps=recipe["steps"])
    return config
