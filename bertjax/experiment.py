"""What a config describes, built in one place for `train`, `bench train` and `describe`:
the task, the model config with the task's heads and the compute dtype, the optimizer,
the mesh and axis rules, and the (abstract, sharded) train state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from bertjax import sharding, steps, tasks
from bertjax.models import ModelConfig, build
from bertjax.optim import OptimConfig, frozen_paths, make_optimizer
from bertjax.tasks.base import Task

TRAIN_DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_train_config(config: Any) -> None:
    """config.train's keys, each error naming its key."""
    t = config.train
    if int(t.batch_size) < 1:
        raise ValueError(f"train.batch_size={t.batch_size}: must be positive")
    for key in ("steps", "log_every", "eval_every", "eval_steps", "checkpoint_every",
                "max_consecutive_skips"):
        if int(t[key]) < 0:
            raise ValueError(f"train.{key}={t[key]}: must be >= 0")
    if int(t.max_to_keep) < 1:
        raise ValueError(f"train.max_to_keep={t.max_to_keep}: must be >= 1")
    if t.dtype not in TRAIN_DTYPES:
        raise ValueError(f"train.dtype={t.dtype!r}: expected {', '.join(TRAIN_DTYPES)}")


def check_batch_sizes(phases: Any, mesh: Any, rules: Any) -> None:
    """Every phase's batch splits evenly over the mesh axes the batch is sharded on; the
    error names the key and the mesh."""
    axes = dict(rules).get("batch") or ()
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    ways = 1
    for a in axes:
        ways *= int(mesh.shape[a])
    for phase in phases:
        if phase.batch_size % ways:
            key = "phase2.batch_size" if phase.index else "train.batch_size"
            shape = " x ".join(f"mesh.{a}={mesh.shape[a]}" for a in axes)
            raise ValueError(f"{key}={phase.batch_size} does not split over the {ways} "
                             f"devices the batch is sharded on ({shape}); use a multiple "
                             f"of {ways}")


def stored_model_config(config: Any) -> ModelConfig:
    """config.model as written (heads: the family's until the task says otherwise)."""
    return ModelConfig.from_dict(config.model.to_dict())


def model_config(config: Any, task: Task | None = None, platform: str | None = None
                 ) -> ModelConfig:
    """The model a run trains: config.model with the task's heads (and the task's own
    knobs, e.g. electra.generator_fraction) and the training compute dtype (train.dtype;
    auto = bfloat16 on TPU and GPU, model.dtype on CPU; `platform` default: JAX's)."""
    task = task or tasks.get(config)
    cfg = stored_model_config(config)
    dtype = config.train.dtype
    if dtype == "auto":
        platform = platform or jax.default_backend()
        dtype = "bfloat16" if platform in ("tpu", "gpu") else cfg.dtype
    return task.model_config(cfg.replace(dtype=dtype))


def optim_config(config: Any, task: Task | None = None) -> OptimConfig:
    """config.optim with total_steps = the task's train steps / grad_accum_steps when 0,
    and the task's warmup when it decides one (fine-tuning: a share of the steps)."""
    task = task or tasks.get(config)
    d = config.optim.to_dict()
    if not d.get("total_steps"):
        d["total_steps"] = max(1, task.train_steps() // int(d.get("grad_accum_steps", 1)))
        warmup = task.warmup_steps(d["total_steps"])
        if warmup is not None:
            d["warmup_steps"] = warmup
        d["warmup_steps"] = min(int(d.get("warmup_steps", 0)), d["total_steps"])
    return OptimConfig.from_dict(d)


@dataclasses.dataclass
class Setup:
    """Everything `build` derives from a config; nothing is on the devices yet."""

    config: Any
    task: Task
    cfg: ModelConfig
    optim: OptimConfig
    model: Any
    tx: Any
    mesh: Any
    rules: Any
    init: Any  # zero-argument function building the state (steps.init_state)
    abstract: Any  # its boxed abstract tree (jax.eval_shape)
    target: Any  # unboxed ShapeDtypeStructs with shardings: the restore target
    state_shardings: Any

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    def num_params(self) -> int:
        return sum(int(x.size) for x in jax.tree.leaves(self.target["params"]))


def build_setup(config: Any, devices: Any = None) -> Setup:
    """Task, model, optimizer, mesh and abstract state of `config`, checked; any bad key
    fails here, before a file is touched. `devices`: the mesh's (default all of JAX's;
    `compile` passes a TPU topology's)."""
    check_train_config(config)
    task = tasks.get(config)
    cfg = model_config(config, task, devices[0].platform if devices else None)
    optim = optim_config(config, task)
    mesh = sharding.make_mesh(config.mesh, devices)
    rules = sharding.rules(list(config.sharding.rules) or None)
    model = build(cfg)
    frozen = frozen_paths(cfg)
    tx = make_optimizer(optim, frozen=frozen)
    init = steps.init_state(model, tx, int(config.seed))
    abstract = jax.eval_shape(init)
    target, state_shardings = sharding.abstract_state(init, mesh, rules, abstract=abstract)
    make_optimizer(optim, target["params"], frozen)  # checks dtypes and frozen paths
    return Setup(config, task, cfg, optim, model, tx, mesh, rules, init, abstract, target,
                 state_shardings)
