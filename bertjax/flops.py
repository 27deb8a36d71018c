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
softmax and the per-sequence pooler/NSP are left out (they are < 1% at BERT sizes).
ELECTRA counts generator and discriminator; the discriminator's head runs on every
position (6·(d² + d) per token). Distillation adds the frozen teacher's forward pass,
a third of its own training FLOPs (2 of the 6 FLOPs per multiply-add), its MLM head
on the same f of the positions.
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
    if cfg.family == "electra":
        gen = cfg.generator_config()
        gl, ga = _tower(gen, seq_len)
        dl, da = _tower(cfg, seq_len)
        gen_head = 6 * (gen.hidden_size * gen.embed_dim + gen.embed_dim * cfg.vocab_size)
        disc_head = 6 * (cfg.hidden_size ** 2 + cfg.hidden_size)
        return Flops(gl + dl, ga + da, gen_head * mlm_fraction + disc_head)
    layers, attention = _tower(cfg, seq_len)
    head = 6 * (cfg.hidden_size * cfg.embed_dim + cfg.embed_dim * cfg.vocab_size)
    return Flops(layers, attention, head * mlm_fraction)
