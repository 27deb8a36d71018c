"""The architecture of one encoder, as a frozen dataclass shared by all six families.

A config file's `config.model` block is turned into a `ModelConfig` with
`ModelConfig.from_dict`, which rejects unknown keys and impossible shapes with a
message naming the key, so a typo in an ablation fails before anything is built.

What differs by family (default heads, rules, the E -> H projection) is read from the
family records (bertjax/models/registry.py), which are plain data and functions that
never import this module: the imports run one way, records -> registry -> config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from bertjax.models.family import LABELLED_HEADS, POOLED_HEADS, Family
from bertjax.models.registry import FAMILIES, PRESETS, suggest

ACTIVATIONS = ("gelu", "gelu_new", "relu", "silu")
REMAT_POLICIES = ("none", "full", "dots")
# Attention kernels (bertjax/models/attention.py `attention_kernel`): einsum is the
# reference (the only one with attention dropout); auto picks per call.
ATTENTION = ("auto", "einsum", "xla", "cudnn", "tpu")
DTYPES = ("float32", "bfloat16", "float16")
NORM_POSITIONS = ("post", "pre")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("dense", "glu")
POOLINGS = ("cls", "mean")
# The architecture switches (docs/architectures.md): their defaults are the classic
# families' architecture; a family's transformers classes represent only some values
# (Family.hf_switches), which export checks.
SWITCHES = (
    "norm_position",
    "final_norm",
    "embedding_norm",
    "norm",
    "norm_bias",
    "attention_bias",
    "mlp_bias",
    "head_bias",
    "decoder_bias",
    "tie_decoder",
    "mlp",
    "rope_theta",
    "local_rope_theta",
    "local_window",
    "global_every",
    "classifier_pooling",
)


class ConfigError(ValueError):
    """A model config key holds a value that cannot describe a model."""


class ConfigRecord:
    """What the frozen config dataclasses (ModelConfig, optim.OptimConfig) share: built
    from a config section's dict with unknown keys refused, validated on every change,
    errors naming `SECTION.key`. Subclasses define `validate()`."""

    SECTION = ""  # the config section the fields come from: model, optim

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """Builds a validated config; unknown keys are an error naming the key."""
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown {cls.SECTION} config key(s): {', '.join(unknown)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **kw: Any) -> Any:
        cfg = dataclasses.replace(self, **kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        raise NotImplementedError

    def need(self, ok: bool, key: str, why: str) -> None:
        """A ConfigError naming SECTION.key and its value unless `ok`."""
        if not ok:
            raise ConfigError(f"{self.SECTION}.{key}={getattr(self, key)!r}: {why}")


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"model.family={name!r}: expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


@dataclasses.dataclass(frozen=True)
class ModelConfig(ConfigRecord):
    """Architecture, heads and implementation switches of one encoder family member."""

    SECTION = "model"

    family: str = "bert"  # a bertjax.models.registry family; picks layers' names and rules
    # Heads on the encoder (bertjax/models/family.py lists them); None: the family's
    # pretraining heads. () is a bare encoder.
    heads: tuple[str, ...] | None = None
    vocab_size: int = 30522  # BERT uncased WordPiece vocabulary
    hidden_size: int = 768  # H, the width of the residual stream
    num_layers: int = 12  # L, applications of an encoder layer
    num_heads: int = 12  # A; head size is H / A
    intermediate_size: int = 3072  # FFN width, 4H in every published preset
    hidden_act: str = "gelu"  # erf GELU (BERT); ALBERT uses "gelu_new" (tanh)
    max_position_embeddings: int = 512  # rows of the position table (RoBERTa: 514)
    type_vocab_size: int = 2  # segment ids; 0 means no token-type table (DistilBERT)
    embedding_size: int = 0  # E; 0 means E = H. ALBERT/ELECTRA factorize (E != H)
    layer_norm_eps: float = 1e-12  # RoBERTa uses 1e-5
    dropout_rate: float = 0.1  # hidden dropout (embeddings, attention out, FFN out)
    attention_dropout_rate: float = 0.1  # dropout on attention probabilities
    initializer_range: float = 0.02  # std of the truncated-normal init
    pad_token_id: int = 0  # RoBERTa: 1
    positions_from_padding: bool = False  # RoBERTa: position = pad_id + 1 + index of non-pad
    sinusoidal_positions: bool = False  # DistilBERT option: fixed sin/cos position table
    num_hidden_groups: int = 0  # ALBERT parameter groups; 0 means no sharing (one per layer)
    inner_group_num: int = 1  # ALBERT layers inside a group
    # ELECTRA generator (shares the discriminator's embeddings; 0 = no generator).
    generator_hidden_size: int = 0
    generator_num_heads: int = 0
    generator_intermediate_size: int = 0
    generator_num_layers: int = 0  # 0 means the discriminator's num_layers
    # Task heads: classifier and token_classifier output num_labels values (1 for a
    # regression); label_names, when given, name them (transformers' id2label).
    num_labels: int = 0
    label_names: tuple[str, ...] = ()
    classifier_dropout_rate: float = 0.1  # before the task heads (DistilBERT: 0.2)
    # Architecture switches (docs/architectures.md, with their papers). The defaults are
    # the classic post-norm BERT layer, so the five classic families are unchanged.
    norm_position: str = "post"  # post: norm(x + f(x)) (BERT); pre: x + f(norm(x))
    final_norm: bool = False  # a norm after the last layer (pre-norm encoders)
    embedding_norm: bool = True  # a norm on the embeddings' sum
    norm: str = "layernorm"  # layernorm | rmsnorm (no mean, no bias)
    norm_bias: bool = True  # LayerNorm's additive bias (beta)
    attention_bias: bool = True  # biases of q, k, v and the attention output
    mlp_bias: bool = True  # biases of the FFN's projections
    head_bias: bool = True  # bias of the MLM / prediction-head transform dense
    decoder_bias: bool = True  # the MLM decoder's output bias
    tie_decoder: bool = True  # MLM decoder = word-embedding table; False: its own kernel
    # dense: act(x W_in) W_out; glu: (act(x W_a) * x W_g) W_out with W_a, W_g one fused
    # [H, 2, I] kernel (transformers' Wi): GeGLU with gelu, SwiGLU with silu.
    mlp: str = "dense"
    rope_theta: float = 0.0  # > 0: rotary positions with this base, no position table
    local_rope_theta: float = 0.0  # rotary base of local-attention layers; 0: rope_theta
    # > 0: sliding-window attention, keys within local_window // 2 of the query, on every
    # layer but the global ones (ModernBERT: 128, global every 3rd from layer 0).
    local_window: int = 0
    global_every: int = 0  # with local_window: layer i global when i % N == 0; 0: none
    classifier_pooling: str = "cls"  # cls | mean: the vector a prediction-head classifier reads
    # Implementation switches: they change speed and memory, never the function.
    dtype: str = "float32"  # compute dtype; parameters stay in param_dtype
    param_dtype: str = "float32"
    scan_layers: bool = False  # nn.scan over layers: one compiled layer, stacked params
    remat: str = "none"  # activation checkpointing per layer: none | full | dots
    attention: str = "auto"  # auto | einsum | xla | cudnn | tpu (attention.attention_kernel)

    def __post_init__(self) -> None:
        if self.heads is None:  # the family's pretraining model
            heads = _family(self.family).pretrain_heads
        else:
            heads = (self.heads,) if isinstance(self.heads, str) else self.heads
        object.__setattr__(self, "heads", tuple(heads))
        object.__setattr__(self, "label_names", tuple(self.label_names))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """The config of preset `name` (registry.PRESETS: the published sizes of the six
        families and the 24 small BERTs) with `overrides`; an unknown name is an error
        suggesting close ones."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; {suggest(name)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    # Derived sizes -----------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def projects_embeddings(self) -> bool:
        """Whether the encoder maps E -> H first (ALBERT keeps the projection at E = H)."""
        return self.embed_dim != self.hidden_size or _family(self.family).always_projects_embeddings

    @property
    def position_offset(self) -> int:
        """Position id of the first token (RoBERTa counts from pad_token_id + 1): a
        sequence of L tokens needs L + position_offset position embeddings."""
        return self.pad_token_id + 1 if self.positions_from_padding else 0

    @property
    def rotary(self) -> bool:
        return self.rope_theta > 0

    def layer_window(self, i: int) -> int:
        """Layer i's attention window: 0 (global) or local_window."""
        if not self.local_window or (self.global_every and i % self.global_every == 0):
            return 0
        return self.local_window

    def layer_theta(self, i: int) -> float:
        """Layer i's rotary base (0: no rotary positions)."""
        if self.layer_window(i) and self.local_rope_theta:
            return self.local_rope_theta
        return self.rope_theta

    @property
    def first_attention_norm(self) -> bool:
        """Whether layer 0 normalises its attention input: a pre-norm layer 0 takes the
        embedding norm's output as it is (ModernBERT)."""
        return not (self.norm_position == "pre" and self.embedding_norm)

    @property
    def layers_differ(self) -> bool:
        """Whether layers differ beyond their weights (windows, thetas, layer 0's norm),
        which shared layers (ALBERT) cannot express."""
        kinds = {(self.layer_window(i), self.layer_theta(i)) for i in range(self.num_layers)}
        return len(kinds) > 1 or not self.first_attention_norm

    @property
    def first_layer_apart(self) -> int:
        """1 when layer 0's parameters differ in kind from the others' (a pre-norm layer 0
        without attention_norm): the scan layout keeps it out of the stack; else 0."""
        return int(self.num_layers > 1 and not self.first_attention_norm)

    @property
    def use_pooler(self) -> bool:
        return "pooler" in self.heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_groups(self) -> int:
        return self.num_hidden_groups or self.num_layers

    @property
    def shares_layers(self) -> bool:
        return self.num_groups != self.num_layers or self.inner_group_num != 1

    @property
    def has_generator(self) -> bool:
        return self.generator_hidden_size > 0

    def generator_config(self) -> ModelConfig:
        """The ELECTRA generator's tower: same embeddings, its own width and depth, an MLM
        head (a generator alone, as transformers' ElectraForMaskedLM holds it)."""
        if not self.has_generator:
            raise ConfigError("model.generator_hidden_size is 0: this model has no generator")
        return dataclasses.replace(
            self,
            heads=("mlm",),
            hidden_size=self.generator_hidden_size,
            num_heads=self.generator_num_heads,
            intermediate_size=self.generator_intermediate_size,
            num_layers=self.generator_num_layers or self.num_layers,
            embedding_size=self.embed_dim,
            generator_hidden_size=0,
            generator_num_heads=0,
            generator_intermediate_size=0,
            generator_num_layers=0,
            num_labels=0,
            label_names=(),
        )

    def validate(self) -> None:
        need = self.need
        family = _family(self.family)
        need(self.hidden_act in ACTIVATIONS, "hidden_act", f"expected one of {ACTIVATIONS}")
        need(self.remat in REMAT_POLICIES, "remat", f"expected one of {REMAT_POLICIES}")
        need(self.attention in ATTENTION, "attention", f"expected one of {ATTENTION}")
        need(
            self.attention in ("auto", "einsum") or self.attention_dropout_rate == 0,
            "attention",
            f"has no attention dropout: set model.attention_dropout_rate=0 "
            f"(now {self.attention_dropout_rate}), or model.attention=auto (the einsum "
            "path while training with attention dropout)",
        )
        need(self.dtype in DTYPES, "dtype", f"expected one of {DTYPES}")
        need(self.param_dtype in DTYPES, "param_dtype", f"expected one of {DTYPES}")
        for key in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
            "inner_group_num",
        ):
            need(getattr(self, key) > 0, key, "must be positive")
        need(
            self.hidden_size % self.num_heads == 0,
            "num_heads",
            f"must divide hidden_size={self.hidden_size}",
        )
        need(self.type_vocab_size >= 0, "type_vocab_size", "must be >= 0")
        need(self.embedding_size >= 0, "embedding_size", "must be >= 0 (0 means hidden_size)")
        need(
            0 <= self.pad_token_id < self.vocab_size,
            "pad_token_id",
            f"must be an id below vocab_size={self.vocab_size}",
        )
        for key in ("dropout_rate", "attention_dropout_rate", "classifier_dropout_rate"):
            need(0.0 <= getattr(self, key) < 1.0, key, "must be in [0, 1)")
        need(
            self.num_hidden_groups >= 0 and self.num_layers % self.num_groups == 0,
            "num_hidden_groups",
            f"must divide num_layers={self.num_layers}",
        )
        if self.positions_from_padding:
            need(
                self.max_position_embeddings > self.pad_token_id + 1,
                "max_position_embeddings",
                "must exceed pad_token_id + 1 when positions_from_padding is set",
            )
        self._validate_heads(family, need)
        self._validate_switches()
        if self.has_generator:
            need(
                self.generator_num_heads > 0
                and self.generator_hidden_size % self.generator_num_heads == 0,
                "generator_num_heads",
                "must be positive and divide generator_hidden_size",
            )
            need(
                self.generator_intermediate_size > 0,
                "generator_intermediate_size",
                "must be positive",
            )
        family.validate(self, need)

    def _validate_heads(self, family: Family, need: Callable[[bool, str, str], None]) -> None:
        heads = self.heads
        need(len(set(heads)) == len(heads), "heads", "lists a head twice")
        bad = [h for h in heads if h not in family.heads]
        need(
            not bad,
            "heads",
            f"{self.family} has no {', '.join(map(repr, bad))} head; its "
            f"heads: {', '.join(family.heads)}",
        )
        pooled = [
            h
            for h in heads
            if h in POOLED_HEADS or (h == "classifier" and family.classifier == "pooled")
        ]
        need(
            not pooled or "pooler" in heads,
            "heads",
            f"{', '.join(pooled)} read the pooled vector: add 'pooler'",
        )
        if "generator" in heads:
            need(
                self.has_generator,
                "generator_hidden_size",
                "the generator head needs a generator (ELECTRA pretraining)",
            )
            need(
                "discriminator" in heads,
                "heads",
                "the generator head trains beside the discriminator head",
            )
        labelled = [h for h in heads if h in LABELLED_HEADS]
        need(
            not labelled or self.num_labels >= 1,
            "num_labels",
            f"{', '.join(labelled)} need num_labels >= 1",
        )
        need(self.num_labels >= 0, "num_labels", "must be >= 0")
        need(
            not self.label_names or len(self.label_names) == self.num_labels,
            "label_names",
            f"must name all num_labels={self.num_labels} labels, or none",
        )

    def _validate_switches(self) -> None:
        need = self.need
        for key, values in (
            ("norm_position", NORM_POSITIONS),
            ("norm", NORMS),
            ("mlp", MLPS),
            ("classifier_pooling", POOLINGS),
        ):
            need(getattr(self, key) in values, key, f"expected one of {values}")
        need(
            not self.final_norm or self.norm_position == "pre",
            "final_norm",
            "needs model.norm_position=pre (a post-norm layer ends in a norm already)",
        )
        need(
            self.norm == "layernorm" or not self.norm_bias,
            "norm_bias",
            "model.norm=rmsnorm has no bias: set model.norm_bias=False",
        )
        need(self.rope_theta >= 0, "rope_theta", "must be >= 0 (0: no rotary positions)")
        need(
            self.local_rope_theta >= 0 and (self.rotary or not self.local_rope_theta),
            "local_rope_theta",
            "needs model.rope_theta > 0 (rotary positions)",
        )
        if self.rotary:
            need(
                not self.sinusoidal_positions,
                "rope_theta",
                "model.rope_theta and model.sinusoidal_positions both set: pick one scheme",
            )
            need(
                not self.positions_from_padding,
                "rope_theta",
                "rotary positions count from 0: unset model.positions_from_padding",
            )
            need(self.head_dim % 2 == 0, "num_heads", "rotary positions need an even head size")
        need(
            0 <= self.local_window < self.max_position_embeddings,
            "local_window",
            f"must be in [0, max_position_embeddings={self.max_position_embeddings})",
        )
        need(self.global_every >= 0, "global_every", "must be >= 0 (0: no global layers)")
        need(
            not self.shares_layers or not self.layers_differ,
            "num_hidden_groups",
            "shared layers are alike, but these differ (model.local_window with "
            "model.global_every, model.local_rope_theta, or a pre-norm layer 0 that "
            "reuses the embedding norm)",
        )
