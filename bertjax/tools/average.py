"""Checkpoint averaging: the parameters of several saved training checkpoints, weighted
uniformly or as an exponential moving average, written as a model directory.

Averaging late checkpoints of a stable (constant learning-rate) phase stands in for part
of a decay: Megatron-LM reports +2-4 points and decay runs worth ~16% of the FLOPs saved
(NVIDIA/Megatron-LM PR #5114); Sanyal et al. 2023 ("Early Weight Averaging meets High
Learning Rates for LLM Pre-training"). The checkpoints are `WORKDIR@STEP` (a saved step
of a training workdir, local or gs://) and are taken in the order given, oldest first.

Weights over K checkpoints x_1..x_K:
  uniform  1 / K each
  ema      the EMA of the sequence, e_1 = x_1, e_i = d e_(i-1) + (1 - d) x_i, so
           x_1 weighs d^(K-1) and x_i (i > 1) weighs (1 - d) d^(K-i); d = ema_decay
The sum runs in float64 and is cast back to each parameter's dtype. Only the parameters
are averaged (the optimizer state is not written: a model directory holds none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from bertjax import checkpoint, modeldir, paths
from bertjax.models.config import ModelConfig

WEIGHTS = ("uniform", "ema")


def parse_checkpoint(spec: str, key: str = "--checkpoints") -> tuple[str, int]:
    """ "WORKDIR@STEP" -> (WORKDIR, STEP); ValueError naming `key` otherwise."""
    workdir, sep, step = spec.rpartition("@")
    if not sep or not workdir or not step.isdigit():
        raise ValueError(
            f"{key}: {spec!r} is not WORKDIR@STEP (a saved step of a training "
            "workdir, e.g. /runs/stable@20000)"
        )
    return workdir, int(step)


def last_checkpoints(workdir: str, k: int) -> list[tuple[str, int]]:
    """The newest `k` saved steps of `workdir`, oldest first."""
    if k < 1:
        raise ValueError(f"--last={k}: must be >= 1")
    steps = _steps(workdir, "--workdir")
    if len(steps) < k:
        raise ValueError(
            f"--last={k}: {workdir} has only {len(steps)} saved checkpoints "
            f"({', '.join(map(str, steps)) or 'none'})"
        )
    return [(workdir, s) for s in steps[-k:]]


def _steps(workdir: str, key: str) -> list[int]:
    directory = paths.join(paths.absolute(workdir), "checkpoints")
    if not paths.isdir(directory):
        raise FileNotFoundError(
            2, "no such directory (a training workdir's checkpoints)", f"{key}: {directory}"
        )
    return sorted(int(n) for n in paths.listdir(directory) if n.isdigit())


def weights(k: int, kind: str = "uniform", ema_decay: float = 0.9) -> np.ndarray:
    """[k] float64 weights of k checkpoints, oldest first (module docstring)."""
    if kind not in WEIGHTS:
        raise ValueError(f"--weights={kind}: expected one of {', '.join(WEIGHTS)}")
    if kind == "uniform":
        return np.full(k, 1.0 / k)
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"--ema_decay={ema_decay}: must be in [0, 1)")
    w = (1.0 - ema_decay) * ema_decay ** np.arange(k - 1, -1, -1, dtype=np.float64)
    w[0] = ema_decay ** (k - 1)
    return w


def check(points: Sequence[tuple[str, int]]) -> None:
    """Every point is a saved step of its workdir: one line naming the first that is not
    (before anything is read)."""
    if not points:
        raise ValueError(
            "no checkpoints: give --checkpoints=WORKDIR@STEP,... or --workdir=WORKDIR --last=K"
        )
    for workdir, step in points:
        steps = _steps(workdir, f"--checkpoints {workdir}@{step}")
        if step not in steps:
            raise ValueError(
                f"--checkpoints: step {step} is not a saved checkpoint of "
                f"{workdir} (saved: {', '.join(map(str, steps)) or 'none'})"
            )


def average(
    points: Sequence[tuple[str, int]], w: np.ndarray
) -> tuple[ModelConfig, Any, dict[str, Any]]:
    """(the model config, the weighted sum of the checkpoints' params as numpy arrays of
    their own dtypes, the last checkpoint's meta); each checkpoint verified against its
    recorded digest and of the same architecture as the first."""
    total, cfg, first = None, None, ""
    for (workdir, step), weight in zip(points, w, strict=True):
        ckpts = checkpoint.TrainCheckpoints(
            paths.join(paths.absolute(workdir), "checkpoints"), read_only=True
        )
        try:
            state, meta = ckpts.restore_on_host(step)
        finally:
            ckpts.close()
        saved = ModelConfig.from_dict(meta["model"])
        where = f"{workdir}@{step}"
        if cfg is None:
            cfg, first, dtypes = saved, where, jax.tree.map(lambda a: a.dtype, state["params"])
        elif diff := modeldir.architecture_diff(cfg, saved):
            raise ValueError(f"--checkpoints: {where} differs from {first} in {', '.join(diff)}")
        part = jax.tree.map(lambda a, wt=weight: np.asarray(a, np.float64) * wt, state["params"])
        total = part if total is None else jax.tree.map(np.add, total, part)
    return cfg, jax.tree.map(lambda a, d: a.astype(d), total, dtypes), meta


def tokenizer_of(meta: dict[str, Any], given: str = "") -> Any:
    """`given` (a model, transformers or tokenizer directory), else the tokenizer of the
    data the checkpoint's run trained on last (its meta's record), else None."""
    from bertjax.data.tokenizers import load_tokenizer

    if given:
        return modeldir.any_tokenizer(given)
    data = meta.get("data")
    tok_dir = paths.join(data[-1]["path"], "tokenizer") if isinstance(data, list) and data else ""
    if not tok_dir or not paths.isdir(tok_dir):
        return None
    with paths.local_copy(tok_dir) as local:
        return load_tokenizer(local)


def write(
    out: str,
    points: Sequence[tuple[str, int]],
    kind: str = "uniform",
    ema_decay: float = 0.9,
    tokenizer: str = "",
    overwrite: bool = False,
) -> str:
    """Averages `points` (oldest first) into the model directory `out`; a line saying
    what was written."""
    from bertjax.models.registry import family

    check(points)
    w = weights(len(points), kind, ema_decay)
    if tokenizer:
        modeldir.any_tokenizer(tokenizer)  # a bad --tokenizer before the reading
    cfg, params, meta = average(points, w)
    tok = tokenizer_of(meta, tokenizer)
    if tok is not None:
        tok.tokenizer_class = family(cfg.family).tokenizer_class
    modeldir.check_params(params, cfg, out)
    sources = [f"{paths.absolute(wd)}@{s}" for wd, s in points]
    modeldir.save(
        out,
        cfg.replace(dtype=stored_dtype(points[-1][0], cfg)),
        params,
        tok,
        overwrite=overwrite,
        extra={
            "source": f"average of {len(points)} checkpoints",
            "average": {"checkpoints": sources, "weights": [float(x) for x in w]},
        },
    )
    return (
        f"wrote {out}: the {kind} average of {len(points)} checkpoints "
        f"({', '.join(f'{s}: {x:.4g}' for s, x in zip(sources, w, strict=True))})"
    )


def stored_dtype(workdir: str, cfg: ModelConfig) -> str:
    """The run's model.dtype as configured (its checkpoints record the compute dtype)."""
    run = paths.join(paths.absolute(workdir), "config.json")
    if paths.exists(run):
        return str((paths.read_json(run).get("model") or {}).get("dtype") or cfg.dtype)
    return cfg.dtype
