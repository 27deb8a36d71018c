"""Knowledge distillation: the frozen teacher, and a student started from its layers.

The losses live in bertjax/objectives.py (`distillation_objective`) and the loss
function that runs both models in bertjax/steps.py (`distillation_loss_fn`); this
module reads and checks the teacher side of a config (configs/distill.py):

  config.teacher                 the teacher's architecture (ModelConfig fields)
  config.distill.teacher_path    its weights: a model directory (train's WORKDIR/model,
                                 `import`, `init`) or an HF PyTorch directory
  config.distill.teacher_dtype   the teacher's compute dtype; "auto": the student's
  config.distill.temperature, alpha_ce, alpha_mlm, alpha_cos    the loss
  config.distill.init            "teacher": the student starts from teacher layers;
                                 "scratch": from config.seed
  config.distill.teacher_layers  teacher layer for each student layer; (): evenly spaced

The teacher's parameters are never part of the train state: the trainer holds them
next to it, sharded on the same mesh, and passes them to the step as its `frozen`
argument, so checkpoints hold the student alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bertjax.models.config import DTYPES, ModelConfig

# Families whose model has an MLM head on its last hidden states: teacher or student.
# (ELECTRA's discriminator has none; its generator is a different tower.)
FAMILIES = ("bert", "roberta", "albert", "distilbert")
INITS = ("teacher", "scratch")


def teacher_config(config: Any, student: ModelConfig) -> ModelConfig:
    """The teacher's ModelConfig, checked against the student and the distill keys
    (`check`); its compute dtype is distill.teacher_dtype ("auto": the student's, which
    train.dtype resolved)."""
    if "teacher" not in config or "distill" not in config:
        raise ValueError("objective 'distillation' needs config.teacher and config.distill: "
                         "use configs/distill.py:TEACHER_to_STUDENT")
    dtype = config.distill.teacher_dtype
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"distill.teacher_dtype={dtype!r}: expected auto or one of "
                         f"{', '.join(DTYPES)}")
    teacher = ModelConfig.from_dict(config.teacher.to_dict())
    teacher = teacher.replace(dtype=student.dtype if dtype == "auto" else dtype)
    check(config, student, teacher)
    return teacher


def teacher_layers(spec: Sequence[int], num_teacher: int, num_student: int) -> list[int]:
    """The teacher layer each student layer starts from.

    spec: explicit indices (one per student layer), or empty for evenly spaced layers
    round(linspace(0, num_teacher - 1, num_student)), which for 12 -> 6 is DistilBERT's
    0, 2, 4, 7, 9, 11.
    """
    if not spec:
        if num_student == 1:
            return [num_teacher - 1]
        return [int(i) for i in np.round(np.linspace(0, num_teacher - 1, num_student))]
    layers = [int(i) for i in spec]
    if len(layers) != num_student:
        raise ValueError(f"distill.teacher_layers={tuple(layers)}: needs one teacher layer "
                         f"per student layer ({num_student})")
    bad = [i for i in layers if not 0 <= i < num_teacher]
    if bad:
        raise ValueError(f"distill.teacher_layers={tuple(layers)}: {bad} outside the "
                         f"teacher's layers 0..{num_teacher - 1}")
    return layers


def check(config: Any, student: ModelConfig, teacher: ModelConfig) -> None:
    """Fails with a message naming the key when the pair cannot be distilled as configured."""
    d = config.distill
    for name, cfg in (("teacher", teacher), ("model", student)):
        if cfg.family not in FAMILIES:
            raise ValueError(f"{name}.family={cfg.family!r}: distillation needs an MLM model "
                             f"({', '.join(FAMILIES)})")
    if teacher.vocab_size != student.vocab_size:
        raise ValueError(f"teacher.vocab_size={teacher.vocab_size} differs from "
                         f"model.vocab_size={student.vocab_size}: teacher and student must "
                         "share one tokenizer")
    if not float(d.temperature) > 0:
        raise ValueError(f"distill.temperature={d.temperature}: must be > 0")
    alphas = {k: float(d[k]) for k in ("alpha_ce", "alpha_mlm", "alpha_cos")}
    for k, v in alphas.items():
        if v < 0:
            raise ValueError(f"distill.{k}={v}: must be >= 0")
    if not any(alphas.values()):
        raise ValueError("distill.alpha_ce, alpha_mlm and alpha_cos are all 0: nothing to train")
    if alphas["alpha_cos"] and teacher.hidden_size != student.hidden_size:
        raise ValueError(f"distill.alpha_cos={alphas['alpha_cos']}: the cosine loss compares "
                         f"hidden states of equal width, but teacher.hidden_size="
                         f"{teacher.hidden_size} and model.hidden_size={student.hidden_size}; "
                         "set it to 0")
    if d.init not in INITS:
        raise ValueError(f"distill.init={d.init!r}: expected one of {', '.join(INITS)}")
    seq = int(config.max_seq_length) + (teacher.pad_token_id + 1
                                        if teacher.positions_from_padding else 0)
    if seq > teacher.max_position_embeddings:
        raise ValueError(f"max_seq_length={config.max_seq_length} does not fit "
                         f"teacher.max_position_embeddings={teacher.max_position_embeddings}")
    if d.init == "teacher":
        teacher_layers(tuple(d.teacher_layers), teacher.num_layers, student.num_layers)


def student_from_teacher(student: Mapping[str, Any], teacher: Mapping[str, Any],
                         layers: Sequence[int]) -> tuple[dict[str, Any], list[str]]:
    """The student's parameters with every module the teacher also has copied from it.

    Both trees in the loop layout (`layer_{i}`; see models/layers.py), of numpy or jax
    arrays (the trainer runs this under jit, on the sharded trees). Student encoder
    layer j takes teacher layer `layers[j]`; every other parameter takes the teacher's
    parameter of the same path (embeddings, LayerNorms, the MLM head, the pooler). A
    student parameter the teacher lacks keeps its fresh value (e.g. a BERT student's
    token-type table or pooler from a DistilBERT teacher); a teacher parameter the
    student lacks is dropped (a DistilBERT student takes no token-type table, as in
    DistilBERT). Shapes must match exactly.

    Returns (params, the paths left fresh).
    """
    fresh: list[str] = []

    def walk(s: Mapping[str, Any], t: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
        out = {}
        for key, value in s.items():
            here = (*path, key)
            source = key
            m = re.fullmatch(r"layer_(\d+)", key)
            if path == ("encoder",) and m:
                source = f"layer_{layers[int(m[1])]}"
            if t is None or source not in t:
                if path[:1] == ("encoder",) or here == ("encoder",):
                    raise ValueError(f"distill.init=teacher: the teacher has no encoder "
                                     f"parameter {'/'.join((*path, source))}")
                fresh.append("/".join(here))
                out[key] = value
            elif isinstance(value, Mapping):
                out[key] = walk(value, t[source], here)
            else:
                src = t[source]
                if tuple(src.shape) != tuple(value.shape):
                    raise ValueError(f"distill.init=teacher: {'/'.join(here)} has shape "
                                     f"{tuple(value.shape)} in the student but "
                                     f"{tuple(src.shape)} in the teacher")
                out[key] = src.astype(value.dtype)
        return out

    return walk(student, teacher, ()), fresh


def same_vocabulary(a: Any, b: Any) -> bool:
    """Whether two bertjax Tokenizers map the same tokens to the same ids."""
    return a.backend.get_vocab(with_added_tokens=True) == b.backend.get_vocab(
        with_added_tokens=True)
