"""Knowledge distillation (DistilBERT, Sanh et al.): a student against a frozen teacher.

  heads (student): mlm
  loss: alpha_ce * KL_T(teacher || student) * T^2 + alpha_mlm * MLM + alpha_cos * cosine

Config keys (configs/distill.py):
  config.teacher                 the teacher's architecture (ModelConfig fields)
  config.distill.teacher_path    its weights: a model directory (train's WORKDIR/model,
                                 `import`, `init`) or a transformers directory with an
                                 MLM head (BertForMaskedLM, *ForPreTraining, ...)
  config.distill.teacher_dtype   the teacher's compute dtype; "auto": the student's
  config.distill.temperature, alpha_ce, alpha_mlm, alpha_cos    the loss
  config.distill.init            "teacher": the student starts from teacher layers;
                                 "scratch": from config.seed
  config.distill.teacher_layers  teacher layer for each student layer; (): evenly spaced

The teacher's parameters are never part of the train state: the task loads them
sharded on the mesh at setup and the loop passes them to every step as its
`aux_params`, so checkpoints hold the student alone. The teacher runs without dropout,
in its own compute dtype, on the same batch and masked positions; its outputs pass
through stop_gradient, so no gradient reaches it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from bertjax import modeldir, objectives, paths, steps
from bertjax.metrics import Mean
from bertjax.models.config import DTYPES, ModelConfig
from bertjax.models.registry import FAMILIES
from bertjax.tasks.base import Context, LossFn, packing
from bertjax.tasks.corpus import CorpusTask

Array = jax.Array
INITS = ("teacher", "scratch")


def mlm_families() -> tuple[str, ...]:
    """Families whose pretraining model has an MLM head on its last hidden states: teacher
    or student. (ELECTRA's discriminator has none; its generator is another tower.)"""
    return tuple(f.name for f in FAMILIES.values() if "mlm" in f.pretrain_heads)


def teacher_config(config: Any, student: ModelConfig) -> ModelConfig:
    """The teacher's ModelConfig, checked against the student and the distill keys
    (`check`); its compute dtype is distill.teacher_dtype ("auto": the student's, which
    train.dtype resolved)."""
    if "teacher" not in config or "distill" not in config:
        raise ValueError(
            "task 'distillation' needs config.teacher and config.distill: "
            "use configs/distill.py:TEACHER_to_STUDENT"
        )
    dtype = config.distill.teacher_dtype
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(
            f"distill.teacher_dtype={dtype!r}: expected auto or one of {', '.join(DTYPES)}"
        )
    teacher = ModelConfig.from_dict(config.teacher.to_dict())
    if teacher.family in mlm_families():  # else `check` names the family
        teacher = teacher.replace(heads=("mlm",))  # all the loss reads
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
        raise ValueError(
            f"distill.teacher_layers={tuple(layers)}: needs one teacher layer "
            f"per student layer ({num_student})"
        )
    bad = [i for i in layers if not 0 <= i < num_teacher]
    if bad:
        raise ValueError(
            f"distill.teacher_layers={tuple(layers)}: {bad} outside the "
            f"teacher's layers 0..{num_teacher - 1}"
        )
    return layers


def check(config: Any, student: ModelConfig, teacher: ModelConfig) -> None:
    """Fails with a message naming the key when the pair cannot be distilled as configured."""
    d = config.distill
    for name, cfg in (("teacher", teacher), ("model", student)):
        if cfg.family not in mlm_families():
            raise ValueError(
                f"{name}.family={cfg.family!r}: distillation needs an MLM model "
                f"({', '.join(mlm_families())})"
            )
    if teacher.vocab_size != student.vocab_size:
        raise ValueError(
            f"teacher.vocab_size={teacher.vocab_size} differs from "
            f"model.vocab_size={student.vocab_size}: teacher and student must "
            "share one tokenizer"
        )
    if not float(d.temperature) > 0:
        raise ValueError(f"distill.temperature={d.temperature}: must be > 0")
    alphas = {k: float(d[k]) for k in ("alpha_ce", "alpha_mlm", "alpha_cos")}
    for k, v in alphas.items():
        if v < 0:
            raise ValueError(f"distill.{k}={v}: must be >= 0")
    if not any(alphas.values()):
        raise ValueError("distill.alpha_ce, alpha_mlm and alpha_cos are all 0: nothing to train")
    if alphas["alpha_cos"] and teacher.hidden_size != student.hidden_size:
        raise ValueError(
            f"distill.alpha_cos={alphas['alpha_cos']}: the cosine loss compares "
            f"hidden states of equal width, but teacher.hidden_size="
            f"{teacher.hidden_size} and model.hidden_size={student.hidden_size}; "
            "set it to 0"
        )
    if d.init not in INITS:
        raise ValueError(f"distill.init={d.init!r}: expected one of {', '.join(INITS)}")
    seq = int(config.max_seq_length) + teacher.position_offset
    if seq > teacher.max_position_embeddings:
        raise ValueError(
            f"max_seq_length={config.max_seq_length} does not fit "
            f"teacher.max_position_embeddings={teacher.max_position_embeddings}"
        )
    if d.init == "teacher":
        teacher_layers(tuple(d.teacher_layers), teacher.num_layers, student.num_layers)


def student_from_teacher(
    student: Mapping[str, Any], teacher: Mapping[str, Any], layers: Sequence[int]
) -> tuple[dict[str, Any], list[str]]:
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
                    raise ValueError(
                        f"distill.init=teacher: the teacher has no encoder "
                        f"parameter {'/'.join((*path, source))}"
                    )
                fresh.append("/".join(here))
                out[key] = value
            elif isinstance(value, Mapping):
                out[key] = walk(value, t[source], here)
            else:
                src = t[source]
                if tuple(src.shape) != tuple(value.shape):
                    raise ValueError(
                        f"distill.init=teacher: {'/'.join(here)} has shape "
                        f"{tuple(value.shape)} in the student but "
                        f"{tuple(src.shape)} in the teacher"
                    )
                out[key] = src.astype(value.dtype)
        return out

    return walk(student, teacher, ()), fresh


def same_vocabulary(a: Any, b: Any) -> bool:
    """Whether two bertjax Tokenizers map the same tokens to the same ids."""
    return a.backend.get_vocab(with_added_tokens=True) == b.backend.get_vocab(
        with_added_tokens=True
    )


def distillation_loss_fn(
    student: Any,
    teacher: Any,
    train: bool = True,
    *,
    temperature: float = 2.0,
    alpha_ce: float = 5.0,
    alpha_mlm: float = 2.0,
    alpha_cos: float = 1.0,
) -> LossFn:
    """The student's loss against the teacher whose parameters arrive as `aux_params`;
    both models need an MLM head. Loss: `objectives.distillation_objective`."""

    def loss_fn(
        params: Any, batch: Mapping[str, Any], rng: Array, aux_params: Any = None
    ) -> tuple[Array, dict[str, Mean]]:
        if aux_params is None:
            raise ValueError("distillation needs the teacher's parameters (aux_params)")
        positions = batch["masked_lm_positions"]
        logits, out = steps.apply(
            student,
            params,
            batch,
            train,
            rng,
            masked_positions=positions,
            heads=("mlm",),
            **packing(batch),
        )
        t_logits, t_out = steps.apply(
            teacher,
            aux_params,
            batch,
            False,
            None,
            masked_positions=positions,
            heads=("mlm",),
            **packing(batch),
        )
        t_logits, t_hidden = jax.lax.stop_gradient((t_logits["mlm"], t_out["sequence"]))
        return objectives.distillation_objective(
            logits,
            batch,
            teacher_logits=t_logits,
            student_hidden=out["sequence"],
            teacher_hidden=t_hidden,
            temperature=temperature,
            alpha_ce=alpha_ce,
            alpha_mlm=alpha_mlm,
            alpha_cos=alpha_cos,
        )

    return loss_fn


def _check_teacher_tokenizer(path: str, data_dir: str, manifest: Any) -> str:
    """Refuses data tokenized with another vocabulary than the teacher's; returns a note."""
    try:
        theirs = modeldir.any_tokenizer(path)
    except (FileNotFoundError, ValueError):
        return "teacher tokenizer: none found, not checked against the data"
    if not same_vocabulary(theirs, manifest.load_tokenizer()):
        raise ValueError(
            f"distill.teacher_path={path}: the teacher's tokenizer differs from "
            f"the one {data_dir} was prepared with; prepare the data with the "
            "teacher's tokenizer (--config.tokenizer.path)"
        )
    return "teacher tokenizer: same vocabulary as the data"


class Distillation(CorpusTask):
    """A student trained on a frozen teacher's soft targets (see the module docstring)."""

    name = "distillation"

    def heads(self, cfg: ModelConfig) -> tuple[str, ...]:
        return ("mlm",)

    def model_config(self, cfg: ModelConfig) -> ModelConfig:
        """The student's config; resolves the teacher's too (`self.teacher`)."""
        cfg = super().model_config(cfg)
        self.teacher = teacher_config(self.config, cfg)
        return cfg

    def loss_fn(self, model: Any, train: bool = True) -> LossFn:
        from bertjax.models import build

        d = self.config.distill
        return distillation_loss_fn(
            model,
            build(self.teacher),
            train,
            temperature=float(d.temperature),
            alpha_ce=float(d.alpha_ce),
            alpha_mlm=float(d.alpha_mlm),
            alpha_cos=float(d.alpha_cos),
        )

    def setup(self, ctx: Context) -> Any:
        """Checks the data and the teacher's tokenizer, then loads the teacher's
        parameters sharded on the mesh, in its compute dtype."""
        from bertjax import pretrained, sharding
        from bertjax.models import build, init_params

        super().setup(ctx)
        path = self.config.distill.teacher_path
        if not path:
            raise ValueError(
                "distill.teacher_path is required: the teacher's model "
                "directory (train's WORKDIR/model, import, init) or HF dir"
            )
        notes = {_check_teacher_tokenizer(path, p.source, self.manifest(p)) for p in self.phases()}
        self.note = "; ".join(sorted(notes))
        t_cfg = self.teacher
        params = pretrained.load_exact(path, t_cfg, "distill.teacher_path")
        teacher = build(t_cfg)
        # Boxed abstract params give each leaf its logical axes, hence its sharding.
        shardings = sharding.param_shardings(
            jax.eval_shape(lambda: init_params(teacher)), ctx.mesh, ctx.rules
        )
        # A bfloat16 teacher is stored in bfloat16 too: half the memory, same compute.
        params = jax.tree.map(lambda x: np.asarray(x).astype(jax.numpy.dtype(t_cfg.dtype)), params)
        return jax.device_put(params, shardings)

    def describe_aux(self, aux_params: Any) -> str:
        """One line on the teacher, for the run's log."""
        t = self.teacher
        n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(aux_params))
        return (
            f"teacher: {t.family} L{t.num_layers} H{t.hidden_size} ({n:,} parameters, "
            f"frozen, compute {t.dtype}) from "
            f"{paths.absolute(self.config.distill.teacher_path)}; {self.note}"
        )

    def init_params(self, ctx: Context, params: Any, shardings: Any) -> tuple[Any, str] | None:
        """distill.init=teacher: the student's layers from the teacher's, on the devices."""
        from bertjax.models.scan_layout import stack_layers, unstack_layers

        if self.config.distill.init != "teacher":
            return None
        cfg, t_cfg = ctx.cfg, self.teacher
        layers = teacher_layers(
            tuple(self.config.distill.teacher_layers), t_cfg.num_layers, cfg.num_layers
        )
        fresh: list[str] = []

        def merge(student: Any, teacher: Any) -> Any:
            out, left = student_from_teacher(
                unstack_layers(student) if cfg.scan_layers else student,
                unstack_layers(teacher) if t_cfg.scan_layers else teacher,
                layers,
            )
            fresh.extend(left)
            return stack_layers(out) if cfg.scan_layers else out

        # Shard by shard: no host ever holds either model whole.
        params = jax.jit(merge, out_shardings=shardings)(params, ctx.aux_params)
        kept = f"; fresh: {', '.join(sorted(set(fresh)))}" if fresh else ""
        return params, f"teacher layers {layers}{kept}"

    def meta(self) -> dict[str, Any]:
        # Provenance only: the teacher is never saved.
        return {
            **super().meta(),
            "teacher": {
                "path": paths.absolute(self.config.distill.teacher_path),
                "model": self.teacher.to_dict(),
            },
        }
