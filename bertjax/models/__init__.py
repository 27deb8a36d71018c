"""Model families on shared layers. `build(cfg)` returns the pretraining module."""

from __future__ import annotations

import flax.linen as nn

from bertjax.models.albert import AlbertForPreTraining
from bertjax.models.bert import BertForPreTraining
from bertjax.models.config import ConfigError, ModelConfig
from bertjax.models.distilbert import DistilBertForMaskedLM
from bertjax.models.electra import ElectraForPreTraining
from bertjax.models.roberta import RobertaForMaskedLM

MODELS: dict[str, type[nn.Module]] = {
    "bert": BertForPreTraining,
    "roberta": RobertaForMaskedLM,
    "albert": AlbertForPreTraining,
    "distilbert": DistilBertForMaskedLM,
    "electra": ElectraForPreTraining,
}


def build(cfg: ModelConfig) -> nn.Module:
    """The pretraining module of `cfg.family`."""
    return MODELS[cfg.family](cfg)


__all__ = ["MODELS", "ConfigError", "ModelConfig", "build"]
