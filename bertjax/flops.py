"""Training FLOPs per token, the one formula every MFU figure in bertjax uses.

For an encoder of L layers, width d, FFN width I, sequence length S,
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

Architecture switches (docs/architectures.md): a gated MLP (model.mlp=glu) has two
input projections, 6·L·(4d² + 3dI). A sliding-window layer (model.local_window = w)
scores each query against the keys within w // 2 of it, K(S, w) = the mean over the S
queries of min(q, w//2) + min(S-1-q, w//2) + 1 (S when the window covers the row), so
the attention term is 12·d·Σ_layers K, with K = S on global layers. This counts the
work the model needs: the einsum and xla kernels compute the whole [S, S] score matrix
and mask it, so their hardware FLOPs stay at 12·L·S·d. Rotary positions, norms without
bias and the untied decoder's extra table change no matmul and are not counted apart.
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


def window_keys(seq_len: int, window: int) -> float:
    """K(S, w): keys per query, averaged over the row, of a window keeping |q - k| <= w // 2
    (S for global attention, window 0)."""
    h = window // 2
    if not window or h >= seq_len - 1:
        return float(seq_len)
    return sum(min(q, h) + min(seq_len - 1 - q, h) + 1 for q in range(seq_len)) / seq_len


def _tower(cfg: ModelConfig, seq_len: int) -> tuple[float, float]:
    d, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    layers = 6 * n * (4 * d * d + (3 if cfg.mlp == "glu" else 2) * d * i)
    if cfg.projects_embeddings:
        layers += 6 * cfg.embed_dim * d
    keys = sum(window_keys(seq_len, cfg.layer_window(j)) for j in range(n))
    return layers, 12 * keys * d


def train_flops_per_token(
    cfg: ModelConfig, seq_len: int, mlm_fraction: float = 1.0, teacher: ModelConfig | None = None
) -> Flops:
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
