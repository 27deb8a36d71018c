"""HF transformers PyTorch layout <-> bertjax params, one name map per family.

Reads and writes PyTorch state dicts directly (safetensors, or `pytorch_model.bin`
loaded with torch's `weights_only=True`); transformers' Flax classes are never
used. A name map is a list of `Entry(hf_key, our_path, kind)`:

  kind "copy":  same values, reshaped to the target (embeddings, LayerNorm, biases;
                attention biases are [heads * d] in HF and [heads, d] here)
  kind "linear1": torch Linear weight [out, in] <-> kernel [in, ...out]
                  (Dense, and q/k/v whose kernel is [embed, heads, d])
  kind "linear2": torch Linear weight [out, in] <-> kernel [heads, d, out]
                  (the attention output projection)

Transposes and reshapes are exact, so import -> export is bit-exact.
Maps are written against the loop layout (`layer_{i}`); scan-layout params are
unstacked first and restacked after.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from bertjax.models.config import ConfigError, ModelConfig
from bertjax.models.layers import stack_layers, unstack_layers

Params = dict[str, Any]


class ConversionError(ValueError):
    """A checkpoint does not fit the config, or a file cannot be read."""


@dataclasses.dataclass(frozen=True)
class Entry:
    hf_key: str
    path: tuple[str, ...]
    kind: str = "copy"


# --- name maps ----------------------------------------------------------------------

def _linear(hf: str, ours: tuple[str, ...], kind: str = "linear1") -> list[Entry]:
    return [Entry(f"{hf}.weight", (*ours, "kernel"), kind), Entry(f"{hf}.bias", (*ours, "bias"))]


def _norm(hf: str, ours: tuple[str, ...]) -> list[Entry]:
    return [Entry(f"{hf}.weight", (*ours, "scale")), Entry(f"{hf}.bias", (*ours, "bias"))]


# Per layer style: (q, k, v, attention out, attention LayerNorm, FFN in, FFN out, final LN).
_LAYER_NAMES = {
    "bert": ("attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
             "output.dense", "output.LayerNorm"),
    "albert": ("attention.query", "attention.key", "attention.value", "attention.dense",
               "attention.LayerNorm", "ffn", "ffn_output", "full_layer_layer_norm"),
    "distilbert": ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
                   "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm"),
}


def _layer(hf: str, ours: tuple[str, ...], style: str) -> list[Entry]:
    q, k, v, out, attn_ln, ffn_in, ffn_out, out_ln = _LAYER_NAMES[style]
    return [
        *_linear(f"{hf}.{q}", (*ours, "attention", "query")),
        *_linear(f"{hf}.{k}", (*ours, "attention", "key")),
        *_linear(f"{hf}.{v}", (*ours, "attention", "value")),
        *_linear(f"{hf}.{out}", (*ours, "attention", "out"), "linear2"),
        *_norm(f"{hf}.{attn_ln}", (*ours, "attention_norm")),
        *_linear(f"{hf}.{ffn_in}", (*ours, "intermediate")),
        *_linear(f"{hf}.{ffn_out}", (*ours, "output")),
        *_norm(f"{hf}.{out_ln}", (*ours, "output_norm")),
    ]


def _embeddings(hf: str, cfg: ModelConfig) -> list[Entry]:
    entries = [Entry(f"{hf}.word_embeddings.weight", ("embeddings", "word", "embedding")),
               Entry(f"{hf}.position_embeddings.weight", ("embeddings", "position", "embedding"))]
    if cfg.type_vocab_size:
        entries.append(Entry(f"{hf}.token_type_embeddings.weight",
                             ("embeddings", "token_type", "embedding")))
    return entries + _norm(f"{hf}.LayerNorm", ("embeddings", "layer_norm"))


def _encoder(hf_layer: str, tower: str, cfg: ModelConfig, style: str) -> list[Entry]:
    """hf_layer is a format string with {i} (BERT style) or {g} and {j} (ALBERT)."""
    entries = []
    if style == "albert":
        for g in range(cfg.num_groups):
            for j in range(cfg.inner_group_num):
                ours = (tower, f"group_{g}" if cfg.shares_layers else f"layer_{g}")
                ours = (*ours, f"inner_{j}") if cfg.inner_group_num > 1 else ours
                entries += _layer(hf_layer.format(g=g, j=j), ours, style)
    else:
        for i in range(cfg.num_layers):
            entries += _layer(hf_layer.format(i=i), (tower, f"layer_{i}"), style)
    return entries


def _mlm(hf_dense: str, hf_norm: str, hf_bias: str, head: str) -> list[Entry]:
    return [*_linear(hf_dense, (head, "transform")), *_norm(hf_norm, (head, "layer_norm")),
            Entry(hf_bias, (head, "bias"))]


def name_map(cfg: ModelConfig, part: str = "") -> list[Entry]:
    """The full list of tensors of `cfg`'s HF model. ELECTRA: part is "discriminator" or
    "generator" (two HF models sharing our one embedding module)."""
    f = cfg.family
    if f == "bert":
        return [*_embeddings("bert.embeddings", cfg),
                *_encoder("bert.encoder.layer.{i}", "encoder", cfg, "bert"),
                *_linear("bert.pooler.dense", ("pooler", "dense")),
                *_mlm("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                      "cls.predictions.bias", "mlm"),
                *_linear("cls.seq_relationship", ("nsp", "dense"))]
    if f == "roberta":
        pooler = _linear("roberta.pooler.dense", ("pooler", "dense")) if cfg.use_pooler else []
        return [*_embeddings("roberta.embeddings", cfg),
                *_encoder("roberta.encoder.layer.{i}", "encoder", cfg, "bert"), *pooler,
                *_mlm("lm_head.dense", "lm_head.layer_norm", "lm_head.bias", "mlm")]
    if f == "albert":
        return [*_embeddings("albert.embeddings", cfg),
                *_linear("albert.encoder.embedding_hidden_mapping_in",
                         ("encoder", "embeddings_project")),
                *_encoder("albert.encoder.albert_layer_groups.{g}.albert_layers.{j}", "encoder",
                          cfg, "albert"),
                *_linear("albert.pooler", ("pooler", "dense")),
                *_mlm("predictions.dense", "predictions.LayerNorm", "predictions.bias", "mlm"),
                *_linear("sop_classifier.classifier", ("sop", "dense"))]
    if f == "distilbert":
        return [*_embeddings("distilbert.embeddings", cfg),
                *_encoder("distilbert.transformer.layer.{i}", "encoder", cfg, "distilbert"),
                *_mlm("vocab_transform", "vocab_layer_norm", "vocab_projector.bias", "mlm")]
    if f == "electra":
        tcfg = cfg if part == "discriminator" else cfg.generator_config()
        tower = [*_embeddings("electra.embeddings", cfg)]
        if tcfg.projects_embeddings:
            tower += _linear("electra.embeddings_project", (part, "embeddings_project"))
        tower += _encoder("electra.encoder.layer.{i}", part, tcfg, "bert")
        if part == "discriminator":
            return [*tower,
                    *_linear("discriminator_predictions.dense", ("discriminator_head", "dense")),
                    *_linear("discriminator_predictions.dense_prediction",
                             ("discriminator_head", "prediction"))]
        if part == "generator":
            return [*tower, *_mlm("generator_predictions.dense", "generator_predictions.LayerNorm",
                                  "generator_lm_head.bias", "generator_head")]
        raise ValueError(f"ELECTRA part must be discriminator or generator, not {part!r}")
    raise ValueError(f"unknown family {f!r}")


def parts(cfg: ModelConfig) -> tuple[str, ...]:
    """The HF models one bertjax model becomes: ("",) or ELECTRA's two."""
    return ("discriminator", "generator") if cfg.family == "electra" else ("",)


# Keys that HF may store but that carry no information of their own: tied output
# weights (must equal their source) and buffers.
def _tied(cfg: ModelConfig, part: str) -> dict[str, str]:
    f = cfg.family
    emb = f"{f}.embeddings.word_embeddings.weight"  # every family's base prefix is its name
    return {
        "bert": {"cls.predictions.decoder.weight": emb,
                 "cls.predictions.decoder.bias": "cls.predictions.bias"},
        "roberta": {"lm_head.decoder.weight": emb, "lm_head.decoder.bias": "lm_head.bias"},
        "albert": {"predictions.decoder.weight": emb,
                   "predictions.decoder.bias": "predictions.bias"},
        "distilbert": {"vocab_projector.weight": emb},
        "electra": {"generator_lm_head.weight": emb} if part == "generator" else {},
    }[f]


def _is_buffer(key: str) -> bool:
    return key.endswith((".position_ids", ".token_type_ids"))


# --- tensors ------------------------------------------------------------------------

def _hf_shape(entry: Entry, ours: tuple[int, ...]) -> tuple[int, ...]:
    """The shape the HF tensor of `entry` must have, given our parameter's shape."""
    if entry.kind == "linear1":  # kernel [in, ...out] <- weight [out, in]
        return (int(np.prod(ours[1:])), ours[0])
    if entry.kind == "linear2":  # kernel [heads, d, out] <- weight [out, heads * d]
        return (ours[-1], int(np.prod(ours[:-1])))
    # Attention biases are [heads, d] here and [heads * d] in HF; the rest match.
    return (int(np.prod(ours)),) if entry.path[-1] == "bias" else ours


def _to_ours(entry: Entry, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # The shape must match exactly: a same-sized tensor of another shape (a transposed
    # table, say) would otherwise be reshaped into garbage without a word.
    if tuple(arr.shape) != _hf_shape(entry, shape):
        raise ConversionError(f"tensor {entry.hf_key} has shape {tuple(arr.shape)}, but the "
                              f"config needs {_hf_shape(entry, shape)} ({'/'.join(entry.path)})")
    out = arr if entry.kind == "copy" else arr.T
    return np.ascontiguousarray(out.reshape(shape))


def _to_hf(entry: Entry, arr: np.ndarray) -> np.ndarray:
    if entry.kind == "copy":
        return np.ascontiguousarray(arr.reshape(_hf_shape(entry, arr.shape)))
    n_in = 1 if entry.kind == "linear1" else 2
    rows = int(np.prod(arr.shape[:n_in]))
    return np.ascontiguousarray(arr.reshape(rows, -1).T)


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _iter_paths(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple]:
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _iter_paths(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def abstract_shapes(cfg: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Shape of every parameter in the loop layout, from `eval_shape` (no allocation).

    The model is traced in the scan layout (one layer traced, not L: several times
    faster for deep presets) and its shapes unstacked with the model's own
    `unstack_layers`, applied to zero-stride views so nothing is allocated.
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from bertjax.models import build

    scan_cfg = dataclasses.replace(cfg, scan_layers=True, remat="none")
    ids = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: nn.unbox(build(scan_cfg).init(jax.random.key(0), ids))
                            ["params"])
    views = jax.tree_util.tree_map(
        lambda s: np.broadcast_to(np.zeros((), np.int8), s.shape), shapes)
    return {path: tuple(v.shape) for path, v in _iter_paths(unstack_layers(views))}


def from_state_dicts(cfg: ModelConfig, state_dicts: Mapping[str, Mapping[str, np.ndarray]],
                     source: str = "") -> Params:
    """HF state dict(s) -> bertjax params (numpy), keyed like `parts(cfg)`.

    Every tensor of the name map must be present with a fitting shape; tied copies
    must equal their source; anything else is an error naming the tensor.
    """
    shapes = abstract_shapes(cfg)
    params: Params = {}
    where = f" in {source}" if source else ""
    for part in parts(cfg):
        if part not in state_dicts:
            raise ConversionError(f"no state dict for {part or 'the model'}{where}; "
                                  f"{cfg.family} needs {', '.join(map(repr, parts(cfg)))}")
        sd = {_legacy_name(k): v for k, v in state_dicts[part].items()}
        entries = name_map(cfg, part)
        known = {e.hf_key for e in entries}
        for e in entries:
            if e.hf_key not in sd:
                raise ConversionError(f"tensor {e.hf_key} is missing{where}")
            value = _to_ours(e, np.asarray(sd[e.hf_key]), shapes[e.path])
            if part == "generator" and e.path[0] == "embeddings":
                shared = _get(params, e.path)
                if not np.array_equal(shared, value):
                    raise ConversionError(
                        f"tensor {e.hf_key}{where}: the generator's embeddings differ from the "
                        "discriminator's, but ELECTRA shares them")
                continue
            _set(params, e.path, value)
        for key, source_key in _tied(cfg, part).items():
            if key in sd:
                known.add(key)
                if not np.array_equal(np.asarray(sd[key]), np.asarray(sd[source_key])):
                    raise ConversionError(f"tensor {key}{where} should be tied to {source_key} "
                                          "but holds different values")
        extra = sorted(k for k in sd if k not in known and not _is_buffer(k))
        if extra:
            raise ConversionError(f"unexpected tensor {extra[0]}{where} "
                                  f"({len(extra)} unexpected in all)")
    missing = sorted("/".join(p) for p in shapes if _safe_get(params, p) is None)
    if missing:  # a name-map bug rather than a file problem, but say it plainly
        raise ConversionError(f"parameter {missing[0]} was not filled by the name map")
    return stack_layers(params) if cfg.scan_layers else params


def _safe_get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    try:
        return _get(tree, path)
    except (KeyError, TypeError):
        return None


def _legacy_name(key: str) -> str:
    """Old PyTorch checkpoints name LayerNorm parameters gamma/beta."""
    if key.endswith(".gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[: -len("beta")] + "bias"
    return key


def to_state_dicts(cfg: ModelConfig, params: Params) -> dict[str, dict[str, np.ndarray]]:
    """bertjax params -> HF state dict(s) of numpy arrays, keyed like `parts(cfg)`."""
    params = unstack_layers(params) if cfg.scan_layers else params
    out = {}
    for part in parts(cfg):
        out[part] = {e.hf_key: _to_hf(e, np.asarray(_get(params, e.path)))
                     for e in name_map(cfg, part)}
    return out


# --- configs ------------------------------------------------------------------------

_ACT_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new",
                "relu": "relu", "silu": "silu", "swish": "silu"}

ARCHITECTURES = {"bert": "BertForPreTraining", "roberta": "RobertaForMaskedLM",
                 "albert": "AlbertForPreTraining", "distilbert": "DistilBertForMaskedLM",
                 "discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}


def hf_configs(cfg: ModelConfig, special_ids: Mapping[str, int] | None = None) -> dict[str, dict]:
    """config.json content(s) for transformers, keyed like `parts(cfg)`."""
    special_ids = dict(special_ids or {})
    common = {"vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.max_position_embeddings,
              "initializer_range": cfg.initializer_range, "pad_token_id": cfg.pad_token_id,
              "tie_word_embeddings": True}
    if cfg.family == "distilbert":
        return {"": {**common, "model_type": "distilbert",
                     "architectures": [ARCHITECTURES["distilbert"]],
                     "dim": cfg.hidden_size, "n_layers": cfg.num_layers, "n_heads": cfg.num_heads,
                     "hidden_dim": cfg.intermediate_size, "activation": cfg.hidden_act,
                     "dropout": cfg.dropout_rate, "attention_dropout": cfg.attention_dropout_rate,
                     "sinusoidal_pos_embds": cfg.sinusoidal_positions}}

    def bert_like(c: ModelConfig, model_type: str, arch: str) -> dict:
        d = {**common, "model_type": model_type, "architectures": [arch],
             "hidden_size": c.hidden_size, "num_hidden_layers": c.num_layers,
             "num_attention_heads": c.num_heads, "intermediate_size": c.intermediate_size,
             "hidden_act": c.hidden_act, "hidden_dropout_prob": c.dropout_rate,
             "attention_probs_dropout_prob": c.attention_dropout_rate,
             "type_vocab_size": c.type_vocab_size, "layer_norm_eps": c.layer_norm_eps}
        if model_type in ("albert", "electra"):
            d["embedding_size"] = c.embed_dim
        if model_type == "albert":
            d["num_hidden_groups"] = c.num_groups
            d["inner_group_num"] = c.inner_group_num
        for name in ("bos_token_id", "eos_token_id"):
            if name in special_ids:
                d[name] = special_ids[name]
        return d

    if cfg.family == "electra":
        return {"discriminator": bert_like(cfg, "electra", ARCHITECTURES["discriminator"]),
                "generator": bert_like(cfg.generator_config(), "electra",
                                       ARCHITECTURES["generator"])}
    return {"": bert_like(cfg, cfg.family, ARCHITECTURES[cfg.family])}


def model_config_from_hf(configs: Mapping[str, Mapping[str, Any]], has_pooler: bool = True,
                         source: str = "config.json", **overrides: Any) -> ModelConfig:
    """HF config.json content(s) (keyed like `parts`) -> ModelConfig.

    `has_pooler` says whether a RoBERTa checkpoint holds `roberta.pooler.dense`
    (RobertaForMaskedLM has none, released checkpoints often do); other families
    ignore it. Invalid values are a `ConversionError` naming `source` and the key.
    """
    if not configs:
        raise ConversionError(f"{source}: no config given")
    first = next(iter(configs.values()))
    mt = first.get("model_type")

    def get(c: Mapping[str, Any], key: str, default: Any = None) -> Any:
        # transformers writes absent optional values as null: treat them as missing.
        if c.get(key) is None:
            if default is None:
                raise ConversionError(f"{source}: key {key!r} is missing")
            return default
        return c[key]

    def act(c: Mapping[str, Any], key: str) -> str:
        name = get(c, key, "gelu")
        if name not in _ACT_FROM_HF:
            raise ConversionError(f"{source}: {key}={name!r} is not supported")
        return _ACT_FROM_HF[name]

    if mt == "distilbert":
        d = dict(family="distilbert", vocab_size=get(first, "vocab_size"),
                 hidden_size=get(first, "dim"), num_layers=get(first, "n_layers"),
                 num_heads=get(first, "n_heads"), intermediate_size=get(first, "hidden_dim"),
                 hidden_act=act(first, "activation"),
                 max_position_embeddings=get(first, "max_position_embeddings"),
                 type_vocab_size=0, dropout_rate=get(first, "dropout", 0.1),
                 attention_dropout_rate=get(first, "attention_dropout", 0.1),
                 initializer_range=get(first, "initializer_range", 0.02),
                 pad_token_id=get(first, "pad_token_id", 0),
                 sinusoidal_positions=bool(get(first, "sinusoidal_pos_embds", False)),
                 use_pooler=False)
    elif mt in ("bert", "roberta", "albert", "electra"):
        if mt == "electra" and set(configs) != {"discriminator", "generator"}:
            raise ConversionError(f"{source}: ELECTRA needs the discriminator's and the "
                                  f"generator's configs, got {sorted(configs)}")
        c = configs["discriminator"] if mt == "electra" else first
        d = dict(family=mt, vocab_size=get(c, "vocab_size"), hidden_size=get(c, "hidden_size"),
                 num_layers=get(c, "num_hidden_layers"), num_heads=get(c, "num_attention_heads"),
                 intermediate_size=get(c, "intermediate_size"), hidden_act=act(c, "hidden_act"),
                 max_position_embeddings=get(c, "max_position_embeddings"),
                 type_vocab_size=get(c, "type_vocab_size", 2),
                 layer_norm_eps=get(c, "layer_norm_eps", 1e-12),
                 dropout_rate=get(c, "hidden_dropout_prob", 0.1),
                 attention_dropout_rate=get(c, "attention_probs_dropout_prob", 0.1),
                 initializer_range=get(c, "initializer_range", 0.02),
                 pad_token_id=get(c, "pad_token_id", 1 if mt == "roberta" else 0),
                 positions_from_padding=mt == "roberta",
                 use_pooler=mt in ("bert", "albert") or (mt == "roberta" and has_pooler))
        if mt in ("albert", "electra"):
            d["embedding_size"] = get(c, "embedding_size", 128)
        if mt == "albert":
            d["num_hidden_groups"] = get(c, "num_hidden_groups", 1)
            d["inner_group_num"] = get(c, "inner_group_num", 1)
        if mt == "electra":
            g = configs["generator"]
            if g.get("model_type") != "electra":
                raise ConversionError(f"{source}: generator model_type "
                                      f"{g.get('model_type')!r} is not 'electra'")
            # The towers share the embedding module, and bertjax builds the generator
            # from the discriminator's config apart from its width and depth.
            shared = {"embedding_size": 128, "vocab_size": None, "max_position_embeddings": None,
                      "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}
            for key, default in shared.items():
                if get(g, key, default) != get(c, key, default):
                    raise ConversionError(
                        f"{source}: generator {key}={get(g, key, default)!r} differs from the "
                        f"discriminator's {get(c, key, default)!r}; ELECTRA shares embeddings")
            if act(g, "hidden_act") != d["hidden_act"]:
                raise ConversionError(f"{source}: generator hidden_act={g.get('hidden_act')!r} "
                                      "differs from the discriminator's; bertjax shares it")
            d.update(generator_hidden_size=get(g, "hidden_size"),
                     generator_num_heads=get(g, "num_attention_heads"),
                     generator_intermediate_size=get(g, "intermediate_size"),
                     generator_num_layers=get(g, "num_hidden_layers"))
    else:
        raise ConversionError(f"{source}: model_type {mt!r} is not one of bert, roberta, "
                              "albert, distilbert, electra")
    d.update(overrides)
    try:
        return ModelConfig.from_dict(d)
    except ConfigError as e:
        raise ConversionError(f"{source}: {e}") from None


# --- files --------------------------------------------------------------------------

def read_state_dict(directory: str) -> dict[str, np.ndarray]:
    """model.safetensors (preferred) or pytorch_model.bin (weights_only) -> numpy arrays."""
    st = os.path.join(directory, "model.safetensors")
    if os.path.exists(st):
        from safetensors.numpy import load_file
        try:
            return load_file(st)
        except Exception as e:  # noqa: BLE001 - any parse failure is "unreadable file"
            raise ConversionError(f"{st}: cannot read safetensors ({e})") from None
    if os.path.exists(os.path.join(directory, "model.safetensors.index.json")):
        return _read_sharded(directory)
    binf = os.path.join(directory, "pytorch_model.bin")
    if os.path.exists(binf):
        try:
            import torch
        except ImportError:
            raise ConversionError(f"{binf}: reading .bin files needs torch; "
                                  "convert it to model.safetensors or install torch") from None
        try:
            # weights_only: the unpickler accepts tensors and plain containers only, so a
            # file holding any other object is refused instead of running its code.
            sd = torch.load(binf, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]  # torch's is long
            raise ConversionError(f"{binf}: refused by torch.load(weights_only=True): {why}"
                                  ) from None
        if not isinstance(sd, Mapping):
            raise ConversionError(f"{binf}: holds a {type(sd).__name__}, not a state dict")
        out = {}
        for k, v in sd.items():
            if not isinstance(k, str) or not isinstance(v, torch.Tensor):
                raise ConversionError(f"{binf}: entry {k!r} is a {type(v).__name__}, "
                                      "not a tensor")
            v = v.detach().cpu().contiguous()
            out[k] = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        return out
    raise ConversionError(f"{directory}: no model.safetensors or pytorch_model.bin")


def _read_sharded(directory: str) -> dict[str, np.ndarray]:
    import json

    from safetensors.numpy import load_file
    index = os.path.join(directory, "model.safetensors.index.json")
    try:
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConversionError(f"{index}: cannot read the weight map ({e!r})") from None
    sd: dict[str, np.ndarray] = {}
    for name in files:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            raise ConversionError(f"{path}: listed in {index} but missing")
        try:
            sd.update(load_file(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is "unreadable file"
            raise ConversionError(f"{path}: cannot read safetensors ({e})") from None
    return sd


def write_state_dict(directory: str, state_dict: Mapping[str, np.ndarray]) -> None:
    """Writes `directory`/model.safetensors atomically (temporary name, then rename)."""
    from safetensors.numpy import save_file
    path = os.path.join(directory, "model.safetensors")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, tmp,
                  metadata={"format": "pt"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
