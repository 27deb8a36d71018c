"""Model families on shared layers. `build(cfg)` returns the pretraining module."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def init_params(model: nn.Module, seed: int = 0, seq_len: int = 8) -> dict:
    """`model`'s parameters from key(seed), boxed with their logical axes (nn.unbox them
    for plain arrays). The values do not depend on `seq_len`, a dummy input length."""
    return model.init(jax.random.key(seed), jnp.ones((1, seq_len), jnp.int32))["params"]


__all__ = ["MODELS", "ConfigError", "ModelConfig", "build", "init_params"]
