"""HF transformers PyTorch layout <-> bertjax params, for any set of heads.

Reads and writes PyTorch state dicts directly (safetensors, or `pytorch_model.bin`
loaded with torch's `weights_only=True`); transformers' Flax classes are never
used. The name maps come from the family records (bertjax/models/<family>.py): an
encoder map, and one map per head (bertjax/convert/names.py says what an entry is),
so a bare encoder, an MLM model, a pretraining model or a fine-tuned classifier all
import and export through the same code.

A bertjax model becomes one transformers model (a *part*), except an ELECTRA model
with a generator head: its discriminator (encoder and other heads) and its generator
(the generator head's tower, on the shared embeddings) are two transformers models,
parts "discriminator" and "generator". A part whose only head is (at most) the
pooler is the bare base model (BertModel), whose tensors carry no "bert." prefix.

Transposes and reshapes are exact, so import -> export is bit-exact. Maps are written
against the loop layout (`layer_{i}`); scan-layout params are unstacked first and
restacked after. The state-dict files themselves are bertjax/convert/statedict.py's;
the parts and their name maps are hf_parts.py's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from bertjax.convert.hf_parts import Part, _is_buffer, _tied, architecture, name_map, parts
from bertjax.convert.names import ConversionError, Entry
from bertjax.models.config import SWITCHES, ConfigError, ModelConfig
from bertjax.models.family import LABELLED_HEADS, Family
from bertjax.models.registry import FAMILIES, family
from bertjax.models.scan_layout import stack_layers, unstack_layers

Params = dict[str, Any]

__all__ = [
    "ConversionError",
    "Entry",
    "Part",
    "abstract_shapes",
    "architecture",
    "config_from_hf",
    "from_state_dicts",
    "hf_configs",
    "name_map",
    "parts",
    "to_state_dicts",
]


# --- tensors ------------------------------------------------------------------------


def hf_shape(entry: Entry, ours: tuple[int, ...]) -> tuple[int, ...]:
    """The shape the HF tensor of `entry` must have (all its row blocks), given our
    parameter's shape."""
    if entry.kind == "linear1":  # kernel [in, ...out] <- weight [out, in]
        shape = (int(np.prod(ours[1:])), ours[0])
    elif entry.kind == "linear2":  # kernel [heads, d, out] <- weight [out, heads * d]
        shape = (ours[-1], int(np.prod(ours[:-1])))
    else:  # attention biases are [heads, d] here and [heads * d] in HF; the rest match
        shape = (int(np.prod(ours)),) if entry.path[-1] == "bias" else ours
    return (shape[0] * entry.split[1], *shape[1:])


def _to_ours(entry: Entry, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # The shape must match exactly: a same-sized tensor of another shape (a transposed
    # table, say) would otherwise be reshaped into garbage without a word.
    if tuple(arr.shape) != hf_shape(entry, shape):
        raise ConversionError(
            f"tensor {entry.hf_key} has shape {tuple(arr.shape)}, but the "
            f"config needs {hf_shape(entry, shape)} ({'/'.join(entry.path)})"
        )
    i, n = entry.split
    arr = arr[i * (arr.shape[0] // n) : (i + 1) * (arr.shape[0] // n)]
    out = arr if entry.kind == "copy" else arr.T
    return np.ascontiguousarray(out.reshape(shape))


def _to_hf(entry: Entry, arr: np.ndarray) -> np.ndarray:
    if entry.kind == "copy":  # one row block of a split tensor
        shape = hf_shape(entry, arr.shape)
        return np.ascontiguousarray(arr.reshape(shape[0] // entry.split[1], *shape[1:]))
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
    shapes = jax.eval_shape(
        lambda: nn.unbox(build(scan_cfg).init(jax.random.key(0), ids))["params"]
    )
    views = jax.tree_util.tree_map(
        lambda s: np.broadcast_to(np.zeros((), np.int8), s.shape), shapes
    )
    return {path: tuple(v.shape) for path, v in _iter_paths(unstack_layers(views))}


def from_state_dicts(
    cfg: ModelConfig,
    state_dicts: Mapping[str, Mapping[str, np.ndarray]],
    source: str = "",
    bare: Mapping[str, bool] | None = None,
) -> Params:
    """HF state dict(s) -> bertjax params (numpy), keyed by part name.

    Every tensor of the name map must be present with a fitting shape; tied copies
    must equal their source; anything else is an error naming the tensor. `bare`: see
    `parts` (default: `detect_bare`).
    """
    shapes = abstract_shapes(cfg)
    params: Params = {}
    where = f" in {source}" if source else ""
    if bare is None:
        bare = detect_bare(cfg, state_dicts)
    for part in parts(cfg, bare):
        if part.name not in state_dicts:
            names = ", ".join(repr(p.name) for p in parts(cfg))
            raise ConversionError(
                f"no state dict for {part.name or 'the model'}{where}; "
                f"{cfg.family} with heads {', '.join(cfg.heads)} needs {names}"
            )
        sd = {_legacy_name(k): v for k, v in state_dicts[part.name].items()}
        entries = name_map(part)
        known = {e.hf_key for e in entries}
        for e in entries:
            if e.hf_key not in sd:
                raise ConversionError(f"tensor {e.hf_key} is missing{where}")
            value = _to_ours(e, np.asarray(sd[e.hf_key]), shapes[e.path])
            if part.root and e.path[0] == "embeddings":
                shared = _get(params, e.path)
                if not np.array_equal(shared, value):
                    raise ConversionError(
                        f"tensor {e.hf_key}{where}: the generator's embeddings differ from the "
                        "discriminator's, but ELECTRA shares them"
                    )
                continue
            _set(params, e.path, value)
        for key, source_key in _tied(part).items():
            if key in sd:
                known.add(key)
                if not np.array_equal(np.asarray(sd[key]), np.asarray(sd[source_key])):
                    raise ConversionError(
                        f"tensor {key}{where} should be tied to {source_key} "
                        "but holds different values"
                    )
        extra = sorted(k for k in sd if k not in known and not _is_buffer(k))
        if extra:
            raise ConversionError(
                f"unexpected tensor {extra[0]}{where} ({len(extra)} unexpected in all)"
            )
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
    """bertjax params -> HF state dict(s) of numpy arrays, keyed by part name."""
    params = unstack_layers(params) if cfg.scan_layers else params
    out: dict[str, dict[str, np.ndarray]] = {}
    for part in parts(cfg):
        blocks: dict[str, dict[int, np.ndarray]] = {}  # row blocks of fused tensors
        for e in name_map(part):
            blocks.setdefault(e.hf_key, {})[e.split[0]] = _to_hf(
                e, np.asarray(_get(params, e.path))
            )
        out[part.name] = {
            k: v[0] if len(v) == 1 else np.concatenate([v[i] for i in sorted(v)])
            for k, v in blocks.items()
        }
    return out


# --- configs ------------------------------------------------------------------------


def hf_configs(cfg: ModelConfig, special_ids: Mapping[str, int] | None = None) -> dict[str, dict]:
    """config.json content(s) for transformers, keyed by part name."""
    out = {}
    for part in parts(cfg):
        fam = family(part.cfg.family)
        check_switches(part.cfg, architecture(part))
        d = {**fam.hf.to_config(part.cfg), "architectures": [architecture(part)]}
        if any(h in LABELLED_HEADS for h in part.heads):
            names = part.cfg.label_names or tuple(f"LABEL_{i}" for i in range(cfg.num_labels))
            d["id2label"] = {str(i): n for i, n in enumerate(names)}
            d["label2id"] = {n: i for i, n in enumerate(names)}
        d.update({k: v for k, v in (special_ids or {}).items() if k in fam.hf.token_ids})
        out[part.name] = d
    return out


def check_switches(cfg: ModelConfig, arch: str) -> None:
    """Refuses, in one line naming the key, an architecture switch (config.SWITCHES) whose
    value the family's transformers classes do not have (HFNames.switches)."""
    allowed = family(cfg.family).hf.switches
    for key in SWITCHES:
        values = allowed.get(key, (ModelConfig.__dataclass_fields__[key].default,))
        if values is not None and getattr(cfg, key) not in values:
            raise ConversionError(
                f"model.{key}={getattr(cfg, key)!r}: transformers' {arch} has no such "
                f"layer (it takes {key} {' or '.join(map(repr, values))}); export a "
                f"family whose classes do, or train with the default"
            )


def _family_of(content: Mapping[str, Any], source: str) -> Family:
    mt = content.get("model_type")
    for fam in FAMILIES.values():
        if fam.hf.model_type == mt:
            return fam
    raise ConversionError(
        f"{source}: model_type {mt!r} is not one of "
        f"{', '.join(f.hf.model_type for f in FAMILIES.values())}"
    )


def _heads(
    fam: Family,
    content: Mapping[str, Any],
    sd: Mapping[str, Any] | None,
    source: str,
    probe: ModelConfig,
) -> tuple[str, ...]:
    """The heads of a transformers checkpoint: its architecture's, plus any other head
    whose tensors are all there (a BertForMaskedLM checkpoint that still holds the NSP
    head and pooler, as released ones do)."""
    archs = content.get("architectures") or []
    arch = archs[0] if archs else None
    if arch is not None and arch not in fam.hf.architectures:
        raise ConversionError(
            f"{source}: architecture {arch!r} is not supported; {fam.name} "
            f"reads {', '.join(fam.hf.architectures)}"
        )
    heads = list(fam.hf.architectures[arch]) if arch else []
    if sd is None:
        return tuple(heads)
    keys = {_legacy_name(k) for k in sd}
    claimed: set[str] = set()
    for head in heads:
        claimed |= {e.hf_key for e in fam.hf.heads[head](probe, fam.hf.prefix + ".")}
    pooled = any(
        e.hf_key in keys
        for p in ("", fam.hf.prefix + ".")
        for e in fam.hf.heads.get("pooler", lambda c, q: [])(probe, p)
    )
    for head, head_map in fam.hf.heads.items():
        if head in heads:
            continue
        if head == "classifier" and fam.classifier == "pooled" and not pooled:
            continue  # a token classifier's tensors have the same names
        for p in ("", fam.hf.prefix + "."):
            wanted = {e.hf_key for e in head_map(probe, p)}
            if wanted and wanted <= keys and not wanted & claimed:
                heads.append(head)
                claimed |= wanted
                break
    return tuple(h for h in fam.heads if h in heads)  # the family's order


def _labels(content: Mapping[str, Any], heads: Sequence[str]) -> dict[str, Any]:
    if not any(h in LABELLED_HEADS for h in heads):
        return {}
    id2label = content.get("id2label") or {"0": "LABEL_0", "1": "LABEL_1"}
    names = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label))]
    generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))
    return {"num_labels": len(names), "label_names": () if generic else tuple(names)}


def config_from_hf(
    configs: Mapping[str, Mapping[str, Any]],
    state_dicts: Mapping[str, Mapping[str, Any]] | None = None,
    source: str = "config.json",
    heads: Sequence[str] | None = None,
    **overrides: Any,
) -> ModelConfig:
    """transformers config.json content(s) (keyed by part name) -> ModelConfig.

    The heads come from `heads`, else from the architecture and the state dicts' tensors
    (`_heads`), else the architecture alone. ELECTRA's two parts ("discriminator",
    "generator") become one model with a generator head. Invalid values are a
    `ConversionError` naming `source` and the key.
    """
    if not configs:
        raise ConversionError(f"{source}: no config given")
    pair = set(configs) == {"discriminator", "generator"}
    main = configs["discriminator"] if pair else next(iter(configs.values()))
    fam = _family_of(main, source)
    fields = dict(fam.hf.from_config(main, source))
    fields["family"] = fam.name
    sd = (state_dicts or {}).get("discriminator" if pair else next(iter(configs)))
    try:
        probe = ModelConfig.from_dict({**fields, "heads": ()})
    except ConfigError as e:
        raise ConversionError(f"{source}: {e}") from None
    found = tuple(heads) if heads is not None else _heads(fam, main, sd, source, probe)
    if pair:
        if "generator" not in fam.heads:
            raise ConversionError(
                f"{source}: discriminator/ and generator/ hold {fam.name}, which has no generator"
            )
        fields.update(_generator_fields(configs["generator"], fields, fam, source))
        if heads is None:
            found = (*found, "generator")
    fields.update(heads=found, **_labels(main, found))
    fields.update(overrides)
    try:
        return ModelConfig.from_dict(fields)
    except ConfigError as e:
        raise ConversionError(f"{source}: {e}") from None


def _generator_fields(
    content: Mapping[str, Any], disc: Mapping[str, Any], fam: Family, source: str
) -> dict[str, Any]:
    """The ELECTRA generator's sizes from its config.json; the embedding settings it
    shares with the discriminator must agree."""
    if content.get("model_type") != fam.hf.model_type:
        raise ConversionError(
            f"{source}: generator model_type {content.get('model_type')!r} is not 'electra'"
        )
    gen = fam.hf.from_config(content, source)
    for key in (
        "embedding_size",
        "vocab_size",
        "max_position_embeddings",
        "type_vocab_size",
        "layer_norm_eps",
        "pad_token_id",
    ):
        if gen.get(key) != disc.get(key):
            raise ConversionError(
                f"{source}: generator {key}={gen.get(key)!r} differs from the discriminator's "
                f"{disc.get(key)!r}; ELECTRA shares embeddings"
            )
    if gen["hidden_act"] != disc["hidden_act"]:
        raise ConversionError(
            f"{source}: generator hidden_act={content.get('hidden_act')!r} "
            "differs from the discriminator's; bertjax shares it"
        )
    return dict(
        generator_hidden_size=gen["hidden_size"],
        generator_num_heads=gen["num_heads"],
        generator_intermediate_size=gen["intermediate_size"],
        generator_num_layers=gen["num_layers"],
    )


def detect_bare(cfg: ModelConfig, state_dicts: Mapping[str, Mapping[str, Any]]) -> dict[str, bool]:
    """Per part, whether its tensors lack the base-model prefix (a BertModel saves
    `embeddings.word_embeddings.weight`, a BertForMaskedLM `bert.embeddings...`)."""
    out = {}
    for part in parts(cfg):
        fam = family(part.cfg.family)
        prefix = fam.hf.prefix + "."
        sd = state_dicts.get(part.name, {})
        word = fam.hf.encoder(part.cfg, "")[0].hf_key  # the word embeddings come first
        out[part.name] = word in sd and f"{prefix}{word}" not in sd
    return out
