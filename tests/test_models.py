"""Unit tests of the shared layers and model switches (scan, remat, heads, dtypes, configs)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import modellib
import numpy as np
import pytest

from bertjax import flops
from bertjax.models import ConfigError, ModelConfig, build
from bertjax.models.layers import sinusoidal_table
from bertjax.models.registry import PRESETS
from bertjax.models.scan_layout import stack_layers, unstack_layers

TINY = dict(
    vocab_size=97,
    hidden_size=32,
    num_layers=4,
    num_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
)
# name -> (family, its fields here beyond modellib's): ALBERT as two groups of two layers,
# and as one group shared by all four layers (BERT's erf GELU).
FAMILIES = {
    "bert": ("bert", {}),
    "roberta": ("roberta", {}),
    "albert": ("albert", dict(num_hidden_groups=2, inner_group_num=2)),
    "albert_shared": ("albert", dict(hidden_act="gelu")),
    "distilbert": ("distilbert", {}),
    "electra": ("electra", {}),
}


def tiny(name: str, **kw) -> ModelConfig:
    family, fields = FAMILIES[name]
    return modellib.tiny(family, TINY, **fields, **kw)


def inputs(cfg: ModelConfig):
    ids = jax.random.randint(jax.random.key(1), (2, 12), 2, cfg.vocab_size)
    mask = jnp.ones((2, 12), jnp.int32).at[1, 8:].set(0)
    ids = jnp.where(mask == 1, ids, cfg.pad_token_id)
    return ids, mask


def init(cfg: ModelConfig, abstract: bool = False):
    ids, mask = inputs(cfg)
    fn = lambda: nn.unbox(build(cfg).init(jax.random.key(0), ids, attention_mask=mask))["params"]
    return jax.eval_shape(fn) if abstract else jax.jit(fn)()


def apply(cfg: ModelConfig, params, *args, **kw):
    """Jitted forward: eager Flax dispatch of scan/remat is far slower than compiling."""
    model = build(cfg)
    fn = jax.jit(
        lambda p, *a, **k: model.apply({"params": p}, *a, **k), static_argnames=("deterministic",)
    )
    return fn(params, *args, **kw)


def states(out) -> list:
    return out["hidden_states"]


@pytest.mark.integration  # 40-160 s per family on 2 loaded cores
@pytest.mark.parametrize("name", list(FAMILIES))
def test_scan_and_remat_equal_the_loop(name):
    cfg = tiny(name)
    params = init(cfg)
    ids, mask = inputs(cfg)
    ref_logits, ref_out = apply(cfg, params, ids, attention_mask=mask)
    for flags in (dict(scan_layers=True), dict(remat="full"), dict(scan_layers=True, remat="dots")):
        c = cfg.replace(**flags)
        p = stack_layers(params) if c.scan_layers else params
        # The scan layout is what init produces for a scan config, and unstacks back exactly.
        assert jax.tree.structure(p) == jax.tree.structure(init(c, abstract=True))
        if c.scan_layers:
            jax.tree.map(np.testing.assert_array_equal, unstack_layers(p), params)
        logits, out = apply(c, p, ids, attention_mask=mask)
        for k in ref_logits:
            np.testing.assert_allclose(logits[k], ref_logits[k], atol=1e-5, rtol=0)
        assert len(states(out)) == len(states(ref_out)) == cfg.num_layers + 1
        for a, b in zip(states(out), states(ref_out), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.integration  # 40-160 s per family on 2 loaded cores
@pytest.mark.parametrize("name", ["bert", "albert"])
def test_scan_remat_gradients_equal_the_loop(name):
    cfg = tiny(name)
    params = init(cfg)
    ids, mask = inputs(cfg)

    def loss(c, p):
        return build(c).apply({"params": p}, ids, attention_mask=mask)[0]["mlm"].std()

    ref = jax.jit(jax.grad(lambda p: loss(cfg, p)))(params)
    c = cfg.replace(scan_layers=True, remat="full")
    got = unstack_layers(jax.jit(jax.grad(lambda p: loss(c, p)))(stack_layers(params)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4), got, ref)


@pytest.mark.parametrize("name", ["bert", "roberta", "albert", "electra"])
def test_sparse_mlm_head_equals_dense_gathered(name):
    cfg = tiny(name)
    params = init(cfg)
    ids, mask = inputs(cfg)
    positions = jnp.array([[0, 3, 5], [1, 2, 7]])
    model = build(cfg)
    head = "generator" if name == "electra" else "mlm"  # ELECTRA's MLM is its generator's
    dense = model.apply({"params": params}, ids, attention_mask=mask)[0][head]
    sparse = model.apply({"params": params}, ids, attention_mask=mask, masked_positions=positions)[
        0
    ][head]
    assert sparse.shape == (2, 3, cfg.vocab_size)
    want = np.take_along_axis(np.asarray(dense), np.asarray(positions)[:, :, None], axis=1)
    np.testing.assert_allclose(sparse, want, atol=1e-6, rtol=0)


def test_padding_does_not_leak_into_real_positions():
    cfg = tiny("bert")
    params = init(cfg)
    ids, mask = inputs(cfg)
    model = build(cfg)
    a = model.apply({"params": params}, ids, attention_mask=mask)[0]["mlm"]
    # Change only the padded tokens of row 1: its real positions must not move.
    ids2 = ids.at[1, 8:].set(5)
    b = model.apply({"params": params}, ids2, attention_mask=mask)[0]["mlm"]
    np.testing.assert_allclose(a[1, :8], b[1, :8], atol=1e-6, rtol=0)


def test_roberta_positions_count_from_pad_plus_one():
    from bertjax.models.layers import position_ids

    cfg = tiny("roberta")
    ids = jnp.array([[0, 7, 8, 2, 1, 1]])
    # fairseq/HF: real tokens get pad+1, pad+2, ...; padding stays at pad (1).
    np.testing.assert_array_equal(position_ids(cfg, ids), [[2, 3, 4, 5, 1, 1]])


def test_dropout_is_active_only_when_not_deterministic():
    cfg = tiny("bert")
    params = init(cfg)
    ids, mask = inputs(cfg)
    model = build(cfg)
    det = model.apply({"params": params}, ids, attention_mask=mask)[0]["mlm"]
    det2 = model.apply({"params": params}, ids, attention_mask=mask)[0]["mlm"]
    np.testing.assert_array_equal(det, det2)
    drop = [
        model.apply(
            {"params": params},
            ids,
            attention_mask=mask,
            deterministic=False,
            rngs={"dropout": jax.random.key(s)},
        )[0]["mlm"]
        for s in (0, 1)
    ]
    assert not np.allclose(drop[0], det) and not np.allclose(drop[0], drop[1])


def test_bfloat16_compute_keeps_float32_params_and_float32_logits():
    cfg = tiny("bert", dtype="bfloat16")
    params = init(cfg)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    ids, mask = inputs(cfg)
    logits, out = build(cfg).apply({"params": params}, ids, attention_mask=mask)
    assert out["sequence"].dtype == jnp.bfloat16
    assert logits["mlm"].dtype == jnp.float32 and bool(jnp.isfinite(logits["mlm"]).all())
    ref = build(cfg.replace(dtype="float32")).apply({"params": params}, ids, attention_mask=mask)[
        0
    ]["mlm"]
    assert float(jnp.max(jnp.abs(logits["mlm"] - ref))) < 0.1  # bf16 rounding, not a bug


def test_sinusoidal_table_matches_transformers():
    torch = pytest.importorskip("torch")
    from transformers import DistilBertConfig, DistilBertModel

    hf = DistilBertModel(
        DistilBertConfig(
            vocab_size=50,
            dim=32,
            n_layers=1,
            n_heads=4,
            hidden_dim=40,
            max_position_embeddings=40,
            sinusoidal_pos_embds=True,
        )
    )
    want = hf.embeddings.position_embeddings.weight.detach().to(torch.float32).numpy()
    np.testing.assert_allclose(sinusoidal_table(40, 32), want, atol=1e-6, rtol=0)
    params = init(tiny("distilbert"))
    np.testing.assert_allclose(
        params["embeddings"]["position"]["embedding"], sinusoidal_table(40, 32), atol=0, rtol=0
    )


@pytest.mark.parametrize(
    "bad, key",
    [
        (dict(nonsense=1), "nonsense"),
        (dict(num_heads=5), "num_heads"),
        (dict(hidden_act="tanh"), "hidden_act"),
        (dict(family="gpt"), "family"),
        (dict(positions_from_padding=True), "positions_from_padding"),
        (dict(num_hidden_groups=2), "num_hidden_groups"),
        (dict(dropout_rate=1.5), "dropout_rate"),
    ],
)
def test_bad_model_config_names_the_key(bad, key):
    with pytest.raises(ConfigError, match=key):
        ModelConfig.from_dict(modellib.fields("bert", TINY, **bad))


def test_every_preset_validates_and_the_grid_has_24_cells():
    grid = [p for p in PRESETS if p.startswith("bert_L")]
    assert len(grid) == 24
    for name in PRESETS:
        cfg = ModelConfig.from_preset(name)
        assert cfg.hidden_size % cfg.num_heads == 0
    for name, (layers, hidden) in {
        "bert_tiny": (2, 128),
        "bert_mini": (4, 256),
        "bert_small": (4, 512),
        "bert_medium": (8, 512),
        "bert_base": (12, 768),
    }.items():
        cfg = ModelConfig.from_preset(name)
        assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size) == (
            layers,
            hidden,
            hidden // 64,
            4 * hidden,
        )
    with pytest.raises(ConfigError, match="bert_huge"):
        ModelConfig.from_preset("bert_huge")


def test_flops_reduce_to_the_design_formula_for_bert():
    cfg = ModelConfig.from_preset("bert_base")
    L, d, V, S = 12, 768, 30522, 128
    for f in (1.0, 20 / 128):
        want = 72 * L * d**2 + 12 * L * S * d + 6 * (d**2 + d * V) * f
        assert flops.train_flops_per_token(cfg, S, f).total == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("scan", [False, True])
def test_every_parameter_has_logical_axes_from_the_vocabulary(name, scan):
    from bertjax import sharding

    cfg = tiny(name, scan_layers=scan)
    ids, mask = inputs(cfg)
    boxed = jax.eval_shape(lambda: build(cfg).init(jax.random.key(0), ids, attention_mask=mask))[
        "params"
    ]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    vocabulary = {rule for rule, _ in sharding.DEFAULT_RULES} | {None}
    for leaf in leaves:
        assert isinstance(leaf, nn.Partitioned), leaf
        assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= vocabulary, leaf.names
    if scan and not cfg.shares_layers:
        assert any(sharding.LAYERS in leaf.names for leaf in leaves)


def test_electra_generator_fraction_sizes_the_generator():
    import ml_collections

    from bertjax.tasks.electra import Electra

    def config(preset, fraction):
        return ml_collections.ConfigDict(
            {
                "model": ModelConfig.from_preset(preset).to_dict(),
                "electra": {"generator_fraction": fraction},
            }
        )

    class presets_:  # what the ELECTRA task makes of config.model
        @staticmethod
        def from_config(c):
            return Electra(c).model_config(ModelConfig.from_dict(c.model.to_dict()))

    # 0 keeps the released sizes: 1/4 for small and large, 1/3 for base.
    for preset, width in (("electra_small", 64), ("electra_base", 256), ("electra_large", 256)):
        assert presets_.from_config(config(preset, 0.0)).generator_hidden_size == width
    g = presets_.from_config(config("electra_base", 0.25)).generator_config()
    assert (g.hidden_size, g.num_heads, g.intermediate_size) == (192, 3, 768)
    g = presets_.from_config(config("electra_large", 0.25)).generator_config()
    assert (g.hidden_size, g.num_heads, g.intermediate_size) == (256, 4, 1024)
    # 1024 / 3 = 341 has no divisor up to 5: one head.
    g = presets_.from_config(config("electra_large", 1 / 3)).generator_config()
    assert (g.hidden_size, g.num_heads) == (341, 1)
    with pytest.raises(ConfigError, match="electra.generator_fraction=1.5"):
        presets_.from_config(config("electra_base", 1.5))


@pytest.mark.integration  # 40-160 s per family on 2 loaded cores
@pytest.mark.parametrize("name", list(FAMILIES))
def test_xla_and_auto_attention_equal_the_einsum_path(name):
    """jax.nn.dot_product_attention (model.attention=xla, and auto, which picks it here
    without attention dropout) against the einsum reference: logits, hidden states at
    real positions and gradients, on a batch with a padded row."""
    from bertjax.models.attention import attention_kernel

    ref_cfg = tiny(name, attention="einsum", attention_dropout_rate=0.0)
    params = init(ref_cfg)
    ids, mask = inputs(ref_cfg)
    real = np.asarray(mask, bool)

    def loss(c, p):
        logits = build(c).apply({"params": p}, ids, attention_mask=mask)[0]
        return sum(
            jnp.sum(v * jnp.cos(jnp.arange(v.size).reshape(v.shape)))
            for v in jax.tree.leaves(logits)
        )

    ref_logits, ref_out = apply(ref_cfg, params, ids, attention_mask=mask)
    ref_grad = jax.jit(jax.grad(lambda p: loss(ref_cfg, p)))(params)
    for kernel in ("xla", "auto"):
        c = ref_cfg.replace(attention=kernel)
        assert attention_kernel(c, deterministic=False) == "xla"
        logits, out = apply(c, params, ids, attention_mask=mask)
        for k in ref_logits:
            got, want = np.asarray(logits[k]), np.asarray(ref_logits[k])
            if got.ndim == 3:  # per-token heads: padded positions are never scored
                got, want = got[real], want[real]
            np.testing.assert_allclose(got, want, atol=2e-5, rtol=0, err_msg=k)
        for a, b in zip(states(out), states(ref_out), strict=True):
            np.testing.assert_allclose(np.asarray(a)[real], np.asarray(b)[real], atol=2e-5, rtol=0)
        grad = jax.jit(jax.grad(lambda p, c=c: loss(c, p)))(params)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4), grad, ref_grad
        )


def test_attention_kernel_choice_and_dropout_rule():
    from bertjax.models.attention import attention_kernel

    cfg = tiny("bert")  # attention_dropout_rate 0.1, attention auto
    assert attention_kernel(cfg, deterministic=False) == "einsum"  # only it has dropout
    assert attention_kernel(cfg, deterministic=True, platform="cpu") == "xla"
    assert attention_kernel(cfg, deterministic=True, platform="tpu") == "tpu"
    assert attention_kernel(cfg, deterministic=True, platform="gpu") == "xla"  # float32
    bf16 = cfg.replace(dtype="bfloat16")
    assert attention_kernel(bf16, deterministic=True, platform="gpu") == "cudnn"
    with pytest.raises(
        ConfigError,
        match=r"model.attention='cudnn': has no attention "
        r"dropout: set model.attention_dropout_rate=0 "
        r"\(now 0.1\)",
    ):
        cfg.replace(attention="cudnn")
    with pytest.raises(ConfigError, match="model.attention='flash': expected one of"):
        cfg.replace(attention="flash")
