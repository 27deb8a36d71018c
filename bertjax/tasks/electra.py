"""ELECTRA (Clark et al.): a generator's MLM on the masked input, then replaced-token
detection by the discriminator on that input with the generator's samples written at
the masked positions.

  heads: discriminator, generator      loss: gen_weight * MLM + disc_weight * RTD

Config keys (configs/pretrain.py, ELECTRA presets, where their defaults live):
  electra.generator_fraction  generator width / discriminator width; 0: the preset's
  electra.gen_weight, disc_weight, temperature   the loss (paper: 1, 50, 1)

The step's rng gives the generator's and the discriminator's dropout and the Gumbel
noise of the samples (softmax(logits / temperature)), so the whole step is a
function of the step number. Gradients reach the shared embeddings from both towers;
none flows through the discrete samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from bertjax import objectives, steps
from bertjax.metrics import Mean
from bertjax.models.config import ConfigError, ModelConfig
from bertjax.tasks.base import LossFn, packing, packing_metrics
from bertjax.tasks.corpus import CorpusTask

Array = jax.Array
LOSS_KEYS = ("gen_weight", "disc_weight", "temperature")  # config.electra's loss keys


def with_generator_fraction(cfg: ModelConfig, fraction: float) -> ModelConfig:
    """ELECTRA with a generator `fraction` of the discriminator's width (heads of 64 where
    the width allows, else the most heads up to that which divide it; FFN 4x), as the
    paper sizes it (1/4 small and large, 1/3 base)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"electra.generator_fraction={fraction}: must be in (0, 1]")
    hidden = max(1, int(round(cfg.hidden_size * fraction)))
    heads = next(h for h in range(max(1, hidden // 64), 0, -1) if hidden % h == 0)
    return cfg.replace(
        generator_hidden_size=hidden,
        generator_num_heads=heads,
        generator_intermediate_size=4 * hidden,
    )


def electra_loss_fn(
    model: Any, train: bool = True, *, gen_weight: float, disc_weight: float, temperature: float
) -> LossFn:
    """The ELECTRA loss of `model` (heads discriminator and generator); see the module
    docstring."""

    def loss_fn(
        params: Any, batch: Mapping[str, Any], rng: Array, aux_params: Any = None
    ) -> tuple[Array, dict[str, Mean]]:
        del aux_params
        gen_rng, disc_rng, sample_rng = jax.random.split(rng, 3)
        positions = batch["masked_lm_positions"]
        gen, _ = steps.apply(
            model,
            params,
            batch,
            train,
            gen_rng,
            masked_positions=positions,
            heads=("generator",),
            **packing(batch),
        )  # [B, P, V]
        sampled = objectives.sample_tokens(gen["generator"], sample_rng, temperature)  # [B, P]
        corrupted, labels = objectives.replace_tokens(
            batch["input_ids"],
            positions,
            batch["masked_lm_weights"],
            batch["masked_lm_ids"],
            sampled,
        )  # [B, L] each
        disc, _ = steps.apply(
            model,
            params,
            {**batch, "input_ids": corrupted},
            train,
            disc_rng,
            heads=("discriminator",),
            **packing(batch),
        )  # [B, L]
        loss, metrics = objectives.electra_objective(
            {**gen, **disc},
            batch,
            rtd_labels=labels,
            gen_weight=gen_weight,
            disc_weight=disc_weight,
        )
        return loss, {**metrics, **packing_metrics(batch)}

    return loss_fn


class Electra(CorpusTask):
    name = "electra"

    def heads(self, cfg: ModelConfig) -> tuple[str, ...]:
        return ("discriminator", "generator")

    def _options(self) -> dict[str, Any]:
        return dict(self.config.get("electra") or {})

    def model_config(self, cfg: ModelConfig) -> ModelConfig:
        fraction = float(self._options().get("generator_fraction", 0.0) or 0.0)
        if fraction:
            cfg = with_generator_fraction(cfg, fraction)
        return super().model_config(cfg)

    def loss_fn(self, model: Any, train: bool = True) -> LossFn:
        options = self._options()
        missing = [k for k in LOSS_KEYS if k not in options]
        if missing:
            raise ValueError(
                f"task electra needs config.electra.{missing[0]} "
                "(configs/pretrain.py sets the paper's values)"
            )
        return electra_loss_fn(model, train, **{k: float(options[k]) for k in LOSS_KEYS})
