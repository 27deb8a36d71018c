"""Training FLOPs per token, the one formula every MFU figure in bertjax uses.

For a post-LN encoder of L layers, width d, FFN width I, sequence length S,
embedding width E and vocabulary V, counting a multiply-add as 2 FLOPs and the
backward pass as twice the forward:

  train FLOPs/token = 6 * L * (4 d^2 + 2 d I)          # q, k, v, out; FFN in and out
                    + 12 * L * S * d                    # QK^T and attention-weighted V
                    + 6 * E * d * [E -> H projection]   # ALBERT / factorized ELECTRA
                    + 6 * (d * E_h + E_h * V) * f       # MLM transform + vocab projection

where E_h is the MLM head's width (d, or E for ALBERT and the ELECTRA generator)
and f the share of positions where the head runs (1 for the dense head,
max_predictions_per_seq / S for the sparse one). With I = 4d and E_h = d this is
DESIGN.md's 72·L·d² + 12·L·S·d + 6·(d² + d·V)·f. Embedding lookups, LayerNorm,
softmax and the per-sequence heads (pooler, NSP/SOP, sequence classifier) are left
out (they are < 1% at BERT sizes). The heads are counted by what the model has:
ELECTRA's generator head is a tower of its own plus its MLM head; its discriminator
head runs on every position (6·(d² + d) per token); a token classifier and a QA span
head cost 6·d·labels (labels = 2 for spans). Distillation adds the frozen teacher's
forward pass, a third of its own training FLOPs (2 of the 6 FLOPs per multiply-add),
its MLM head on the same f of the positions.
"""

from __future__ import annotations

import dataclasses

from bertjax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Flops:
    """Training FLOPs per token, split by where they are spent."""

    layers: float  # dense matmuls of the encoder layers (and the embedding projection)
    attention: float  # S-dependent score and context matmuls
    head: float  # MLM / RTD heads
    teacher: float = 0.0  # distillation: the frozen teacher's forward pass

    @property
    def total(self) -> float:
        return self.layers + self.attention + self.head + self.teacher


def _tower(cfg: ModelConfig, seq_len: int) -> tuple[float, float]:
    d, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    layers = 6 * n * (4 * d * d + 2 * d * i)
    if cfg.projects_embeddings:
        layers += 6 * cfg.embed_dim * d
    return layers, 12 * n * seq_len * d


def train_flops_per_token(cfg: ModelConfig, seq_len: int, mlm_fraction: float = 1.0,
                          teacher: ModelConfig | None = None) -> Flops:
    """Training FLOPs per token of `cfg` at length `seq_len`; see the module docstring.

    mlm_fraction: f, the share of positions scored by the MLM head.
    teacher: the frozen teacher of a distillation run, whose forward pass is counted.
    """
    if teacher is not None:
        student = train_flops_per_token(cfg, seq_len, mlm_fraction)
        forward = train_flops_per_token(teacher, seq_len, mlm_fraction).total / 3
        return dataclasses.replace(student, teacher=forward)
    layers, attention = _tower(cfg, seq_len)
    d, head = cfg.hidden_size, 0.0
    for name in cfg.heads:
        if name == "mlm":
            head += _mlm_head(cfg) * mlm_fraction
        elif name == "generator":
            gen = cfg.generator_config()
            gl, ga = _tower(gen, seq_len)
            layers, attention = layers + gl, attention + ga
            head += _mlm_head(gen) * mlm_fraction
        elif name == "discriminator":
            head += 6 * (d * d + d)
        elif name == "token_classifier":
            head += 6 * d * cfg.num_labels
        elif name == "span":
            head += 6 * d * 2
    return Flops(layers, attention, head)


def _mlm_head(cfg: ModelConfig) -> float:
    """Transform H -> E_h and the tied vocabulary projection, per scored position."""
    return 6 * (cfg.hidden_size * cfg.embed_dim + cfg.embed_dim * cfg.vocab_size)
