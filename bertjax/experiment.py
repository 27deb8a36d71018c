"""What a config describes, built in one place for `train`, `bench train` and `describe`:
the task, the model config with the task's heads and the compute dtype, the optimizer,
the mesh and axis rules, and the (abstract, sharded) train state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from bertjax import sharding, steps, tasks
from bertjax.models import ModelConfig, build
from bertjax.optim import OptimConfig, make_optimizer
from bertjax.optim_params import frozen_paths
from bertjax.schedules import resolve_lengths
from bertjax.tasks.base import Task

TRAIN_DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_train_config(config: Any) -> None:
    """config.train's keys, each error naming its key."""
    t = config.train
    if int(t.batch_size) < 1:
        raise ValueError(f"train.batch_size={t.batch_size}: must be positive")
    for key in (
        "steps",
        "log_every",
        "eval_every",
        "eval_steps",
        "checkpoint_every",
        "max_consecutive_skips",
    ):
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
            key = phase.options.get("batch_key") or (
                "phase2.batch_size" if phase.index else "train.batch_size"
            )
            shape = " x ".join(f"mesh.{a}={mesh.shape[a]}" for a in axes)
            raise ValueError(
                f"{key}={phase.batch_size} does not split over the {ways} "
                f"devices the batch is sharded on ({shape}); use a multiple "
                f"of {ways}"
            )


def stored_model_config(config: Any) -> ModelConfig:
    """config.model as written (heads: the family's until the task says otherwise)."""
    return ModelConfig.from_dict(config.model.to_dict())


def model_config(config: Any, task: Task | None = None, platform: str | None = None) -> ModelConfig:
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


def phase_seq_len(config: Any, phase: Any) -> int:
    """A phase's sequence length: its own (phase2, a plan's phase) or the config's."""
    return int(phase.options.get("max_seq_length", config.max_seq_length))


def optim_config(config: Any, task: Task | None = None) -> OptimConfig:
    """config.optim with total_steps = the task's train steps / grad_accum_steps when 0,
    and the task's warmup when it decides one (fine-tuning: a share of the steps); warmup
    and decay lengths given as fractions or tokens resolved to updates (tokens: over the
    task's phases, rows x sequence length per train step; bertjax/schedules.py)."""
    task = task or tasks.get(config)
    d = config.optim.to_dict()
    if not d.get("total_steps"):
        d["total_steps"] = max(1, task.train_steps() // int(d.get("grad_accum_steps", 1)))
        warmup = task.warmup_steps(d["total_steps"])
        if warmup is not None:
            d["warmup_steps"] = warmup
        d["warmup_steps"] = min(int(d.get("warmup_steps", 0)), d["total_steps"])
    if config.get("phases"):  # a plan's learning-rate segments (bertjax/tasks/plan.py)
        from bertjax.tasks.plan import segments

        d["segments"] = segments(task.phases(), int(d.get("grad_accum_steps", 1)))
    optim = OptimConfig.from_dict(d)
    spans = None
    if optim.warmup_tokens or optim.decay_tokens:  # tokens per train step, phase by phase
        spans = [(p.end - p.start, p.batch_size * phase_seq_len(config, p)) for p in task.phases()]
    return resolve_lengths(optim, spans)


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
    return Setup(
        config, task, cfg, optim, model, tx, mesh, rules, init, abstract, target, state_shardings
    )


def plan_lines(config: Any, task: Task, cfg: ModelConfig) -> list[str]:
    """What an N-phase plan (config.phases, bertjax/tasks/plan.py) trains, phase by phase:
    steps, batch, tokens, FLOPs, masking, learning rate, data; [] without one."""
    if not config.get("phases"):
        return []
    from bertjax.tasks import plan

    phases = task.phases()
    lines = plan.describe(
        phases,
        lambda p: (
            task.flops(cfg, p.options["max_seq_length"], p.options["max_predictions_per_seq"]).total
        ),
        int(config.optim.grad_accum_steps),
    )
    return [f"plan: {len(phases)} phase{'s' if len(phases) > 1 else ''}", *lines]


def check_phase_models(cfg: ModelConfig, phases: Any) -> None:
    """A plan phase's rope_theta (bertjax/tasks/plan.py) needs a rotary model, and the
    last phase trains the model the run writes: its theta is model.rope_theta's."""
    for p in phases:
        theta = float(p.options.get("rope_theta") or 0)
        if not theta:
            continue
        if not cfg.rope_theta:
            raise ValueError(
                f"{p.options['key']}.rope_theta={theta:g}: the model has no "
                "rotary positions (model.rope_theta=0)"
            )
        if p.index == len(phases) - 1 and theta != cfg.rope_theta:
            raise ValueError(
                f"{p.options['key']}.rope_theta={theta:g}: the last phase trains "
                f"the model the run writes; set model.rope_theta={theta:g} "
                "instead"
            )


def phase_model(setup: Setup, phase: Any) -> Any | None:
    """The model `phase` trains when it changes the run's (a plan's rope_theta), or None."""
    theta = float(phase.options.get("rope_theta") or 0)
    if not theta or theta == setup.cfg.rope_theta:
        return None
    return build(setup.cfg.replace(rope_theta=theta))


# --- branches and kept checkpoints -------------------------------------------------------


def branch_point(config: Any) -> tuple[str, int] | None:
    """config.init_from_checkpoint "WORKDIR@STEP" -> (WORKDIR, STEP); None when unset.

    A run that starts from it restores that checkpoint of the other run whole (params,
    optimizer state, step, data position) and trains on to train.steps with its own
    config (a decay branched from a stable run); the other run is only read.
    """
    spec = str(config.get("init_from_checkpoint", "") or "")
    if not spec:
        return None
    workdir, sep, step = spec.rpartition("@")
    if not sep or not workdir or not step.isdigit():
        raise ValueError(
            f"config.init_from_checkpoint={spec!r}: expected WORKDIR@STEP, a "
            "saved step of another run (e.g. /runs/stable@20000)"
        )
    if config.get("init_from"):
        raise ValueError(
            f"config.init_from_checkpoint={spec!r} and config.init_from="
            f"{config.init_from!r}: give one start"
        )
    return workdir, int(step)


def check_branch(config: Any, optim: OptimConfig, total: int) -> None:
    """The branch point lies inside this run (before `total` train steps) and, under a
    warmup-stable-decay schedule, not after its decay began (the rate would jump down)."""
    point = branch_point(config)
    if point is None:
        return
    spec, step = config.init_from_checkpoint, point[1]
    if step >= total:
        raise ValueError(
            f"config.init_from_checkpoint={spec}: step {step} leaves nothing "
            f"to train in train.steps={total}"
        )
    start = optim.total_steps - optim.decay_steps
    if optim.decay == "wsd" and optim.decay_steps and step // optim.grad_accum_steps > start:
        raise ValueError(
            f"config.init_from_checkpoint={spec}: the decay "
            f"(optim.decay_steps={optim.decay_steps}) starts at update {start}, "
            f"before the branch point (update {step // optim.grad_accum_steps});"
            " set train.steps to the branch point plus the decay"
        )


def kept_steps(config: Any, phases: Any) -> Callable[[int], bool]:
    """step -> whether its checkpoint is kept whatever train.max_to_keep says (and saved
    even between train.checkpoint_every): every train.keep_every steps, and the first
    step at or past each multiple of train.keep_every_tokens tokens (rows x sequence
    length, phase by phase)."""
    every = int(config.train.get("keep_every", 0))
    every_tokens = int(config.train.get("keep_every_tokens", 0))
    if every < 0 or every_tokens < 0:
        key = "keep_every" if every < 0 else "keep_every_tokens"
        raise ValueError(f"train.{key}={config.train[key]}: must be >= 0")
    per_step = [(p.start, p.end, p.batch_size * phase_seq_len(config, p)) for p in phases]

    def tokens(step: int) -> int:  # after `step` train steps
        return sum(max(0, min(step, end) - start) * n for start, end, n in per_step)

    def keep(step: int) -> bool:
        if every and step % every == 0:
            return True
        return bool(
            every_tokens
            and step > 0
            and tokens(step) // every_tokens > tokens(step - 1) // every_tokens
        )

    return keep
