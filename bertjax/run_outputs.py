"""What a training run writes besides its checkpoints: WORKDIR/model (the final
parameters as a model directory), WORKDIR/model_ema (their moving average, with
optim.ema_decay > 0) and WORKDIR/best (the parameters of the best evaluation score
so far, kept across restarts of the run). Single host only; on several hosts the
checkpoints are the output.

`RunOutputs` is a base class of train.py's `Trainer`: its methods read the trainer's
workdir, config, task, state and step.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from bertjax import experiment, modeldir, paths
from bertjax.ema import ema_params
from bertjax.hosts import log
from bertjax.models.registry import family


class RunOutputs:
    """WORKDIR/model, model_ema and best (a base class of Trainer)."""

    # -- the best checkpoint ----------------------------------------------------------

    def _best_dir(self) -> str:
        return paths.join(self.workdir, "best")

    def _read_best(self) -> float | None:
        """The score of WORKDIR/best, kept by an earlier start of this run."""
        if not paths.exists(paths.join(self._best_dir(), "config.json")):
            return None
        _, meta = modeldir.read_config(self._best_dir())
        return float(meta["best"]["value"])

    def _keep_if_best(self, main: tuple[str, str], scores: dict[str, dict[str, float]]) -> None:
        """WORKDIR/best: the parameters of the best `main` score so far (higher is
        better), as a model directory with every score of that evaluation (single host)."""
        value = float(scores[main[0]][main[1]])
        if self.best is not None and value <= self.best:
            return
        self.best = value
        if jax.process_count() == 1:
            self._write_model(
                self._best_dir(),
                {
                    "best": {
                        "evaluator": main[0],
                        "metric": main[1],
                        "value": value,
                        "step": self.step,
                    },
                    "scores": {k: {m: float(v) for m, v in d.items()} for k, d in scores.items()},
                },
            )
            log(
                f"best {main[0]} {main[1]} so far: {value:.4f} at step {self.step} -> "
                f"{self._best_dir()}"
            )

    def _export_model(self) -> None:
        """WORKDIR/model: the final parameters as a model directory (single host)."""
        if jax.process_count() > 1:
            log(
                f"model directory not written on {jax.process_count()} hosts; the final "
                f"state is checkpoint {self.step} in {self.ckpts.directory}"
            )
            return
        out = paths.join(self.workdir, "model")
        self._write_model(out)
        log(f"wrote {out} (python -m bertjax export --checkpoint={out} --out=HF_DIR)")
        averaged = ema_params(self.state["opt_state"])  # optim.ema_decay > 0 (bertjax/ema.py)
        if averaged is not None:
            out = paths.join(self.workdir, "model_ema")
            self._write_model(out, {"ema_decay": self.setup.optim.ema_decay}, averaged)
            log(f"wrote {out} (the parameters' moving average)")

    def _write_model(
        self, out: str, extra: dict[str, Any] | None = None, params: Any = None
    ) -> None:
        tok = self.task.tokenizer()
        if tok is not None:
            tok.tokenizer_class = family(self.cfg.family).tokenizer_class
        # The stored dtype, not the compute one.
        cfg = self.cfg.replace(dtype=experiment.stored_model_config(self.config).dtype)
        params = self.state["params"] if params is None else params
        params = jax.tree.map(np.asarray, jax.device_get(params))
        modeldir.save(
            out,
            cfg,
            params,
            tok,
            overwrite=True,
            extra={"source": f"{self.workdir} step {self.step}", **(extra or {})},
        )
