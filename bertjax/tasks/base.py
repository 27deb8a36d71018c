"""The interface between the training loop (bertjax/train.py) and a task.

A task says everything that differs between training objectives and fine-tuning
problems; the loop supplies the mesh, the sharded state, resume, checkpoints,
signals, non-finite skips, metrics, the evaluation schedule and the final model
directory, and knows no task. A task:

  heads(cfg)                 the heads its model carries (bertjax/models/family.py)
  setup(ctx)                 loads what it needs beside the state (a teacher), before
                             the workdir is touched; returns the step's aux_params
  loss_fn(model, train)      (params, batch, rng, aux_params) -> (loss, {name: Mean})
  phases()                   spans of steps with their data (two-phase pretraining)
  train_batches(phase, n)    an iterator of host batches from step n of a phase, with
                             its sequence length and training FLOPs per token
  train_steps(), warmup_steps(total), eval_due(step)
                             the run's length, its warmup, when to evaluate
  evaluators(ctx, phase)     objects with run(params) -> {metric: value}, each seeing
                             a whole split (so corpus-level metrics are possible);
                             predict_fn(model) gives them outputs, main_metric names
                             the score the best checkpoint is kept by
  init_params(ctx, params)   a task-specific start (distillation: teacher layers)
  synthetic_batches(...)     batches of the right shapes for `bench train`
  tokenizer()                what the final model directory is saved with
  describe_aux(aux_params)   a log line on what setup loaded
  meta()                     provenance written into every checkpoint

Tasks are listed by name in `TASKS` of bertjax/tasks/__init__.py, so a new task is one
file, one entry there and a config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import jax
import numpy as np

from bertjax.flops import Flops
from bertjax.models.config import ModelConfig

Array = jax.Array
Batch = Mapping[str, Any]
LossFn = Callable[[Any, Batch, Array, Any], tuple[Array, dict[str, Any]]]

FIRST_ID = 5  # synthetic ids start above the special tokens of every family


@dataclasses.dataclass(frozen=True)
class Phase:
    """A span of train steps [start, end) with one data source and batch size."""

    index: int
    start: int
    end: int
    batch_size: int
    source: str  # what it reads, for the log line and errors (a data directory)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # task-specific


@dataclasses.dataclass
class Batches:
    """Host batches of one phase: numpy dicts of [batch, ...] arrays."""

    iterator: Iterator[dict[str, np.ndarray]]
    seq_len: int  # tokens per row, for throughput
    flops: Flops  # training FLOPs per token (bertjax/flops.py)
    close: Callable[[], None] = lambda: None


class Evaluator(Protocol):
    name: str  # TensorBoard prefix and log label ("eval", "validation_matched", ...)

    def run(self, params: Any) -> dict[str, float]:
        """Metrics of `params` over a whole split."""


@dataclasses.dataclass
class Context:
    """What the loop lends a task: the model, where arrays live, and how to run steps.

    `eval_step(params, batch)` runs the task's eval loss function jitted on the mesh
    (batch: host numpy, placed here) and returns its metrics on the host.
    """

    config: Any
    cfg: ModelConfig
    model: Any
    mesh: Any
    rules: Any
    aux_params: Any = None
    eval_step: Callable[[Any, Batch], dict[str, Any]] | None = None
    # predict(params, host batch) -> the task's predict_fn outputs for the global batch,
    # on the host (tasks whose evaluators score predictions).
    predict: Callable[[Any, Batch], Any] | None = None


class Task:
    """Defaults shared by tasks; subclasses override what differs."""

    name = ""
    teacher: ModelConfig | None = None  # a frozen model the step runs (counted in FLOPs)

    def __init__(self, config: Any) -> None:
        self.config = config

    def heads(self, cfg: ModelConfig) -> tuple[str, ...]:
        raise NotImplementedError

    def model_config(self, cfg: ModelConfig) -> ModelConfig:
        """`cfg` with this task's heads."""
        return cfg.replace(heads=self.heads(cfg))

    def setup(self, ctx: Context) -> Any:
        """Loads what the step needs beside the train state; returns its aux_params."""
        del ctx
        return None

    def loss_fn(self, model: Any, train: bool = True) -> LossFn:
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def train_steps(self) -> int:
        """Train steps of the whole run (the loop's and the schedule's length)."""
        steps = int(self.config.train.steps)
        if steps < 1:
            raise ValueError(f"train.steps={steps}: must be positive")
        return steps

    def warmup_steps(self, total: int) -> int | None:
        """Warmup of the schedule when the task decides it (None: optim.warmup_steps)."""
        del total
        return None

    def eval_due(self, step: int) -> bool:
        """Whether to evaluate after train step `step` (1-based)."""
        every = int(self.config.train.eval_every)
        return every > 0 and step % every == 0

    # (evaluator name, metric) whose best value the loop keeps a model directory of
    # (WORKDIR/best); None: no best checkpoint.
    main_metric: tuple[str, str] | None = None

    def predict_fn(self, model: Any) -> Callable[[Any, Batch], Any] | None:
        """(params, batch) -> outputs the evaluators score, jitted by the loop; None if
        the evaluators need none."""
        del model
        return None

    def train_batches(self, phase: Phase, start_step: int) -> Batches:
        raise NotImplementedError

    def evaluators(self, ctx: Context, phase: Phase) -> list[Evaluator]:
        del ctx, phase
        return []

    def weights_from(self) -> str:
        """The checkpoint whose weights a fresh run starts from ("" for none):
        config.init_from by default."""
        return self.config.get("init_from", "") or ""

    def init_params(self, ctx: Context, params: Any, shardings: Any) -> tuple[Any, str] | None:
        """A task-specific start for fresh `params` (sharded), or None for none."""
        del ctx, params, shardings
        return None

    def synthetic_batches(
        self, cfg: ModelConfig, batch_size: int, seq_len: int, seed: int, count: int
    ) -> list[dict[str, np.ndarray]]:
        """`count` batches of the task's shapes for `bench train` (`random_batches`)."""
        raise NotImplementedError

    def flops(self, cfg: ModelConfig, seq_len: int) -> Flops:
        """Training FLOPs per token at `seq_len` (for `describe` and `bench train`)."""
        raise NotImplementedError

    def tokenizer(self) -> Any:
        """The tokenizer the final model directory is saved with, or None."""
        return None

    def describe_aux(self, aux_params: Any) -> str | None:
        """A line on what `setup` loaded, for the run's log (None: nothing to say)."""
        del aux_params
        return None

    def meta(self) -> dict[str, Any]:
        """Provenance saved in each checkpoint; a resumed run warns when it changed."""
        return {"task": self.name}


def packing(batch: Batch, per_sequence: str | None = None) -> dict[str, Any]:
    """The model's keyword arguments for `batch`'s layout (docs/packing.md).

    {} for one sequence per row. Packed rows carry num_sequences [B] (sequences in each
    row; its presence is what marks a batch packed, a static fact under jit):
    packed=True, and, when a head reads one vector per sequence, `per_sequence` names
    the batch's [B, S] key whose S gives the slots, so those heads read each sequence's
    first token (heads.first_positions of the attention mask's segment numbers).
    """
    if "num_sequences" not in batch:
        return {}
    if per_sequence is None:
        return {"packed": True}
    from bertjax.models.heads import first_positions

    slots = batch[per_sequence].shape[1]
    return {"packed": True, "first_positions": first_positions(batch["attention_mask"], slots)[0]}


def packing_metrics(batch: Batch) -> dict[str, Any]:
    """{"packing_efficiency": the share of a packed batch's positions that hold real
    tokens, counting its positions}; {} for a batch of one sequence per row."""
    if "num_sequences" not in batch:
        return {}
    import jax.numpy as jnp

    from bertjax.metrics import Mean

    mask = batch["attention_mask"]
    return {"packing_efficiency": Mean(jnp.mean((mask > 0).astype(jnp.float32)), float(mask.size))}


def random_batches(
    cfg: ModelConfig,
    batch_size: int,
    seq_len: int,
    seed: int,
    count: int,
    fill: Callable[[np.random.Generator, np.ndarray], dict[str, np.ndarray]],
) -> list[dict[str, np.ndarray]]:
    """`count` synthetic batches (`bench train`, the memory check): no data and no
    tokenizer are read. Each draws input_ids [B, L] int32 in [FIRST_ID, model.vocab_size)
    from one numpy generator seeded by `seed`, then `fill(rng, ids)` makes the task's
    batch of them (it may draw more from `rng`). Errors name the key that does not fit.
    """
    if seq_len + cfg.position_offset > cfg.max_position_embeddings:
        raise ValueError(
            f"max_seq_length={seq_len} does not fit model.max_position_embeddings="
            f"{cfg.max_position_embeddings}"
        )
    if cfg.vocab_size <= FIRST_ID:
        raise ValueError(f"model.vocab_size={cfg.vocab_size}: must exceed {FIRST_ID}")
    rng = np.random.default_rng(seed)
    return [
        fill(rng, rng.integers(FIRST_ID, cfg.vocab_size, (batch_size, seq_len), dtype=np.int32))
        for _ in range(count)
    ]
