"""Where a run starts: its state and data position, in the resume order bertjax/train.py's
docstring lists (the same on every start, so re-running the command is the way to
resume): the newest good checkpoint of the run (one that fails its checks is moved
aside and the next older one tried), else a branch from another run's checkpoint
(`config.init_from_checkpoint`, read whole and never written), else `config.init_from`
fitted to the task's heads, else the task's own start, else fresh parameters from
`config.seed`. A resumed or branched run reads the data its checkpoint was trained on
(`check_data`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from bertjax import checkpoint, experiment, modeldir, paths, pretrained, sharding
from bertjax.errors import TrainingError
from bertjax.hosts import any_host, log
from bertjax.models import ModelConfig
from bertjax.orbax_output import read_error
from bertjax.tasks.base import Context


@dataclasses.dataclass
class Start:
    """The state a run starts from; the data position of the checkpoint it was read from
    (None for a fresh state); where it comes from, for the start line; and for a branch,
    the run and step it branches from (recorded in the meta of every checkpoint)."""

    state: Any
    data_position: dict[str, Any] | None
    source: str
    branched_from: dict[str, Any] | None = None


def start(
    setup: experiment.Setup, ctx: Context, ckpts: checkpoint.TrainCheckpoints, workdir: str
) -> Start:
    """The run's Start in the resume order (the module docstring); TrainingError if
    checkpoints exist and none can be resumed."""
    task = setup.task
    moved: list[int] = []
    for step in reversed(ckpts.all_steps()):
        where = ckpts.step_dir(step)
        problem, restored = restore(setup, ckpts, step, where)
        if any_host(problem is not None):
            dest = ckpts.move_aside(step)
            moved.append(step)
            log(
                f"warning: checkpoint {step} ({where}): "
                f"{problem or 'damaged on another host'}; moved to {dest}"
            )
            continue
        state, data_position, saved_meta = restored
        ckpts.resumed_from(step)
        meta = task.meta()
        check_data(setup.config, where, saved_meta.get("data"), meta.pop("data", None))
        # Allowed (a run may change course), but no longer the uninterrupted run.
        for key, now in meta.items():
            was = saved_meta.get(key)
            if isinstance(now, Mapping) and isinstance(was, Mapping):
                was, now = was.get("path"), now.get("path")
            if was != now:
                log(
                    f"warning: the checkpoint was trained with {key} {was!r}, this run "
                    f"continues with {now!r}"
                )
        return Start(
            state,
            data_position,
            f"checkpoint {where}"
            + (
                f" (verified; newer ones moved aside: {', '.join(map(str, moved))})"
                if moved
                else ""
            ),
        )
    if moved:
        raise TrainingError(
            f"{workdir}: no checkpoint can be resumed; all {len(moved)} were damaged "
            f"and moved to {paths.join(workdir, checkpoint.DAMAGED)}. Restore a "
            "good copy into checkpoints/, or run again to start from the beginning"
        )
    if experiment.branch_point(setup.config):
        return branch(setup, ckpts)
    state, _ = sharding.create_sharded(setup.init, setup.abstract, setup.mesh, setup.rules)
    params_sh = setup.state_shardings["params"]
    weights_from = task.weights_from()
    if weights_from:
        params, rows, where = pretrained.load_into(
            weights_from, setup.cfg, state["params"], "config.init_from"
        )
        state["params"] = jax.device_put(params, params_sh)
        log(f"init_from {where}:\n{pretrained.table(rows)}")
        return Start(state, None, f"init_from {paths.absolute(weights_from)}")
    started = task.init_params(ctx, state["params"], params_sh)
    if started is not None:
        state["params"], note = started
        return Start(state, None, note)
    return Start(state, None, f"scratch (seed {setup.seed})")


def branch(setup: experiment.Setup, own: checkpoint.TrainCheckpoints) -> Start:
    """Restores config.init_from_checkpoint (WORKDIR@STEP) whole: state and data
    position, read-only (the other run's directory is not written)."""
    config = setup.config
    source, step = experiment.branch_point(config)
    key = f"config.init_from_checkpoint={config.init_from_checkpoint}"
    directory = paths.join(paths.absolute(source), "checkpoints")
    if directory == own.directory:
        raise TrainingError(f"{key}: the branch needs a --workdir of its own")
    if not paths.isdir(directory):
        raise FileNotFoundError(
            2, "no such directory (a training workdir's checkpoints)", f"{key}: {directory}"
        )
    ckpts = checkpoint.TrainCheckpoints(directory, read_only=True)
    try:
        if step not in ckpts.all_steps():
            saved = ", ".join(map(str, ckpts.all_steps())) or "none"
            raise TrainingError(
                f"{key}: step {step} is not a saved checkpoint of {source} (saved: {saved})"
            )
        problem, restored = restore(setup, ckpts, step, ckpts.step_dir(step))
    finally:
        ckpts.close()
    if problem:
        raise TrainingError(f"{key}: checkpoint {ckpts.step_dir(step)} {problem}")
    state, data_position, saved_meta = restored
    check_data(config, ckpts.step_dir(step), saved_meta.get("data"), setup.task.meta().get("data"))
    return Start(
        state,
        data_position,
        f"checkpoint {ckpts.step_dir(step)} (a branch: that run is only read)",
        {"workdir": paths.absolute(source), "step": step},
    )


def restore(
    setup: experiment.Setup, ckpts: checkpoint.TrainCheckpoints, step: int, where: str
) -> tuple[str | None, Any]:
    """(what is wrong with checkpoint `step` of `ckpts`, None) or (None, (state, data,
    meta)). A checkpoint of another model is not damage: TrainingError."""
    problem = ckpts.check_files(step)
    if problem:
        return problem, None
    try:
        saved = ModelConfig.from_dict(ckpts.read_meta(step)["model"])
    except Exception as e:  # noqa: BLE001 -- Orbax / JSON errors of every kind
        return f"cannot be read ({read_error(e)})", None
    diff = modeldir.architecture_diff(setup.cfg, saved)
    if diff:
        raise TrainingError(
            f"{where}: the checkpoint's model differs from the config's "
            f"in {', '.join(diff)}; use another --workdir"
        )
    try:
        state, data, meta = ckpts.restore(step, setup.target)
    except Exception as e:  # noqa: BLE001 -- Orbax / tensorstore / JSON errors
        return f"cannot be read ({read_error(e)})", None
    problem = ckpts.verify(state, meta)
    if problem is None and "data" in setup.task.meta() and not isinstance(meta.get("data"), list):
        problem = "its meta records no data (each phase's path and manifest digest)"
    return (problem, None) if problem else (None, (state, data, meta))


def check_data(config: Any, where: str, was: Any, now: Any) -> None:
    """A resumed run reads the data its checkpoint was trained on (the same manifest
    digest; the directory may have moved), unless train.allow_data_change."""
    if not isinstance(now, list):
        return  # a task without prepared data
    for i, (w, n) in enumerate(zip(was, now, strict=False)):
        if not isinstance(w, Mapping) or not isinstance(w.get("manifest_sha256"), str):
            raise TrainingError(
                f"{where}: its meta records phase {i + 1}'s data without "
                "a manifest_sha256; it cannot be checked"
            )
        if w["manifest_sha256"] != n["manifest_sha256"]:
            what = (
                f"{n['path']}/manifest.json differs from the data {where} was trained "
                f"on ({w['path']}: sha256 {w['manifest_sha256'][:12]}, now "
                f"{n['manifest_sha256'][:12]})"
            )
            if not config.train.get("allow_data_change", False):
                raise TrainingError(
                    f"{what}; the resumed run would not continue the same "
                    "run. Use the original data, another --workdir, or "
                    "--config.train.allow_data_change=True"
                )
            log(f"warning: {what}; continuing on the new data (train.allow_data_change)")
        elif w["path"] != n["path"]:
            log(
                f"phase {i + 1} data: {n['path']} (the checkpoint was trained on "
                f"{w['path']}; the same manifest, so the same data order)"
            )
