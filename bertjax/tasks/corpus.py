"""What the pretraining tasks share: batches from prepared pretraining data.

A `CorpusTask` trains on what `prepare data` wrote (bertjax/data/pipeline.py): one
phase at `max_seq_length`, then optionally phase 2 at `phase2.max_seq_length` for the
last `phase2.fraction` of the steps, from its own prepared directory (BERT's 90% at
128 then 512). It evaluates on the phase's validation split, makes synthetic batches
of the pipeline's shapes for `bench train`, and saves the final model with the data's
tokenizer. Subclasses give the heads and the loss. A data directory may be gs://
(its shards are read through the pipeline's bounded local cache, data.cache_dir and
data.cache_gb).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from bertjax import flops as flops_lib
from bertjax import paths
from bertjax.metrics import combine
from bertjax.models.config import ModelConfig
from bertjax.tasks.base import Batches, Context, Phase, Task, random_batches

MASK_ID = 4  # stands in for [MASK] at the masked positions


def plan_phases(config: Any) -> list[Phase]:
    """Phase 1, then phase 2 for the last `phase2.fraction` of the steps (if > 0).

    The boundary falls on an optimizer-update boundary (a multiple of grad_accum_steps).
    config.phases, when given, is an N-phase plan instead (bertjax/tasks/plan.py).
    """
    if config.get("phases"):
        from bertjax.tasks import plan

        return plan.plan_phases(config)
    total, accum = int(config.train.steps), int(config.optim.grad_accum_steps)
    first = Phase(
        0,
        0,
        total,
        int(config.train.batch_size),
        config.data.dir,
        {
            "max_seq_length": int(config.max_seq_length),
            "max_predictions_per_seq": int(config.max_predictions_per_seq),
            "keys": ("max_seq_length", "data.dir"),
        },
    )
    p2 = config.phase2
    if not p2.fraction:
        return [first]
    if not 0 < p2.fraction < 1:
        raise ValueError(f"phase2.fraction={p2.fraction}: must be in [0, 1)")
    if not p2.data_dir:
        raise ValueError(
            "phase2.data_dir is required when phase2.fraction > 0 (data "
            "prepared at phase2.max_seq_length)"
        )
    boundary = int(round(total * (1 - p2.fraction))) // accum * accum
    if not 0 < boundary < total:
        raise ValueError(
            f"phase2.fraction={p2.fraction} leaves an empty phase of train.steps={total}"
        )
    return [
        dataclasses.replace(first, end=boundary),
        Phase(
            1,
            boundary,
            total,
            int(p2.batch_size or config.train.batch_size),
            p2.data_dir,
            {
                "max_seq_length": int(p2.max_seq_length),
                "max_predictions_per_seq": int(p2.max_predictions_per_seq),
                "keys": ("phase2.max_seq_length", "phase2.data_dir"),
            },
        ),
    ]


# Embedding rows a model may have beyond its tokenizer's without a warning (tables padded
# to a multiple of 128 for the accelerators' tiles).
VOCAB_PADDING = 128


def pair_head(cfg: ModelConfig) -> str | None:
    """The sentence-pair head ("nsp" or "sop") the model trains, if any."""
    return next((h for h in ("nsp", "sop") if h in cfg.heads), None)


class CorpusTask(Task):
    """A task trained on prepared pretraining data; subclasses give heads and loss."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._phases: list[Phase] | None = None
        self._manifests: dict[str, Any] = {}  # data directory -> its Manifest, read once
        self.cfg: ModelConfig | None = None

    def phases(self) -> list[Phase]:
        if self._phases is None:
            self.train_steps()  # a bad train.steps is named first
            self._phases = plan_phases(self.config)
        return self._phases

    def manifest(self, phase: Phase) -> Any:
        """The phase's data's Manifest (bertjax/data/manifest.py), read once."""
        if phase.source not in self._manifests:
            from bertjax.data.manifest import Manifest

            self._manifests[phase.source] = Manifest.read(phase.source)
        return self._manifests[phase.source]

    def meta(self) -> dict[str, Any]:
        """Also each phase's data: its path and manifest digest (a resumed run checks the
        digest; the path may change)."""
        return {
            **super().meta(),
            "data": [
                {"path": paths.absolute(p.source), "manifest_sha256": self._digest(p)}
                for p in self.phases()
            ],
        }

    def _digest(self, phase: Phase) -> str:
        if phase.options.get("mixture"):  # every source's, and the weights
            from bertjax.tasks import plan

            return plan.mixture_digest(self, phase)
        return self.manifest(phase).digest()

    def setup(self, ctx: Context) -> Any:
        self.cfg = ctx.cfg
        for phase in self.phases():  # bad data fails before the workdir is touched
            self._check_data(phase, ctx.cfg)
        return None

    def _check_data(self, phase: Phase, cfg: ModelConfig) -> None:
        length_key, dir_key = phase.options["keys"]
        if not phase.source:
            raise ValueError(
                f"--config.{dir_key} is required: the prepared data to train "
                "on (python -m bertjax prepare data)"
            )
        manifest = self.manifest(phase)
        path = manifest.path
        vocab = manifest.vocab_size
        if vocab > cfg.vocab_size:
            raise ValueError(
                f"{path}: the tokenizer has {vocab} tokens, more than "
                f"model.vocab_size={cfg.vocab_size}"
            )
        unused = cfg.vocab_size - vocab
        if unused >= VOCAB_PADDING:  # allowed: a tokenizer may come out smaller than asked
            print(
                f"warning: model.vocab_size={cfg.vocab_size}, but the tokenizer of {path} "
                f"has {vocab} tokens: {unused} embedding rows are never trained "
                f"(--config.model.vocab_size={vocab} to match)",
                flush=True,
            )
        prepared = int(manifest.settings["max_seq_length"])
        if prepared != phase.options["max_seq_length"]:
            raise ValueError(
                f"{length_key}={phase.options['max_seq_length']}, but {path} was "
                f"prepared at max_seq_length={prepared}"
            )
        self._check_masking(manifest, path)
        if self.config.get("phases"):
            from bertjax.tasks import plan

            plan.check_data(self, phase, manifest)

    def _check_masking(self, manifest: Any, path: str) -> None:
        """The data's masking is what trains (masks stored by `prepare data`, or drawn
        while training with config.data's settings); a config that says otherwise is
        told so, not silently overruled."""
        from bertjax.data.from_config import masking_config

        data = self.config.get("data")
        if data is None or "masking" not in data:
            return
        if manifest["masking"] != data.masking:
            used = (
                "its stored masks are used"
                if manifest["masking"] == "static"
                else "masks are drawn while training, by masking.strategy and the rest"
            )
            print(
                f"warning: data.masking={data.masking}, but {path} was prepared with "
                f"{manifest['masking']} masking: {used}",
                flush=True,
            )
            return
        stored = manifest["settings"].get("masking_config")
        if manifest["masking"] != "static" or not isinstance(stored, dict):
            return
        wanted = dataclasses.asdict(masking_config(self.config))
        wanted.pop("max_predictions_per_seq", None)  # checked with the batches
        differ = [k for k in sorted(wanted) if k in stored and stored[k] != wanted[k]]
        if differ:
            print(
                f"warning: {path} holds static masks made with "
                + ", ".join(f"{k}={stored[k]}" for k in differ)
                + ", but "
                + ", ".join(f"masking.{k}={wanted[k]}" for k in differ)
                + ": the stored masks are used (prepare the data again to change them)",
                flush=True,
            )

    def _pipeline(self, phase: Phase, split: str, start_step: int, repeat: bool) -> Any:
        from bertjax.data.from_config import masking_config
        from bertjax.data.pipeline import Pipeline, PipelineConfig
        from bertjax.tasks import plan

        config, cfg, manifest = self.config, self.cfg, self.manifest(phase)
        dynamic = manifest.masking == "dynamic"
        predictions = phase.options["max_predictions_per_seq"]
        return Pipeline(
            manifest,
            PipelineConfig(
                split,
                phase.batch_size,
                int(config.seed),
                masking=(
                    plan.masking(config, phase, predictions)
                    if config.get("phases")
                    else masking_config(config, predictions)
                )
                if dynamic
                else None,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                shuffle_buffer=int(config.data.shuffle_buffer) if split == "train" else 0,
                start_step=start_step,
                repeat=repeat,
                max_position_embeddings=cfg.max_position_embeddings,
                position_offset=cfg.position_offset,
                cache_dir=str(config.data.get("cache_dir", "")),
                cache_gb=float(config.data.get("cache_gb", 0.0)),
                packing=str(config.data.get("packing", "off")),  # docs/packing.md
                packing_max_sequences=int(config.data.get("packing_max_sequences", 16)),
                # rows a multiple of the devices and of an eighth of the batch: few shapes
                packing_row_multiple=max(2, jax.device_count(), phase.batch_size // 8),
            ),
        )

    def train_batches(self, phase: Phase, start_step: int) -> Batches:
        if phase.options.get("mixture"):  # several sources (bertjax/data/mixture.py)
            from bertjax.tasks import plan

            return plan.mixture_batches(self, phase, start_step)
        pipe = self._pipeline(phase, "train", start_step, True)
        it = iter(pipe)
        seq_len = pipe.max_seq_length
        return Batches(
            it, seq_len, self.flops(self.cfg, seq_len, pipe.max_predictions_per_seq), it.close
        )

    def flops(
        self, cfg: ModelConfig, seq_len: int, predictions: int | None = None
    ) -> flops_lib.Flops:
        if predictions is None:
            predictions = int(self.config.max_predictions_per_seq)
        return flops_lib.train_flops_per_token(cfg, seq_len, predictions / seq_len, self.teacher)

    def evaluators(self, ctx: Context, phase: Phase) -> list[Any]:
        if "validation" not in self.manifest(phase).splits:
            return []
        return [_ValidationSplit(self, ctx, phase)]

    def synthetic_batches(
        self, cfg: ModelConfig, batch_size: int, seq_len: int, seed: int, count: int
    ) -> list[dict[str, np.ndarray]]:
        return synthetic_batches(
            cfg, batch_size, seq_len, int(self.config.max_predictions_per_seq), seed, count
        )

    def tokenizer(self) -> Any:
        from bertjax.data.tokenizers import load_tokenizer

        with paths.local_copy(paths.join(self.phases()[-1].source, "tokenizer")) as local:
            return load_tokenizer(local)


class _ValidationSplit:
    """The task's eval metrics over the phase's validation split (train.eval_steps
    batches of it; 0: all)."""

    name = "eval"

    def __init__(self, task: CorpusTask, ctx: Context, phase: Phase) -> None:
        self.task, self.ctx, self.phase = task, ctx, phase

    def run(self, params: Any) -> dict[str, float]:
        pipe = self.task._pipeline(self.phase, "validation", 0, False)
        limit = int(self.task.config.train.eval_steps)
        results = []
        for i, batch in enumerate(pipe):
            if limit and i >= limit:
                break
            results.append(self.ctx.eval_step(params, batch))
        return combine(results)


def synthetic_batches(
    cfg: ModelConfig, batch_size: int, seq_len: int, num_predictions: int, seed: int, count: int
) -> list[dict[str, np.ndarray]]:
    """`count` pipeline-shaped batches from a seeded numpy generator (`random_batches`).

    Returns dicts of input_ids, token_type_ids, attention_mask [B, L] int32 (all ones),
    masked_lm_positions, masked_lm_ids [B, P] int32 (P distinct sorted positions per
    row, the original ids), masked_lm_weights [B, P] float32 (ones) and pair_labels [B]
    int32 (random 0/1 when the model has an NSP / SOP head, else -1).
    """
    if not 0 < num_predictions <= seq_len:
        raise ValueError(
            f"max_predictions_per_seq={num_predictions}: must be in [1, max_seq_length={seq_len}]"
        )

    def fill(rng: np.random.Generator, ids: np.ndarray) -> dict[str, np.ndarray]:
        # The first P of a random permutation per row: distinct positions.
        positions = np.sort(
            np.argsort(rng.random((batch_size, seq_len)), axis=1)[:, :num_predictions], axis=1
        ).astype(np.int32)
        masked_ids = np.take_along_axis(ids, positions, axis=1)
        np.put_along_axis(ids, positions, MASK_ID, axis=1)
        types = np.zeros_like(ids)
        if cfg.type_vocab_size > 1:
            types[:, seq_len // 2 :] = 1  # two segments, as in NSP / SOP pairs
        pair = (
            rng.integers(0, 2, batch_size, dtype=np.int32)
            if pair_head(cfg)
            else np.full(batch_size, -1, np.int32)
        )
        return {
            "input_ids": ids,
            "token_type_ids": types,
            "attention_mask": np.ones_like(ids),
            "masked_lm_positions": positions,
            "masked_lm_ids": masked_ids,
            "masked_lm_weights": np.ones(positions.shape, np.float32),
            "pair_labels": pair,
        }

    return random_batches(cfg, batch_size, seq_len, seed, count, fill)
