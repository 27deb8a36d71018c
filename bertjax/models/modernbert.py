"""ModernBERT (Warner et al. 2024, arXiv 2412.13663; transformers' ModernBert*): a pre-norm
encoder with an embedding norm and a final norm, bias-free layers and norms, a GeGLU MLP
(one fused Wi), rotary positions (theta 160,000 on global layers, 10,000 on local ones),
128-token sliding-window attention with every third layer global (layer 0 first), no
token types and a decoder tied to the word embeddings with its own bias. Every one of
these is a ModelConfig switch (docs/architectures.md); this record sets them.

Pretraining model: encoder + MLM (transformers' ModernBertForMaskedLM), 30% masking in its
recipe (configs/recipes.py). Task heads transform first (dense -> GELU -> norm, transformers'
ModernBertPredictionHead); the sequence classifier reads [CLS] or the mean of the real
tokens (model.classifier_pooling).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bertjax.convert import names
from bertjax.convert.names import ConversionError, Entry
from bertjax.models import bert
from bertjax.models.family import Family, HFNames, Need

if TYPE_CHECKING:
    from bertjax.models.config import ModelConfig

# What every ModernBERT is, whatever its config.json says.
FIXED = dict(
    type_vocab_size=0,
    norm_position="pre",
    final_norm=True,
    embedding_norm=True,
    norm="layernorm",
    mlp="glu",
)
GLOBAL_THETA, LOCAL_THETA = 160_000.0, 10_000.0  # transformers' defaults


def validate(cfg: ModelConfig, need: Need) -> None:
    need(cfg.type_vocab_size == 0, "type_vocab_size", "ModernBERT has no token types (0)")
    need(
        cfg.rotary, "rope_theta", "ModernBERT has rotary positions, no position table: must be > 0"
    )
    need(
        cfg.embed_dim == cfg.hidden_size,
        "embedding_size",
        "ModernBERT does not factorize embeddings",
    )
    need(not cfg.shares_layers, "num_hidden_groups", "only ALBERT shares layers")


# --- transformers config.json: the released form and transformers v5's ----------------


def _global_every(types: Any, layers: int, source: str) -> int:
    """layer_types -> N, the global layer every N layers from layer 0 (0: none)."""
    if (
        not isinstance(types, list)
        or len(types) != layers
        or not set(types) <= {"full_attention", "sliding_attention"}
    ):
        raise ConversionError(
            f"{source}: layer_types must list 'full_attention' or "
            f"'sliding_attention' for each of the {layers} layers"
        )
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    every = 0 if not full else (full[1] - full[0] if len(full) > 1 else layers)
    if [i for i in range(layers) if every and i % every == 0] != full:
        raise ConversionError(
            f"{source}: layer_types {types} is not a global layer every N "
            "layers from layer 0, the pattern bertjax models"
        )
    return every


def _thetas(content: Mapping[str, Any], source: str) -> tuple[float, float]:
    """(global, local) rotary bases from rope_parameters (v5) or global_rope_theta /
    local_rope_theta (released); anything but default RoPE is refused."""
    if content.get("rope_scaling") is not None:
        raise ConversionError(
            f"{source}: rope_scaling={content['rope_scaling']!r}: bertjax models default RoPE only"
        )
    thetas = [
        float(content.get("global_rope_theta") or GLOBAL_THETA),
        float(content.get("local_rope_theta") or LOCAL_THETA),
    ]
    params = content.get("rope_parameters")
    if params is None:
        return thetas[0], thetas[1]
    extra = sorted(set(params) - {"full_attention", "sliding_attention"})
    if extra:
        raise ConversionError(f"{source}: rope_parameters.{extra[0]} is not modelled")
    for i, kind in enumerate(("full_attention", "sliding_attention")):
        p = params.get(kind) or {}
        odd = sorted(set(p) - {"rope_type", "rope_theta"})
        if p.get("rope_type", "default") != "default" or odd:
            what = f"rope_type={p.get('rope_type')!r}" if not odd else f"{odd[0]}={p[odd[0]]!r}"
            raise ConversionError(
                f"{source}: rope_parameters.{kind}.{what}: bertjax models default RoPE only"
            )
        thetas[i] = float(p.get("rope_theta", thetas[i]))
    return thetas[0], thetas[1]


def from_hf_config(content: Mapping[str, Any], source: str) -> dict[str, Any]:
    c = bert.HFConfig(content, source)
    layers, hidden = c.get("num_hidden_layers"), c.get("hidden_size")
    heads = c.get("num_attention_heads")
    if content.get("head_dim") not in (None, hidden // heads):
        raise ConversionError(
            f"{source}: head_dim={content['head_dim']!r} is not hidden_size / num_attention_heads"
        )
    act = c.act("hidden_activation")
    if c.act("classifier_activation") != act:
        raise ConversionError(
            f"{source}: classifier_activation differs from "
            "hidden_activation; bertjax's heads use hidden_activation"
        )
    if content.get("layer_types") is not None:
        every = _global_every(content["layer_types"], layers, source)
    else:
        every = int(c.get("global_attn_every_n_layers", 3))
    theta, local_theta = _thetas(content, source)
    pooling = c.get("classifier_pooling", "cls")
    if pooling not in ("cls", "mean"):
        raise ConversionError(f"{source}: classifier_pooling={pooling!r}: cls or mean")
    return dict(
        **FIXED,
        vocab_size=c.get("vocab_size"),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=c.get("intermediate_size"),
        hidden_act=act,
        max_position_embeddings=c.get("max_position_embeddings"),
        layer_norm_eps=c.get("norm_eps", 1e-5),
        dropout_rate=c.get("mlp_dropout", 0.0),
        attention_dropout_rate=c.get("attention_dropout", 0.0),
        classifier_dropout_rate=c.get("classifier_dropout", 0.0),
        initializer_range=c.get("initializer_range", 0.02),
        pad_token_id=c.get("pad_token_id", 50283),
        norm_bias=bool(c.get("norm_bias", False)),
        attention_bias=bool(c.get("attention_bias", False)),
        mlp_bias=bool(c.get("mlp_bias", False)),
        head_bias=bool(c.get("classifier_bias", False)),
        decoder_bias=bool(c.get("decoder_bias", True)),
        tie_decoder=bool(c.get("tie_word_embeddings", True)),
        rope_theta=theta,
        local_rope_theta=local_theta,
        local_window=int(c.get("local_attention", 128)),
        global_every=every,
        classifier_pooling=pooling,
    )


def to_hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """Both forms: transformers v5 reads layer_types / rope_parameters, 4.48-4.57 read
    global_attn_every_n_layers / global_rope_theta / local_rope_theta."""
    local_theta = cfg.local_rope_theta or cfg.rope_theta
    every = cfg.global_every if cfg.local_window else 1
    types = [
        "sliding_attention" if cfg.layer_window(i) else "full_attention"
        for i in range(cfg.num_layers)
    ]
    out = {
        **bert.hf_common(cfg),
        "model_type": "modernbert",
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_activation": cfg.hidden_act,
        "classifier_activation": cfg.hidden_act,
        "norm_eps": cfg.layer_norm_eps,
        "norm_bias": cfg.norm_bias,
        "attention_bias": cfg.attention_bias,
        "mlp_bias": cfg.mlp_bias,
        "classifier_bias": cfg.head_bias,
        "decoder_bias": cfg.decoder_bias,
        "tie_word_embeddings": cfg.tie_decoder,
        "embedding_dropout": cfg.dropout_rate,
        "mlp_dropout": cfg.dropout_rate,
        "attention_dropout": cfg.attention_dropout_rate,
        "classifier_dropout": cfg.classifier_dropout_rate,
        "classifier_pooling": cfg.classifier_pooling,
        "local_attention": cfg.local_window or 128,
        "layer_types": types,
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": local_theta},
        },
        "global_rope_theta": cfg.rope_theta,
        "local_rope_theta": local_theta,
    }
    if every:
        out["global_attn_every_n_layers"] = every
    return out


# --- transformers parameter names -------------------------------------------------------


def encoder_map(cfg: ModelConfig, p: str) -> list[Entry]:
    ab, nb = cfg.attention_bias, cfg.norm_bias
    out = [
        Entry(f"{p}embeddings.tok_embeddings.weight", ("embeddings", "word", "embedding")),
        *names.norm(f"{p}embeddings.norm", ("embeddings", "layer_norm"), nb),
    ]
    for i in range(cfg.num_layers):
        hf, ours = f"{p}layers.{i}", ("encoder", f"layer_{i}")
        if i > 0 or cfg.first_attention_norm:
            out += names.norm(f"{hf}.attn_norm", (*ours, "attention_norm"), nb)
        for j, proj in enumerate(("query", "key", "value")):  # one fused Wqkv [3H, H]
            out.append(
                Entry(
                    f"{hf}.attn.Wqkv.weight",
                    (*ours, "attention", proj, "kernel"),
                    "linear1",
                    (j, 3),
                )
            )
            if ab:
                out.append(
                    Entry(f"{hf}.attn.Wqkv.bias", (*ours, "attention", proj, "bias"), split=(j, 3))
                )
        out += [
            *names.linear(f"{hf}.attn.Wo", (*ours, "attention", "out"), "linear2", ab),
            *names.norm(f"{hf}.mlp_norm", (*ours, "output_norm"), nb),
            # Wi [2I, H]: rows [:I] the activated half, [I:] the gate = kernel [H, 2, I]
            *names.linear(f"{hf}.mlp.Wi", (*ours, "intermediate"), bias=cfg.mlp_bias),
            *names.linear(f"{hf}.mlp.Wo", (*ours, "output"), bias=cfg.mlp_bias),
        ]
    return out + names.norm(f"{p}final_norm", ("encoder", "final_norm"), nb)


def _prediction(head: str, cfg: ModelConfig) -> list[Entry]:
    return [
        *names.linear("head.dense", (head, "transform"), bias=cfg.head_bias),
        *names.norm("head.norm", (head, "layer_norm"), cfg.norm_bias),
        *names.linear("classifier", (head, "out")),
    ]


def _mlm(cfg: ModelConfig, p: str) -> list[Entry]:
    out = [
        *names.linear("head.dense", ("mlm", "transform"), bias=cfg.head_bias),
        *names.norm("head.norm", ("mlm", "layer_norm"), cfg.norm_bias),
    ]
    if not cfg.tie_decoder:
        out.append(Entry("decoder.weight", ("mlm", "decoder")))
    return out + ([Entry("decoder.bias", ("mlm", "bias"))] if cfg.decoder_bias else [])


HF = HFNames(
    model_type="modernbert",
    prefix="model",
    architectures={
        "ModernBertModel": (),
        "ModernBertForMaskedLM": ("mlm",),
        "ModernBertForSequenceClassification": ("classifier",),
        "ModernBertForTokenClassification": ("token_classifier",),
        "ModernBertForQuestionAnswering": ("span",),
    },
    encoder=encoder_map,
    heads={
        "mlm": _mlm,
        "classifier": lambda cfg, p: _prediction("classifier", cfg),
        "token_classifier": lambda cfg, p: _prediction("token_classifier", cfg),
        "span": lambda cfg, p: _prediction("span", cfg),
    },
    # An untied decoder.weight is a name-map entry of its own (hf.py skips it here).
    tied={"mlm": {"decoder.weight": "{p}embeddings.tok_embeddings.weight"}},
    to_config=to_hf_config,
    from_config=from_hf_config,
    # transformers' ModernBertConfig defaults cls/sep to the released 50281/50282.
    token_ids=("bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"),
    switches={
        "norm_position": ("pre",),
        "final_norm": (True,),
        "embedding_norm": (True,),
        "norm": ("layernorm",),
        "mlp": ("glu",),
        **{
            k: None
            for k in (
                "norm_bias",
                "attention_bias",
                "mlp_bias",
                "head_bias",
                "decoder_bias",
                "tie_decoder",
                "rope_theta",
                "local_rope_theta",
                "local_window",
                "global_every",
                "classifier_pooling",
            )
        },
    },
)


def size(layers: int, hidden: int, heads: int, glu: int) -> dict[str, Any]:
    return dict(num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=glu)


FAMILY = Family(
    name="modernbert",
    defaults=dict(
        family="modernbert",
        vocab_size=50368,
        max_position_embeddings=8192,
        pad_token_id=50283,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        classifier_dropout_rate=0.0,
        norm_bias=False,
        attention_bias=False,
        mlp_bias=False,
        head_bias=False,
        rope_theta=GLOBAL_THETA,
        local_rope_theta=LOCAL_THETA,
        local_window=128,
        global_every=3,
        **FIXED,
    ),
    presets={
        # arXiv 2412.13663 table 1; transformers' ModernBertConfig defaults are the base.
        "modernbert_base": size(22, 768, 12, 1152),
        "modernbert_large": size(28, 1024, 16, 2624),
        # Local variants: a CPU runs them; the window (16) is shorter than their
        # sequences, so local and global layers both work.
        "modernbert_tiny": dict(size(4, 128, 2, 192), local_window=16),
        "modernbert_mini": dict(size(6, 256, 4, 384), local_window=32),
    },
    heads=("mlm", "classifier", "token_classifier", "span"),
    pretrain_heads=("mlm",),
    task="mlm",
    instances="full_sentences",
    tokenizer_kind="bpe-modernbert",  # byte-level BPE, [CLS] [SEP] [PAD] [MASK]
    tokenizer_class="PreTrainedTokenizerFast",
    classifier="prediction",
    hf=HF,
    validate=validate,
)
