r"""`python -m bertjax train`: sharded pretraining with checkpoints and exact resume.

  python -m bertjax prepare data --config=configs/pretrain.py:bert_tiny,runlocal \
      --config.data.dir=/tmp/demo_data
  python -m bertjax train --config=configs/pretrain.py:bert_tiny,runlocal \
      --config.data.dir=/tmp/demo_data --workdir=/tmp/bert_tiny_run

WORKDIR holds everything a run writes:

  config.json    the resolved config of the latest start
  checkpoints/   Orbax training checkpoints (bertjax/checkpoint.py: TrainCheckpoints)
  logs/          TensorBoard event files (train/ and eval/ scalars)
  model/         the final parameters as a model directory (export, fill_mask read it)

Resume order (the same on every start, so re-running the command is the way to resume):
  1. the newest committed checkpoint in WORKDIR/checkpoints: state and data position;
  2. else `config.init_from`: parameters from a model directory (or an HF dir), fresh
     optimizer;
  3. else, when distilling with `distill.init=teacher`: the student's layers from the
     teacher's (bertjax/distill.py);
  4. else fresh parameters from `config.seed`.

Objectives: the family's (MLM, MLM+NSP, MLM+SOP, ELECTRA's generator + RTD) or
"distillation" (configs/distill.py), whose teacher is loaded from
`distill.teacher_path`, sharded on the same mesh, passed to every step and never saved.

SIGTERM (a preemption notice) or SIGINT: every host agrees on one step, saves it,
waits for the save and exits 0. A step with a non-finite loss or gradient norm is
skipped and counted; `train.max_consecutive_skips` in a row stop the run with an
error. Nothing here imports TensorFlow except the input pipeline (bertjax.data).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import flags

from bertjax import checkpoint, cli, distributed, objectives, presets, sharding, steps
from bertjax.flops import train_flops_per_token
from bertjax.metrics import MetricWriter, Throughput, resolve_peak_flops
from bertjax.models import ModelConfig, build, init_params
from bertjax.optim import OptimConfig, frozen_paths, make_optimizer

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the "
                               "final model; re-running with the same one resumes.")

# Fault injection for the reliability tests: BERTJAX_FAULT=kill_after_step:N (SIGKILL
# right after step N, once earlier saves have committed, so a test knows what survives),
# kill_in_save:N (SIGKILL while step N's checkpoint is being written in the background)
# or sigterm_at_step:N (a preemption notice after step N).
FAULT_ENV = "BERTJAX_FAULT"


class TrainingError(ValueError):
    """The run cannot go on (diverged, or config and workdir disagree); one line says why."""


# --- the plan: phases, data ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Phase:
    """A span of train steps [start, end) read from one prepared data directory."""

    index: int
    start: int
    end: int
    batch_size: int
    max_predictions_per_seq: int
    data_dir: str


def plan_phases(config: Any) -> list[Phase]:
    """Phase 1, then phase 2 for the last `phase2.fraction` of the steps (if > 0).

    The boundary falls on an optimizer-update boundary (a multiple of grad_accum_steps).
    """
    total, accum = int(config.train.steps), int(config.optim.grad_accum_steps)
    first = Phase(0, 0, total, int(config.train.batch_size), int(config.max_predictions_per_seq),
                  config.data.dir)
    p2 = config.phase2
    if not p2.fraction:
        return [first]
    if not 0 < p2.fraction < 1:
        raise ValueError(f"phase2.fraction={p2.fraction}: must be in [0, 1)")
    if not p2.data_dir:
        raise ValueError("phase2.data_dir is required when phase2.fraction > 0 (data "
                         "prepared at phase2.max_seq_length)")
    boundary = int(round(total * (1 - p2.fraction))) // accum * accum
    if not 0 < boundary < total:
        raise ValueError(f"phase2.fraction={p2.fraction} leaves an empty phase of "
                         f"train.steps={total}")
    return [dataclasses.replace(first, end=boundary),
            Phase(1, boundary, total, int(p2.batch_size or config.train.batch_size),
                  int(p2.max_predictions_per_seq), p2.data_dir)]


def phase_at(phases: list[Phase], step: int) -> Phase:
    return next((p for p in phases if p.start <= step < p.end), phases[-1])


def _pipeline(config: Any, cfg: ModelConfig, phase: Phase, split: str, start_step: int,
              repeat: bool) -> Any:
    from bertjax.data.commands import masking_config
    from bertjax.data.pipeline import Pipeline, read_manifest

    manifest = read_manifest(phase.data_dir)
    dynamic = manifest["masking"] == "dynamic"
    return Pipeline(
        phase.data_dir, split, phase.batch_size, int(config.seed),
        masking=masking_config(config, phase.max_predictions_per_seq) if dynamic else None,
        process_index=jax.process_index(), process_count=jax.process_count(),
        shuffle_buffer=int(config.data.shuffle_buffer) if split == "train" else 0,
        start_step=start_step, repeat=repeat,
        max_position_embeddings=cfg.max_position_embeddings,
        position_offset=cfg.pad_token_id + 1 if cfg.positions_from_padding else 0)


def _check_manifest(phase: Phase, cfg: ModelConfig) -> None:
    from bertjax.data.pipeline import read_manifest

    if not phase.data_dir:
        raise ValueError("--config.data.dir is required: the prepared data to train on "
                         "(python -m bertjax prepare data)")
    manifest = read_manifest(phase.data_dir)
    vocab = manifest["tokenizer"]["vocab_size"]
    if vocab > cfg.vocab_size:
        raise ValueError(f"{phase.data_dir}/manifest.json: the tokenizer has {vocab} tokens, "
                         f"more than model.vocab_size={cfg.vocab_size}")


# --- config ----------------------------------------------------------------------------

def model_config(config: Any) -> ModelConfig:
    """config.model (with presets.from_config's knobs) and the training compute dtype
    applied (train.dtype)."""
    cfg = presets.from_config(config)
    dtype = config.train.dtype
    if dtype == "auto":
        dtype = "bfloat16" if jax.default_backend() in ("tpu", "gpu") else cfg.dtype
    return cfg.replace(dtype=dtype)


def optim_config(config: Any) -> OptimConfig:
    """config.optim with total_steps = train.steps / grad_accum_steps when 0."""
    d = config.optim.to_dict()
    if not d.get("total_steps"):
        d["total_steps"] = max(1, int(config.train.steps) // int(d.get("grad_accum_steps", 1)))
        d["warmup_steps"] = min(int(d.get("warmup_steps", 0)), d["total_steps"])
    return OptimConfig.from_dict(d)


def _check_train_config(config: Any) -> None:
    t = config.train
    for key in ("batch_size", "steps"):
        if int(t[key]) < 1:
            raise ValueError(f"train.{key}={t[key]}: must be positive")
    for key in ("log_every", "eval_every", "eval_steps", "checkpoint_every",
                "max_consecutive_skips"):
        if int(t[key]) < 0:
            raise ValueError(f"train.{key}={t[key]}: must be >= 0")
    if int(t.max_to_keep) < 1:
        raise ValueError(f"train.max_to_keep={t.max_to_keep}: must be >= 1")
    if t.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"train.dtype={t.dtype!r}: expected auto, float32, bfloat16 or float16")


# --- faults, signals, hosts ---------------------------------------------------------------

def _fault() -> tuple[str, int] | None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    kind, _, step = spec.partition(":")
    if kind not in ("kill_after_step", "kill_in_save", "sigterm_at_step") or not step.isdigit():
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected kill_after_step:N, kill_in_save:N "
                         "or sigterm_at_step:N")
    return kind, int(step)


class _StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop polls between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _any_host(flag: bool) -> bool:
    """True on every host if it is True on any (a collective: every host must call it)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def _log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


# --- the run ---------------------------------------------------------------------------

def _global_batch(batch: Mapping[str, np.ndarray], shardings: Mapping[str, Any]) -> dict:
    return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v))
            for k, v in batch.items()}


def _batch_shardings(mesh: Any, rules: Any, example: Mapping[str, np.ndarray]) -> dict:
    return {k: sharding.batch_sharding(mesh, np.ndim(v), rules) for k, v in example.items()}


def make_loss_fn(config: Any, objective: str, model: Any, teacher: Any = None,
                 train: bool = True) -> steps.LossFn:
    """The step's loss function for `objective`, its options read from the config
    (config.electra, config.distill); `teacher` is the teacher's module when distilling."""
    if objective == "electra":
        e = config.electra if "electra" in config else {}  # absent: the paper's values
        return steps.electra_loss_fn(model, train, **{
            k: float(e[k]) for k in ("gen_weight", "disc_weight", "temperature") if k in e})
    if objective == "distillation":
        d = config.distill
        return steps.distillation_loss_fn(
            model, teacher, train, temperature=float(d.temperature),
            alpha_ce=float(d.alpha_ce), alpha_mlm=float(d.alpha_mlm),
            alpha_cos=float(d.alpha_cos))
    return steps.pretraining_loss_fn(model, objective, train)


def _check_teacher_tokenizer(path: str, data_dir: str) -> str:
    """Refuses data tokenized with another vocabulary than the teacher's; returns a note."""
    from bertjax.data.tokenizers import load_tokenizer
    from bertjax.distill import same_vocabulary

    try:
        theirs = load_tokenizer(checkpoint.tokenizer_dir(path) or path)
    except (FileNotFoundError, ValueError):
        return "teacher tokenizer: none found, not checked against the data"
    if not same_vocabulary(theirs, load_tokenizer(os.path.join(data_dir, "tokenizer"))):
        raise ValueError(f"distill.teacher_path={path}: the teacher's tokenizer differs from "
                         f"the one {data_dir} was prepared with; prepare the data with the "
                         "teacher's tokenizer (--config.tokenizer.path)")
    return "teacher tokenizer: same vocabulary as the data"


class Trainer:
    """One run: setup and resume in __init__, the loop in run(); see the module docstring."""

    def __init__(self, config: Any, workdir: str) -> None:
        self.fault = _fault()
        _check_train_config(config)
        self.config = config
        self.cfg = cfg = model_config(config)
        self.optim = optim = optim_config(config)
        self.objective = objectives.resolve_objective(config.objective or cfg.family)
        self.teacher_cfg: ModelConfig | None = None
        if self.objective == "distillation":
            from bertjax import distill

            self.teacher_cfg = distill.teacher_config(config, cfg)
        self.phases = plan_phases(config)
        self.total = int(config.train.steps)
        self.seed = seed = int(config.seed)
        t = config.train
        self.every = {"log": int(t.log_every), "eval": int(t.eval_every),
                      "checkpoint": int(t.checkpoint_every)}

        self.mesh = sharding.make_mesh(config.mesh)
        self.rules = sharding.rules(list(config.sharding.rules) or None)
        model = build(cfg)
        frozen = frozen_paths(cfg)
        tx = make_optimizer(optim, frozen=frozen)
        init = steps.init_state(model, tx, seed)
        abstract = jax.eval_shape(init)
        target, self.state_shardings = sharding.abstract_state(init, self.mesh, self.rules,
                                                               abstract=abstract)
        make_optimizer(optim, target["params"], frozen)  # checks dtypes and frozen paths

        for phase in self.phases:  # bad data fails before the workdir is touched
            _check_manifest(phase, cfg)
        teacher_model, self.teacher_params, teacher_note = None, None, ""
        if self.teacher_cfg is not None:  # so does a bad teacher
            teacher_model, self.teacher_params, teacher_note = self._load_teacher()
        self.workdir = workdir = os.path.abspath(workdir)
        os.makedirs(workdir, exist_ok=True)
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "config.json"), "w") as f:
                f.write(config.to_json_best_effort(indent=2))
        self.ckpts = checkpoint.TrainCheckpoints(
            os.path.join(workdir, "checkpoints"), max_to_keep=int(t.max_to_keep),
            async_save=bool(t.async_checkpoints))
        self.meta = {"model": cfg.to_dict(), "objective": self.objective, "seed": seed}
        if self.teacher_cfg is not None:  # provenance only: the teacher is never saved
            self.meta["teacher"] = {"path": os.path.abspath(config.distill.teacher_path),
                                    "model": self.teacher_cfg.to_dict()}

        # Resume order: workdir checkpoint -> init_from -> teacher layers -> scratch.
        latest = self.ckpts.latest_step()
        self.data_position: dict[str, Any] | None = None
        if latest is not None:
            saved = ModelConfig.from_dict(self.ckpts.read_meta(latest)["model"])
            diff = checkpoint.architecture_diff(cfg, saved)
            if diff:
                raise TrainingError(f"{self.ckpts.directory}/{latest}: the checkpoint's model "
                                    f"differs from config.model in {', '.join(diff)}; use "
                                    "another --workdir")
            self.state, self.data_position, saved_meta = self.ckpts.restore(latest, target)
            source = f"checkpoint {self.ckpts.directory}/{latest}"
            # Allowed (a run may change course), but no longer the uninterrupted run.
            for what, was, now in (
                    ("objective", saved_meta.get("objective"), self.objective),
                    ("teacher", saved_meta.get("teacher", {}).get("path"),
                     self.meta.get("teacher", {}).get("path"))):
                if was != now:
                    _log(f"warning: the checkpoint was trained with {what} {was!r}, this run "
                         f"continues with {now!r}")
        else:
            self.state, _ = sharding.create_sharded(init, abstract, self.mesh, self.rules)
            source = f"scratch (seed {seed})"
            if config.init_from:
                params = checkpoint.load_params(config.init_from, cfg, "config.init_from")
                self.state["params"] = jax.device_put(jax.tree.map(np.asarray, params),
                                                      self.state_shardings["params"])
                source = f"init_from {os.path.abspath(config.init_from)}"
            elif self.teacher_cfg is not None and config.distill.init == "teacher":
                source = self._student_from_teacher()
        self.step = int(jax.device_get(self.state["step"]))
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(target["params"]))
        _log(f"bertjax train: {cfg.family} ({n_params:,} parameters), objective "
             f"{self.objective}, {jax.device_count()} device(s) on {jax.process_count()} "
             f"host(s), mesh {dict(self.mesh.shape)}, compute {cfg.dtype}; step "
             f"{self.step}/{self.total} from {source}")
        if self.teacher_cfg is not None:
            t_cfg = self.teacher_cfg
            n_teacher = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.teacher_params))
            _log(f"teacher: {t_cfg.family} L{t_cfg.num_layers} H{t_cfg.hidden_size} "
                 f"({n_teacher:,} parameters, frozen, compute {t_cfg.dtype}) from "
                 f"{os.path.abspath(config.distill.teacher_path)}; {teacher_note}")

        self.train_step = jax.jit(
            functools.partial(steps.train_step,
                              loss_fn=make_loss_fn(config, self.objective, model, teacher_model),
                              tx=tx, optim=optim, seed=seed),
            donate_argnums=(0,))
        self.eval_step = jax.jit(functools.partial(
            steps.eval_step,
            loss_fn=make_loss_fn(config, self.objective, model, teacher_model, train=False)))
        self.peak, self.peak_source = resolve_peak_flops(float(t.peak_flops))
        self.writer = MetricWriter(os.path.join(workdir, "logs"),
                                   enabled=jax.process_index() == 0)

    # -- the teacher ------------------------------------------------------------------

    def _load_teacher(self) -> tuple[Any, Any, str]:
        """(teacher module, its parameters sharded on the mesh in its compute dtype, a
        note on the tokenizer check)."""
        path = self.config.distill.teacher_path
        if not path:
            raise ValueError("distill.teacher_path is required: the teacher's model "
                             "directory (train's WORKDIR/model, import, init) or HF dir")
        t_cfg = self.teacher_cfg
        notes = {_check_teacher_tokenizer(path, p.data_dir) for p in self.phases}
        note = "; ".join(sorted(notes))
        params = checkpoint.load_params(path, t_cfg, "distill.teacher_path")
        teacher = build(t_cfg)
        # Boxed abstract params give each leaf its logical axes, hence its sharding.
        shardings = sharding.param_shardings(jax.eval_shape(lambda: init_params(teacher)),
                                             self.mesh, self.rules)
        # A bfloat16 teacher is stored in bfloat16 too: half the memory, same compute.
        params = jax.tree.map(lambda x: np.asarray(x).astype(jax.numpy.dtype(t_cfg.dtype)),
                              params)
        return teacher, jax.device_put(params, shardings), note

    def _student_from_teacher(self) -> str:
        """Copies the teacher's layers into the fresh student state; returns the source."""
        from bertjax import distill
        from bertjax.models.layers import stack_layers, unstack_layers

        cfg, t_cfg = self.cfg, self.teacher_cfg
        layers = distill.teacher_layers(tuple(self.config.distill.teacher_layers),
                                        t_cfg.num_layers, cfg.num_layers)
        fresh: list[str] = []

        def merge(student: Any, teacher: Any) -> Any:
            out, left = distill.student_from_teacher(
                unstack_layers(student) if cfg.scan_layers else student,
                unstack_layers(teacher) if t_cfg.scan_layers else teacher, layers)
            fresh.extend(left)
            return stack_layers(out) if cfg.scan_layers else out

        # On the devices, shard by shard: no host ever holds either model whole.
        self.state["params"] = jax.jit(merge, out_shardings=self.state_shardings["params"])(
            self.state["params"], self.teacher_params)
        kept = f"; fresh: {', '.join(sorted(set(fresh)))}" if fresh else ""
        return f"teacher layers {layers}{kept}"

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Trains to train.steps or until stopped. Returns {"step", "status" ("done" |
        "preempted"), "skipped", "metrics" (the last logged train metrics)}."""
        status, self.last_metrics = "done", {}
        try:
            with sharding.activation_rules_context(self.mesh, self.rules), \
                    _StopRequest() as stop:
                while self.step < self.total and status == "done":
                    status = self._run_phase(phase_at(self.phases, self.step), stop)
                if status == "done" and self.ckpts.latest_step() != self.step:
                    self._save()
            self.ckpts.wait()
        finally:
            self.writer.close()
            self.ckpts.close()
        skipped = int(jax.device_get(self.state["skipped"]))
        if status == "preempted":
            _log(f"stopped at step {self.step} by a termination signal; checkpoint "
                 f"{self.step} saved. Run the same command to resume.")
        else:
            _log(f"finished {self.total} steps ({skipped} skipped); checkpoints in "
                 f"{self.ckpts.directory}")
            if self.config.train.export_model:
                self._export_model()
        return {"step": self.step, "status": status, "skipped": skipped,
                "metrics": self.last_metrics}

    def _run_phase(self, phase: Phase, stop: _StopRequest) -> str:
        pipe = _pipeline(self.config, self.cfg, phase, "train", self.step - phase.start, True)
        position = self.data_position
        self.data_position = None
        if position is not None and position.get("phase") == phase.index:
            if position["pipeline"]["step"] != self.step - phase.start:
                raise TrainingError(
                    f"{self.ckpts.directory}/{self.step}: data position "
                    f"{position['pipeline']['step']} disagrees with step {self.step} of phase "
                    f"{phase.index + 1}; did train.steps or phase2 change?")
        seq_len = pipe.max_seq_length
        flops = train_flops_per_token(self.cfg, seq_len, pipe.max_predictions_per_seq / seq_len,
                                      self.teacher_cfg).total
        meter = Throughput(flops, self.peak, jax.device_count())
        _log(f"phase {phase.index + 1}/{len(self.phases)}: steps {phase.start}..{phase.end}, "
             f"batch {phase.batch_size} x {seq_len} from {phase.data_dir}; "
             f"{flops:.3e} train FLOPs/token; peak {self.peak:.3e} FLOP/s/device "
             f"({self.peak_source})")
        batches = iter(pipe)
        shardings = None
        window: list[dict[str, Any]] = []
        timed = 0  # steps in the throughput window (the compiling first step is not)
        previous = None
        try:
            while self.step < phase.end:
                batch = next(batches)
                if shardings is None:
                    shardings = _batch_shardings(self.mesh, self.rules, batch)
                self.state, metrics = self.train_step(
                    self.state, _global_batch(batch, shardings), self.teacher_params)
                self.step += 1
                window.append(metrics)
                if previous is None:
                    jax.block_until_ready(metrics)
                    meter.start(self.step)
                else:
                    self._check_skips(previous, self.step - 1)
                    timed += 1
                previous = metrics
                self._inject(self.step, "kill_after_step")
                if self._due("log") or self.step == phase.end:
                    self._check_skips(metrics, self.step)
                    rates = meter.rates(self.step, timed * phase.batch_size * seq_len,
                                        timed * phase.batch_size) if timed else {}
                    self.last_metrics = {**_window_metrics(window), **rates}
                    self.writer.write_scalars(self.step, self.last_metrics, "train")
                    window, timed = [], 0
                if self._due("eval"):
                    self._evaluate(phase)
                    meter.start(self.step)  # evaluation time is not training throughput
                if self._due("checkpoint"):
                    self._save()
                self._inject(self.step, "sigterm_at_step")
                if _any_host(stop.signal is not None):
                    self._save()
                    return "preempted"
        finally:
            batches.close()
        return "done"

    def _due(self, what: str) -> bool:
        every = self.every[what]
        return every > 0 and self.step % every == 0

    def _check_skips(self, metrics: Mapping[str, Any], step: int) -> None:
        limit = int(self.config.train.max_consecutive_skips)
        consecutive = int(jax.device_get(metrics["consecutive_skips"]))
        if limit and consecutive >= limit:
            latest = self.ckpts.latest_step()
            raise TrainingError(
                f"{consecutive} consecutive steps up to step {step} had a non-finite loss or "
                f"gradient and were skipped (train.max_consecutive_skips={limit}); the last "
                f"checkpoint is {'none' if latest is None else latest}. Lower "
                "optim.learning_rate or check the data.")

    def _inject(self, step: int, kind: str) -> None:
        if self.fault == (kind, step):
            if kind == "kill_after_step":
                self.ckpts.wait()
            sys.stdout.flush()
            os.kill(os.getpid(),
                    signal.SIGTERM if kind == "sigterm_at_step" else signal.SIGKILL)

    def _save(self) -> None:
        phase = phase_at(self.phases, max(self.step - 1, 0))
        self.ckpts.save(self.step, self.state,
                        {"phase": phase.index, "pipeline": {"step": self.step - phase.start}},
                        self.meta)
        self._inject(self.step, "kill_in_save")

    def _evaluate(self, phase: Phase) -> None:
        from bertjax.data.pipeline import DataError

        try:
            pipe = _pipeline(self.config, self.cfg, phase, "validation", 0, False)
        except DataError as e:
            if "no split 'validation'" not in str(e):
                raise
            _log(f"no evaluation: {phase.data_dir} has no validation split")
            self.every["eval"] = 0
            return
        shardings, results = None, []
        limit = int(self.config.train.eval_steps)
        for i, batch in enumerate(pipe):
            if limit and i >= limit:
                break
            if shardings is None:
                shardings = _batch_shardings(self.mesh, self.rules, batch)
            results.append(self.eval_step(self.state["params"],
                                          _global_batch(batch, shardings), self.teacher_params))
        self.writer.write_scalars(self.step, steps.combine_metrics(jax.device_get(results)),
                                  "eval")

    def _export_model(self) -> None:
        """WORKDIR/model: the final parameters as a model directory (single host)."""
        if jax.process_count() > 1:
            _log(f"model directory not written on {jax.process_count()} hosts; the final "
                 f"state is checkpoint {self.step} in {self.ckpts.directory}")
            return
        from bertjax.data.tokenizers import FAMILY_TOKENIZER_CLASS, load_tokenizer

        tok = load_tokenizer(os.path.join(self.phases[-1].data_dir, "tokenizer"))
        tok.tokenizer_class = FAMILY_TOKENIZER_CLASS[self.cfg.family]
        cfg = presets.from_config(self.config)  # the stored dtype, not the compute one
        params = jax.tree.map(np.asarray, jax.device_get(self.state["params"]))
        out = os.path.join(self.workdir, "model")
        checkpoint.save_model_dir(out, cfg, params, tok, overwrite=True,
                                  extra={"source": f"{self.workdir} step {self.step}"})
        _log(f"wrote {out} (python -m bertjax export --checkpoint={out} --out=HF_DIR)")


def _window_metrics(window: list[dict[str, Any]]) -> dict[str, float]:
    """Count-weighted means over a logging window; counters and the learning rate are the
    last step's."""
    host = jax.device_get(window)
    means = steps.combine_metrics(host)
    # The loss terms first, then the optimizer, then the skip counters; counts last.
    out = {k: v for k, v in means.items() if not k.endswith("_count")
           and k not in ("grad_norm", "learning_rate", "skipped", "skipped_total",
                         "consecutive_skips")}
    out["grad_norm"] = means["grad_norm"]
    out["learning_rate"] = float(host[-1]["learning_rate"])
    out["skipped"] = int(sum(float(m["skipped"]) for m in host))  # in this window
    out["skipped_total"] = int(host[-1]["skipped_total"])
    out["consecutive_skips"] = int(host[-1]["consecutive_skips"])
    return out


def train(config: Any, workdir: str) -> dict[str, Any]:
    """Runs or resumes the pretraining `config` describes in `workdir`; see `Trainer.run`."""
    return Trainer(config, workdir).run()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}; usage: python -m bertjax train "
                         "--config=configs/pretrain.py:PRESET --workdir=DIR")
    config = cli.required(cli.CONFIG)
    workdir = cli.required(_WORKDIR)
    distributed.initialize_from_flags()
    result = train(config, workdir)
    del result
