"""Masked language modelling, alone (RoBERTa, DistilBERT) or with a sentence-pair head
(BERT's NSP, ALBERT's SOP), on prepared pretraining data.

  mlm      heads: mlm                   loss: MLM
  mlm_nsp  heads: pooler, mlm, nsp      loss: MLM + NSP (unweighted sum, as BERT)
  mlm_sop  heads: pooler, mlm, sop      loss: MLM + SOP (unweighted sum, as ALBERT)

The model runs the sparse MLM head on `masked_lm_positions` ([B, P]), with dropout
when training; the loss is `objectives.mlm_objective`. Pair labels of -1 (rows without
a pair task) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from bertjax import objectives, steps
from bertjax.metrics import Mean
from bertjax.models.config import ModelConfig
from bertjax.tasks.base import LossFn, packing, packing_metrics
from bertjax.tasks.corpus import CorpusTask

Array = jax.Array


class MaskedLM(CorpusTask):
    """MLM with an optional sentence-pair head."""

    name = "mlm"
    pair: str | None = None

    def heads(self, cfg: ModelConfig) -> tuple[str, ...]:
        return ("pooler", "mlm", self.pair) if self.pair else ("mlm",)

    def loss_fn(self, model: Any, train: bool = True) -> LossFn:
        pair = self.pair

        def loss_fn(
            params: Any, batch: Mapping[str, Any], rng: Array, aux_params: Any = None
        ) -> tuple[Array, dict[str, Mean]]:
            del aux_params
            logits, _ = steps.apply(
                model,
                params,
                batch,
                train,
                rng,
                masked_positions=batch["masked_lm_positions"],
                heads=("mlm", pair) if pair else ("mlm",),
                **packing(batch, "pair_labels" if pair else None),
            )
            loss, metrics = objectives.mlm_objective(logits, batch, pair)
            return loss, {**metrics, **packing_metrics(batch)}

        return loss_fn


class MaskedLMNSP(MaskedLM):
    name, pair = "mlm_nsp", "nsp"


class MaskedLMSOP(MaskedLM):
    name, pair = "mlm_sop", "sop"
