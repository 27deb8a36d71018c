"""The training loop: sharded steps with checkpoints and exact resume, for any task.

  python -m bertjax train --config=configs/pretrain.py:bert_tiny,runlocal \
      --config.data.dir=/tmp/demo_data --workdir=/tmp/bert_tiny_run

The loop owns the mesh, the sharded state, resume, checkpoints, signals, non-finite
skips, metrics, the evaluation schedule and the final model directory; everything
that depends on what is trained comes from the task (bertjax/tasks: its heads, loss,
batches, evaluators, what the step needs beside the state, its own start).

WORKDIR (a local path or gs://...) holds everything a run writes:

  config.json    the resolved config of the latest start
  checkpoints/   Orbax training checkpoints (bertjax/checkpoint.py: TrainCheckpoints)
  logs/          TensorBoard event files (train/ and eval/ scalars)
  model/         the final parameters as a model directory (export, fill_mask read it)

Resume order (bertjax/resume.py; the same on every start, so re-running the command is
the way to resume):
  1. the newest good checkpoint in WORKDIR/checkpoints: state and data position. Each
     is verified after it is read (its state digest, finite values); one that fails or
     cannot be read is reported in one line, moved to WORKDIR/damaged_checkpoints/ and
     the next older one is tried; if none is good the run stops. The data position is
     the phase and the batches consumed in it, with the batch size: a resume at another
     `train.batch_size` would skip or re-read examples and is refused in one line;
  2. else `config.init_from_checkpoint` (WORKDIR@STEP): that checkpoint of another run,
     whole (state and data position), read without writing to it: a branch, e.g. a
     decay from a stable run (bertjax/experiment.py `branch_point`);
  3. else `config.init_from` (the task's `weights_from()`): parameters from a model
     directory or a transformers directory of any form, fitted to the task's heads
     (bertjax/pretrained.py: a table of loaded, created and dropped modules is
     printed), fresh optimizer;
  4. else the task's own start (distillation: the student's layers from the teacher's);
  5. else fresh parameters from `config.seed`.

SIGTERM (a preemption notice) or SIGINT: every host agrees on one step, saves it,
waits for the save and exits 0. A save that fails (a full disk) stops the run at the
next step with one line: the step, the file and the OS error, and the last good
checkpoint, which the failed save left as it was. A step with a non-finite loss or
gradient norm is skipped and counted; `train.max_consecutive_skips` in a row stop the
run with an error. `Hook`s see every step and save (the tests inject faults through them).
Before the first step the train step is compiled for every phase and checked to fit in
memory (bertjax/memory.py). Nothing here imports TensorFlow except the input pipeline
(bertjax.data).
WORKDIR/model, model_ema and best are written by bertjax/run_outputs.py.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from bertjax import checkpoint, experiment, memory, paths, resume, sharding, steps
from bertjax.errors import TrainingError
from bertjax.hosts import StopRequest, any_host, log, to_host
from bertjax.metrics import MetricWriter, Throughput, combine
from bertjax.peak_flops import resolve_peak_flops
from bertjax.run_outputs import RunOutputs
from bertjax.tasks.base import Context, Phase


class Hook:
    """Called by the loop; subclasses override what they need. Every host calls them."""

    def after_step(self, trainer: Trainer, step: int) -> None:
        """After train step `step` (1-based) ran and was logged."""

    def after_save(self, trainer: Trainer, step: int) -> None:
        """After checkpoint `step` was handed to Orbax (it may still be writing)."""


def train_step_fn(setup: experiment.Setup) -> Any:
    """The jitted train step of `setup` (steps.train_step with the task's loss, the
    optimizer and the seed bound), its state donated: what the loop runs, compiled ahead
    of time for the memory check (bertjax/memory.py)."""
    return jax.jit(
        functools.partial(
            steps.train_step,
            loss_fn=setup.task.loss_fn(setup.model, True),
            tx=setup.tx,
            optim=setup.optim,
            seed=setup.seed,
        ),
        donate_argnums=(0,),
    )


def phase_at(phases: Sequence[Phase], step: int) -> Phase:
    return next((p for p in phases if p.start <= step < p.end), phases[-1])


def global_batch(batch: Mapping[str, np.ndarray], mesh: Any, rules: Any) -> dict:
    """This host's rows of a batch -> global arrays sharded along the batch axis."""
    return {
        k: jax.make_array_from_process_local_data(
            sharding.batch_sharding(mesh, np.ndim(v), rules), np.asarray(v)
        )
        for k, v in batch.items()
    }


# --- the run ---------------------------------------------------------------------------


class Trainer(RunOutputs):
    """One run: setup and resume in __init__, the loop in run(); see the module docstring."""

    def __init__(self, config: Any, workdir: str, hooks: Sequence[Hook] = ()) -> None:
        if paths.is_remote(workdir):  # a mistyped bucket stops the run before its work
            paths.makedirs(workdir)
        s = self.setup = experiment.build_setup(config)
        self.config, self.task, self.cfg, self.hooks = config, s.task, s.cfg, list(hooks)
        self.phases = self.task.phases()
        experiment.check_batch_sizes(self.phases, s.mesh, s.rules)
        experiment.check_phase_models(s.cfg, self.phases)
        self.total, self.seed = self.task.train_steps(), s.seed
        experiment.check_branch(config, s.optim, self.total)
        self.keep = experiment.kept_steps(config, self.phases)  # never rotated away
        t = config.train
        self.every = {"log": int(t.log_every), "checkpoint": int(t.checkpoint_every)}
        self.evaluate = True  # off once the task turns out to have nothing to evaluate on
        self.ctx = Context(config, s.cfg, s.model, s.mesh, s.rules)
        # Bad data or a bad teacher fail here, before the workdir is touched.
        self.aux_params = self.ctx.aux_params = self.task.setup(self.ctx)
        # So does a step that does not fit in memory; its compiled form is kept.
        self.train_step = train_step_fn(s)
        self.compiled = (
            memory.check_phases(s, self.phases, self.aux_params, self.train_step, log=log)
            if t.get("memory_check", True)
            else {}
        )

        self.workdir = workdir = paths.absolute(workdir)
        # A start that fails before its first checkpoint (a bad init_from) leaves nothing.
        fresh = not paths.exists(workdir)
        paths.makedirs(workdir)
        if jax.process_index() == 0:
            paths.write_text(
                paths.join(workdir, "config.json"), config.to_json_best_effort(indent=2)
            )
        self.ckpts = checkpoint.TrainCheckpoints(
            paths.join(workdir, "checkpoints"),
            max_to_keep=int(t.max_to_keep),
            async_save=bool(t.async_checkpoints),
            keep=self.keep,
        )
        self.meta = {"model": s.cfg.to_dict(), "seed": self.seed, **self.task.meta()}
        try:
            start = resume.start(s, self.ctx, self.ckpts, workdir)
        except Exception:
            saved = self.ckpts.all_steps()
            self.ckpts.close()
            if fresh and not saved and jax.process_index() == 0:
                paths.rmtree(workdir)
            raise
        self.state, self.data_position = start.state, start.data_position
        if start.branched_from:
            self.meta["branched_from"] = start.branched_from
        self.step = int(jax.device_get(self.state["step"]))
        log(
            f"bertjax train: {s.cfg.family} ({s.num_params():,} parameters; heads "
            f"{', '.join(s.cfg.heads) or 'none'}), task {self.task.name}, "
            f"{jax.device_count()} device(s) on {jax.process_count()} host(s), mesh "
            f"{dict(s.mesh.shape)}, compute {s.cfg.dtype}; step {self.step}/{self.total} "
            f"from {start.source}"
        )
        note = self.task.describe_aux(self.aux_params)
        if note:
            log(note)
        for line in experiment.plan_lines(config, self.task, s.cfg):
            log(line)

        self.run_eval_step = self.ctx.eval_step = self._eval_step_fn(s.model)
        predict_fn = self.task.predict_fn(s.model)
        if predict_fn is not None:
            predict = jax.jit(predict_fn)
            self.ctx.predict = lambda params, batch: to_host(
                predict(params, global_batch(batch, s.mesh, s.rules))
            )
        self.best = self._read_best()
        # Measured (off the table of accelerators) in the dtype the matmuls run in.
        self.peak, self.peak_source = resolve_peak_flops(float(t.peak_flops), s.cfg.dtype)
        self.writer = MetricWriter(paths.join(workdir, "logs"), enabled=jax.process_index() == 0)

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Trains to train.steps or until stopped. Returns {"step", "status" ("done" |
        "preempted"), "skipped", "metrics" (the last logged train metrics)}."""
        status, self.last_metrics = "done", {}
        try:
            with (
                sharding.activation_rules_context(self.setup.mesh, self.setup.rules),
                StopRequest() as stop,
            ):
                while self.step < self.total and status == "done":
                    status = self._run_phase(phase_at(self.phases, self.step), stop)
                if status == "done" and self.ckpts.latest_step() != self.step:
                    self._save()
            self._wait_for_saves()
        finally:
            self.writer.close()
            self.ckpts.close()
        skipped = int(jax.device_get(self.state["skipped"]))
        if status == "preempted":
            log(
                f"stopped at step {self.step} by a termination signal; checkpoint "
                f"{self.step} saved. Run the same command to resume."
            )
        else:
            log(
                f"finished {self.total} steps ({skipped} skipped); checkpoints in "
                f"{self.ckpts.directory}"
            )
            if self.config.train.export_model:
                self._export_model()
        return {
            "step": self.step,
            "status": status,
            "skipped": skipped,
            "metrics": self.last_metrics,
        }

    def _eval_step_fn(self, model: Any) -> Any:
        s = self.setup
        eval_step = jax.jit(
            functools.partial(steps.eval_step, loss_fn=self.task.loss_fn(model, False))
        )
        return lambda params, batch: jax.device_get(
            eval_step(params, global_batch(batch, s.mesh, s.rules), self.aux_params)
        )

    def _phase_steps(self, phase: Phase) -> tuple[Any, Any, Any]:
        """(train step, its compiled form, the batch signature it takes) of `phase`: the
        run's, or those of the model a plan phase trains (its rope_theta), whose
        evaluations then run with that model too."""
        model = experiment.phase_model(self.setup, phase)
        if model is None:
            self.ctx.eval_step = self.run_eval_step
            return (self.train_step, *self.compiled.get(phase.index, (None, None)))
        self.ctx.eval_step = self._eval_step_fn(model)
        return train_step_fn(dataclasses.replace(self.setup, model=model)), None, None

    def _check_position(self, phase: Phase) -> None:
        """A resumed data position must be of this phase's batch size and step."""
        position = self.data_position
        self.data_position = None
        if position is None or position.get("phase") != phase.index:
            return
        if position.get("batch_size") != phase.batch_size:
            # The position counts batches: another size would skip or repeat examples.
            raise TrainingError(
                f"{self.ckpts.step_dir(self.step)}: phase {phase.index + 1} was trained at "
                f"batch size {position.get('batch_size')}, the config says "
                f"{phase.batch_size}; resuming would skip or re-read examples. Resume "
                "with the checkpoint's batch size, or start another --workdir"
            )
        if position["pipeline"]["step"] != self.step - phase.start:
            raise TrainingError(
                f"{self.ckpts.directory}/{self.step}: data position "
                f"{position['pipeline']['step']} disagrees with step {self.step} of phase "
                f"{phase.index + 1}; did train.steps or phase2 change?"
            )

    def _run_phase(self, phase: Phase, stop: StopRequest) -> str:
        self._check_position(phase)
        batches = self.task.train_batches(phase, self.step - phase.start)
        seq_len, flops = batches.seq_len, batches.flops.total
        meter = Throughput(flops, self.peak, jax.device_count(), peak_source=self.peak_source)
        log(
            f"phase {phase.index + 1}/{len(self.phases)}: steps {phase.start}..{phase.end}, "
            f"batch {phase.batch_size} x {seq_len} from {phase.source}; "
            f"{flops:.3e} train FLOPs/token; peak {self.peak:.3e} FLOP/s/device "
            f"({self.peak_source})"
        )
        mesh, rules = self.setup.mesh, self.setup.rules
        train_step, compiled, shapes = self._phase_steps(phase)
        window: list[dict[str, Any]] = []
        timed = 0  # steps in the throughput window (the compiling first step is not)
        previous = None
        try:
            while self.step < phase.end:
                batch = global_batch(next(batches.iterator), mesh, rules)
                same = shapes is not None and shapes == memory.signature(batch)
                self.state, metrics = (compiled if same else train_step)(
                    self.state, batch, self.aux_params
                )
                self.step += 1
                window.append(metrics)
                if previous is None:
                    jax.block_until_ready(metrics)
                    meter.start(self.step)
                else:
                    self._check_skips(previous, self.step - 1)
                    timed += 1
                previous = metrics
                if self._due("log") or self.step == phase.end:
                    self._check_skips(metrics, self.step)
                    rates = (
                        meter.rates(
                            self.step, timed * phase.batch_size * seq_len, timed * phase.batch_size
                        )
                        if timed
                        else {}
                    )
                    # A data mixture's rows per source (bertjax/data/mixture.py).
                    sources = getattr(batches.iterator, "metrics", dict)()
                    means = window_metrics(window)
                    if "packing_efficiency" in means and "tokens_per_s" in rates:
                        # tokens_per_s counts rows x length; a packed run's real tokens
                        # are the window's share of them (its positions' mean)
                        rates["real_tokens_per_s"] = (
                            rates["tokens_per_s"] * means["packing_efficiency"]
                        )
                    self.last_metrics = {**means, **rates, **sources}
                    self.writer.write_scalars(self.step, self.last_metrics, "train")
                    window, timed = [], 0
                for hook in self.hooks:
                    hook.after_step(self, self.step)
                if self.evaluate and self.task.eval_due(self.step):
                    self._evaluate(phase)
                    meter.start(self.step)  # evaluation time is not training throughput
                if self._due("checkpoint") or self.keep(self.step):
                    self._save()
                failed = self.ckpts.failed_save()
                stopping, failing = any_host(stop.signal is not None, failed is not None)
                if failing:
                    raise self._save_failed(failed)
                if stopping:
                    if self.ckpts.latest_step() != self.step:  # not saved just above
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
                "optim.learning_rate or check the data."
            )

    def _save(self) -> None:
        phase = phase_at(self.phases, max(self.step - 1, 0))
        try:
            self.ckpts.save(
                self.step,
                self.state,
                {
                    "phase": phase.index,
                    "batch_size": phase.batch_size,
                    "pipeline": {"step": self.step - phase.start},
                },
                self.meta,
            )
        except checkpoint.SaveError as e:
            raise self._save_failed(e) from None
        for hook in self.hooks:
            hook.after_save(self, self.step)

    def _wait_for_saves(self) -> None:
        try:
            self.ckpts.wait()
        except checkpoint.SaveError as e:
            raise self._save_failed(e) from None

    def _save_failed(self, e: checkpoint.SaveError | None) -> TrainingError:
        """A save failed (on this host: `e`; or on another): the run stops, naming the
        last good checkpoint once its files are confirmed present and readable."""
        if e is None:  # another host saw it first; this one's save ends the same way
            try:
                self.ckpts.wait()
                e = checkpoint.SaveError("a checkpoint could not be written on another host")
            except checkpoint.SaveError as mine:
                e = mine
        good = self.ckpts.latest_step()
        problem = None if good is None else self.ckpts.check_files(good)
        if good is None:
            last = "there is no earlier checkpoint"
        elif problem:
            last = f"the last checkpoint is damaged too ({problem})"
        else:
            last = f"the last good checkpoint is {self.ckpts.step_dir(good)}"
        return TrainingError(
            f"{e}; the run stopped at step {self.step}, {last}. Free space "
            "(or fix the path), then run the same command to resume"
        )

    def _evaluate(self, phase: Phase) -> None:
        evaluators = self.task.evaluators(self.ctx, phase)
        if not evaluators:
            log(f"no evaluation: {phase.source} has no validation split")
            self.evaluate = False
            return
        scores = {}
        for evaluator in evaluators:
            scores[evaluator.name] = evaluator.run(self.state["params"])
            self.writer.write_scalars(self.step, scores[evaluator.name], evaluator.name)
        main = self.task.main_metric
        if main and main[1] in scores.get(main[0], {}):
            self._keep_if_best(main, scores)


def window_metrics(window: list[dict[str, Any]]) -> dict[str, float]:
    """Count-weighted means over a logging window; counters and the learning rate are the
    last step's."""
    host = jax.device_get(window)
    means = combine(host)
    # The task's metrics first, then the optimizer, then the skip counters.
    counters = ("grad_norm", "learning_rate", "skipped", "skipped_total", "consecutive_skips")
    out = {k: v for k, v in means.items() if k not in counters}
    out["grad_norm"] = means["grad_norm"]
    out["learning_rate"] = float(host[-1]["learning_rate"])
    out["skipped"] = int(sum(float(m["skipped"]) for m in host))  # in this window
    out["skipped_total"] = int(host[-1]["skipped_total"])
    out["consecutive_skips"] = int(host[-1]["consecutive_skips"])
    return out


def train(config: Any, workdir: str, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Runs or resumes the training `config` describes in `workdir`; see `Trainer.run`."""
    return Trainer(config, workdir, hooks).run()
