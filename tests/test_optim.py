"""Optimizers and schedules against independent references (torch AdamW, numpy LAMB)."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import modellib
import numpy as np
import optax
import pytest
import torch

from bertjax import optim, optim_params
from bertjax.models import build
from bertjax.models.config import ConfigError

TINY = dict(
    vocab_size=40,
    hidden_size=16,
    num_layers=2,
    num_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
)


def _params(seed=0):
    """A small tree with every kind of leaf the decay mask distinguishes."""
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    return {
        "embeddings": {"word": {"embedding": f(6, 3)}},
        "dense": {"kernel": f(3, 4), "bias": f(4)},
        "zero": {"bias": np.zeros(4, np.float32)},  # ||w|| = 0: LAMB trust ratio 1
        "still": {"bias": f(2)},  # gets zero gradients: ||update|| = 0
        "layer_norm": {"scale": 1 + 0.1 * f(3), "bias": f(3)},
    }


def _grads(params, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    g = jax.tree_util.tree_map(
        lambda p: scale * rng.normal(size=p.shape).astype(np.float32), params
    )
    g["still"]["bias"] = np.zeros_like(g["still"]["bias"])
    return g


@functools.cache
def _step(tx):
    """One jitted update per transformation, shared by every run of it in a test."""

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    return step


def _run(tx, params, grads_seq):
    """Applies `grads_seq` with a jitted update; returns (params, state, updates list)."""
    state = tx.init(params)  # eager: a few zeros_like, cheaper than a compile
    all_updates = []
    for g in grads_seq:
        params, state, updates = _step(tx)(params, state, g)
        all_updates.append(updates)
    return params, state, all_updates


def _close(a, b, atol=1e-6):
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0),
        a,
        b,
    )


# --- schedules -------------------------------------------------------------------------


def test_schedule_values_hand_computed():
    base = dict(learning_rate=2.0, warmup_steps=10, total_steps=110, end_learning_rate=0.2)
    peak, end = 2.0, 0.2
    cases = {
        "linear": {
            0: 0.0,
            5: 1.0,
            10: peak,
            35: end + (peak - end) * 0.75,
            60: end + (peak - end) * 0.5,
            110: end,
            500: end,
        },
        "polynomial": {
            5: 1.0,
            10: peak,
            60: end + (peak - end) * 0.25,
            85: end + (peak - end) * 0.0625,
            110: end,
            500: end,
        },
        "cosine": {
            5: 1.0,
            10: peak,
            35: end + (peak - end) * (1 + math.cos(math.pi / 4)) / 2,
            60: end + (peak - end) * 0.5,
            110: end,
            500: end,
        },
        "constant": {0: 0.0, 5: 1.0, 10: peak, 60: peak, 500: peak},
    }
    for decay, want in cases.items():
        cfg = optim.OptimConfig(decay=decay, power=2.0, **base)
        schedule = optim.make_schedule(cfg)
        jitted = jax.jit(schedule)
        for step, value in want.items():
            np.testing.assert_allclose(
                float(schedule(step)), value, rtol=1e-6, atol=1e-7, err_msg=f"{decay} at {step}"
            )
            np.testing.assert_allclose(float(jitted(jnp.int32(step))), value, rtol=1e-6, atol=1e-7)
            assert schedule(step).dtype == jnp.float32
    no_warmup = optim.make_schedule(
        optim.OptimConfig(learning_rate=1.0, warmup_steps=0, total_steps=4)
    )
    assert [float(no_warmup(s)) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_schedule_counts_updates_across_accumulation():
    cfg = optim.OptimConfig(grad_accum_steps=4)
    assert optim.update_count(cfg, 11) == 2
    tx = optim.make_optimizer(
        cfg.replace(learning_rate=1.0, warmup_steps=0, total_steps=10, clip_norm=0, weight_decay=0)
    )
    params = {"w": np.ones(2, np.float32)}
    _, state, _ = _run(tx, params, [{"w": np.ones(2, np.float32)}] * 9)
    counts = [
        int(x)
        for x in jax.tree_util.tree_leaves(state.inner_opt_state)
        if np.ndim(x) == 0 and np.issubdtype(np.asarray(x).dtype, np.integer)
    ]
    assert counts and set(counts) == {2}  # 9 micro-steps = 2 updates


# --- AdamW vs torch ----------------------------------------------------------------------


def test_adamw_matches_torch_with_masked_decay_and_clipping():
    cfg = optim.OptimConfig(
        name="adamw",
        learning_rate=0.05,
        warmup_steps=2,
        total_steps=6,
        weight_decay=0.1,
        eps=1e-6,
        clip_norm=1.0,
    )
    params = _params()
    grads = [_grads(params, s, scale=3.0) for s in range(4)]  # norms > 1: clipped
    ours, _, _ = _run(optim.make_optimizer(cfg, params), params, grads)

    flat, tree = jax.tree_util.tree_flatten_with_path(params)
    mask = jax.tree_util.tree_leaves(optim.decay_mask(params))
    tensors = [torch.tensor(np.array(v), requires_grad=True) for _, v in flat]
    groups = [
        {
            "params": [t for t, m in zip(tensors, mask, strict=True) if m],
            "weight_decay": cfg.weight_decay,
        },
        {"params": [t for t, m in zip(tensors, mask, strict=True) if not m], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.b1, cfg.b2), eps=cfg.eps)
    schedule = optim.make_schedule(cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: float(schedule(s)) / cfg.learning_rate)
    for g in grads:
        for t, gl in zip(tensors, jax.tree_util.tree_leaves(g), strict=True):
            t.grad = torch.tensor(np.array(gl))
        torch.nn.utils.clip_grad_norm_(tensors, cfg.clip_norm)
        opt.step()
        sched.step()
    ref = jax.tree_util.tree_unflatten(tree, [t.detach().numpy() for t in tensors])
    _close(ours, ref, atol=1e-6)
    assert not np.allclose(ours["dense"]["kernel"], params["dense"]["kernel"])


# --- LAMB vs numpy -----------------------------------------------------------------------


def _numpy_lamb(cfg, params, grads_seq, adapt_only_decayed=False):
    schedule = optim.make_schedule(cfg)
    mask = optim.decay_mask(params)
    p = {k: v for k, v in _flat(params).items()}
    dm = _flat(mask)
    m = {k: np.zeros_like(v, np.float64) for k, v in p.items()}
    v = {k: np.zeros_like(x, np.float64) for k, x in p.items()}
    p = {k: x.astype(np.float64) for k, x in p.items()}
    for t, grads in enumerate(grads_seq, start=1):
        lr = float(schedule(t - 1))
        for k, g in _flat(grads).items():
            g = g.astype(np.float64)
            m[k] = cfg.b1 * m[k] + (1 - cfg.b1) * g
            v[k] = cfg.b2 * v[k] + (1 - cfg.b2) * g * g
            r = (m[k] / (1 - cfg.b1**t)) / (np.sqrt(v[k] / (1 - cfg.b2**t)) + cfg.eps)
            if dm[k]:
                r = r + cfg.weight_decay * p[k]
            wn, rn = np.linalg.norm(p[k]), np.linalg.norm(r)
            ratio = 1.0 if wn == 0 or rn == 0 else wn / rn
            if adapt_only_decayed and not dm[k]:
                ratio = 1.0
            p[k] = p[k] - lr * ratio * r
    return p


def _flat(tree):
    return {
        optim.path_str(path): np.asarray(x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
    }


@pytest.mark.parametrize("adaptation", ["all", "decayed"])
def test_lamb_matches_numpy_reference(adaptation):
    cfg = optim.OptimConfig(
        name="lamb",
        learning_rate=0.02,
        warmup_steps=1,
        total_steps=5,
        decay="cosine",
        weight_decay=0.01,
        clip_norm=0,
        layer_adaptation=adaptation,
    )
    params = _params(1)
    grads = [_grads(params, 10 + s) for s in range(3)]
    ours, _, _ = _run(optim.make_optimizer(cfg, params), params, grads)
    ref = _numpy_lamb(cfg, params, grads, adapt_only_decayed=adaptation == "decayed")
    got = _flat(ours)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-6, rtol=0, err_msg=k)
    assert np.all(got["zero/bias"] != 0)  # zero params still move (trust ratio 1)
    if adaptation == "all":
        # Without clipping this is exactly optax.lamb with the same mask and schedule.
        lamb = optax.lamb(
            optim.make_schedule(cfg),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=optim.decay_mask,
        )
        _close(ours, _run(lamb, params, grads)[0], atol=1e-7)


# --- decay mask on real model trees ------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        dict(family="bert"),
        dict(
            family="albert",
            hidden_act="gelu_new",
            embedding_size=8,
            num_hidden_groups=1,
            scan_layers=True,
        ),
        dict(
            family="electra",
            embedding_size=8,
            generator_hidden_size=8,
            generator_num_heads=1,
            generator_intermediate_size=16,
        ),
    ],
)
def test_decay_mask_excludes_exactly_biases_and_layer_norm(model):
    cfg = modellib.tiny(model["family"], TINY, **model)
    ids = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda k: build(cfg).init(k, ids), jax.random.key(0))["params"]
    for params in (shapes, nn.unbox(shapes)):  # boxed (logical axes) and plain trees
        mask = optim.decay_mask(params)
        assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)
        got = _flat(mask)
        # Independently: the decayed leaves are exactly the kernels and embedding tables.
        names = {k.rsplit("/", 1)[-1] for k in got}
        assert names == {"kernel", "bias", "scale", "embedding"}
        for path, decayed in got.items():
            assert bool(decayed) == (path.rsplit("/", 1)[-1] in ("kernel", "embedding")), path
        excluded = [p for p, d in got.items() if not d]
        assert "mlm/bias" in excluded or "generator/mlm/bias" in excluded
        assert any(p.endswith("attention_norm/scale") for p in excluded)


# --- clipping, accumulation, frozen, dtypes ----------------------------------------------


def test_clipping_caps_the_global_norm():
    # eps = 1 makes Adam's first step scale-sensitive: g / (|g| + 1).
    cfg = optim.OptimConfig(
        learning_rate=1.0, warmup_steps=0, total_steps=10, eps=1.0, weight_decay=0.0, clip_norm=0.5
    )
    params = _params(2)
    g = _grads(params, 3)
    norm = float(optax.tree.norm(g))
    assert norm > 0.5
    clip, no_clip = optim.make_optimizer(cfg), optim.make_optimizer(cfg.replace(clip_norm=0))
    clipped = _run(clip, params, [g])[2][0]
    rescaled = jax.tree_util.tree_map(lambda x: x * (0.5 / norm), g)
    _close(clipped, _run(no_clip, params, [rescaled])[2][0], atol=1e-7)
    assert not np.allclose(
        _run(no_clip, params, [g])[2][0]["dense"]["kernel"], clipped["dense"]["kernel"]
    )
    small = jax.tree_util.tree_map(lambda x: x * (0.4 / norm), g)  # under the cap: untouched
    _close(_run(clip, params, [small])[2][0], _run(no_clip, params, [small])[2][0], atol=1e-7)


def test_grad_accumulation_equals_one_step_on_the_mean():
    # LAMB with decay and clipping: MultiSteps wraps whichever chain the config builds.
    cfg = optim.OptimConfig(
        name="lamb",
        learning_rate=0.05,
        warmup_steps=1,
        total_steps=4,
        weight_decay=0.1,
        clip_norm=1.0,
    )
    params = _params(4)
    micro = [_grads(params, 20 + s, scale=2.0) for s in range(6)]
    means = [jax.tree_util.tree_map(lambda *x: sum(x) / 3, *micro[i : i + 3]) for i in (0, 3)]
    acc, _, updates = _run(
        optim.make_optimizer(cfg.replace(grad_accum_steps=3), params), params, micro
    )
    one, _, _ = _run(optim.make_optimizer(cfg, params), params, means)
    _close(acc, one, atol=1e-6)
    for u in (updates[0], updates[1], updates[3], updates[4]):  # between updates: no change
        assert all(np.all(np.asarray(x) == 0) for x in jax.tree_util.tree_leaves(u))


def test_frozen_paths_never_change_and_stay_out_of_clipping():
    cfg_model = modellib.tiny("distilbert", TINY)
    frozen = optim_params.frozen_paths(cfg_model)
    table = "embeddings/position/embedding"
    assert frozen == (table,)
    assert optim_params.frozen_paths(modellib.tiny("bert", TINY)) == ()
    cfg = optim.OptimConfig(
        name="lamb", learning_rate=0.1, warmup_steps=0, total_steps=10, clip_norm=1.0
    )
    # The path names a leaf of the real DistilBERT tree (checked before any work) ...
    ids = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda k: build(cfg_model).init(k, ids), jax.random.key(0))
    optim.make_optimizer(cfg, shapes["params"], frozen=frozen)
    with pytest.raises(ConfigError, match="embeddings/positions/embedding"):
        optim.make_optimizer(cfg, shapes["params"], frozen=["embeddings/positions/embedding"])
    # ... and updates are checked on a small tree that has it.
    params = _params(6)
    params["embeddings"]["position"] = {"embedding": np.ones((4, 3), np.float32)}
    grads = [_grads(params, 30 + s) for s in range(2)]
    for g in grads:  # a huge gradient on the frozen table must not shrink the others
        g["embeddings"]["position"]["embedding"] = g["embeddings"]["position"]["embedding"] * 1e4
    new, state, _ = _run(optim.make_optimizer(cfg, params, frozen=frozen), params, grads)
    before, after = _flat(params), _flat(new)
    np.testing.assert_array_equal(after[table], before[table])
    assert all(
        not np.array_equal(after[k], before[k]) for k in before if k not in (table, "still/bias")
    )
    # The frozen leaf holds no optimizer state: Adam's mu and nu for the other leaves,
    # plus two step counters (Adam's and the schedule's).
    n_state = sum(np.size(x) for x in jax.tree_util.tree_leaves(state))
    n_params = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
    assert n_state == 2 * (n_params - before[table].size) + 2
    # The others move exactly as if the table were a constant with no gradient.
    zeroed = [
        {
            **g,
            "embeddings": {
                **g["embeddings"],
                "position": {"embedding": np.zeros_like(before[table])},
            },
        }
        for g in grads
    ]
    ref = _flat(_run(optim.make_optimizer(cfg), params, zeroed)[0])
    for k in before:
        if k != table:
            np.testing.assert_allclose(after[k], ref[k], atol=1e-6, err_msg=k)


@pytest.mark.parametrize("name,accum", [("adamw", 1), ("lamb", 2)])
def test_state_and_updates_stay_float32_with_bfloat16_gradients(name, accum):
    cfg = optim.OptimConfig(
        name=name, learning_rate=0.01, warmup_steps=0, total_steps=10, grad_accum_steps=accum
    )
    params = _params(5)
    grads = [
        jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), _grads(params, s))
        for s in range(2)
    ]
    new, state, updates = _run(optim.make_optimizer(cfg, params), params, grads)
    floats = [
        x
        for x in jax.tree_util.tree_leaves((new, state, updates))
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
    ]
    assert floats and all(jnp.asarray(x).dtype == jnp.float32 for x in floats)
    assert not np.allclose(new["dense"]["kernel"], params["dense"]["kernel"])
    bf16 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), params)
    with pytest.raises(ConfigError, match="float32 master weights"):
        optim.make_optimizer(cfg, bf16)


def test_config_validation_names_the_key():
    assert optim.OptimConfig.from_dict({"name": "lamb"}).name == "lamb"
    with pytest.raises(ConfigError, match="unknown optim config key.*learning_rat"):
        optim.OptimConfig.from_dict({"learning_rat": 1e-3})
    bad = [
        ("name", "sgd"),
        ("decay", "step"),
        ("warmup_steps", 20),
        ("learning_rate", 0.0),
        ("end_learning_rate", 1.0),
        ("clip_norm", -1.0),
        ("grad_accum_steps", 0),
        ("b2", 1.0),
        ("layer_adaptation", "none"),
        ("layer_decay", 0.0),
        ("layer_decay", 1.2),
        ("layer_decay_depth", "electra"),
    ]
    for key, value in bad:
        with pytest.raises(ConfigError, match=f"optim.{key}="):
            optim.OptimConfig.from_dict(
                {"total_steps": 10, "warmup_steps": 1, "learning_rate": 0.1, key: value}
            )


# --- layer-wise learning-rate decay ------------------------------------------------------


def _model_params(scan, **model):
    """A 3-layer model's parameter tree, every leaf ones."""
    cfg = modellib.tiny(model.get("family", "bert"), TINY, num_layers=3, scan_layers=scan, **model)
    ids = jnp.zeros((1, 8), jnp.int32)
    shapes = nn.unbox(jax.eval_shape(lambda k: build(cfg).init(k, ids), jax.random.key(0)))
    return jax.tree_util.tree_map(lambda s: np.ones(s.shape, np.float32), shapes["params"])


# By hand, L = 3 and d = 0.5 (powers of two: exact in float32).
# google: heads 1, layer_2 d^2, layer_1 d^3, layer_0 d^4, embeddings d^5.
# intended: heads 1, layer_2 d, layer_1 d^2, layer_0 d^3, embeddings d^4.
_EXPECTED = {
    "google": {"head": 1.0, 2: 0.25, 1: 0.125, 0: 0.0625, "embeddings": 0.03125},
    "intended": {"head": 1.0, 2: 0.5, 1: 0.25, 0: 0.125, "embeddings": 0.0625},
}


@pytest.mark.parametrize("depth", ["google", "intended"])
@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize(
    "model",
    [
        dict(family="bert", heads=("pooler", "classifier"), num_labels=2),
        dict(
            family="electra",
            embedding_size=8,
            heads=("classifier",),
            num_labels=2,
            **modellib.NO_GENERATOR,
        ),
    ],
)
def test_layer_decay_scales_each_layers_step_by_hand(depth, scan, model):
    # One AdamW step from a zero state with gradients of ones: Adam's update is
    # g / (|g| + eps) = 1 / (1 + eps) everywhere; decoupled decay adds wd * p = wd on the
    # decayed leaves. The learning rate multiplies both, so each leaf moves by
    # -lr * m * (1 / (1 + eps) + wd * decayed), m its layer's multiplier.
    # (float32 bias correction leaves ~1e-6 relative; the multipliers differ 2x.)
    lr, wd, eps = 0.1, 0.5, 1e-6
    cfg = optim.OptimConfig(
        learning_rate=lr,
        warmup_steps=0,
        total_steps=10,
        weight_decay=wd,
        eps=eps,
        clip_norm=0,
        layer_decay=0.5,
        layer_decay_depth=depth,
    )
    params = _model_params(scan, **model)
    tx = optim.make_optimizer(cfg, params)
    grads = jax.tree_util.tree_map(np.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)  # eager: no compile
    want = _EXPECTED[depth]
    mask = _flat(optim.decay_mask(params))
    seen = set()
    for path, u in _flat(updates).items():
        step = 1 / (1 + eps) + wd * mask[path]
        parts = path.split("/")
        if parts[0] == "embeddings" or parts[:2] == ["encoder", "embeddings_project"]:
            m, kind = want["embeddings"], "embeddings"
        elif parts[:2] == ["encoder", "layers"]:  # scan: slice i is layer i
            m, kind = np.array([want[i] for i in range(3)]).reshape((3,) + (1,) * (u.ndim - 1)), 3
        elif parts[0] == "encoder":
            i = int(parts[1].removeprefix("layer_"))
            m, kind = want[i], i
        else:
            m, kind = want["head"], parts[0]
        seen.add(kind)
        np.testing.assert_allclose(
            u, np.broadcast_to(-lr * m * step, u.shape), rtol=1e-5, err_msg=path
        )
    heads = set(model["heads"])
    assert seen == {"embeddings", *heads, *([3] if scan else [0, 1, 2])}
    if model["family"] == "electra":  # the E -> H projection counts as embeddings
        assert "encoder/embeddings_project/kernel" in mask
    # layer_lr_multipliers says the same, and the stacked leaf gets one value per layer.
    mult = _flat(optim.layer_lr_multipliers(params, cfg))
    key = "encoder/layers/unit/output/kernel" if scan else "encoder/layer_1/output/kernel"
    assert np.ravel(mult[key]).tolist() == ([want[0], want[1], want[2]] if scan else [want[1]])
    assert mult["classifier/out/kernel"] == 1.0


@pytest.mark.parametrize("depth", ["google", "intended"])
def test_layer_decay_one_is_exactly_adamw(depth):
    cfg = optim.OptimConfig(
        learning_rate=0.01,
        warmup_steps=1,
        total_steps=5,
        weight_decay=0.1,
        clip_norm=0,
        layer_decay=1.0,
        layer_decay_depth=depth,
    )
    params = _model_params(False, family="bert", heads=("pooler", "classifier"), num_labels=2)
    rng = np.random.default_rng(0)
    grads = [
        jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
        for _ in range(2)
    ]
    ours, state, updates = _run(optim.make_optimizer(cfg, params), params, grads)
    adamw = optax.adamw(
        optim.make_schedule(cfg),
        b1=cfg.b1,
        b2=cfg.b2,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        mask=optim.decay_mask,
    )
    ref, ref_state, ref_updates = _run(adamw, params, grads)
    for a, b in zip(
        jax.tree_util.tree_leaves((ours, state, updates)),
        jax.tree_util.tree_leaves((ref, ref_state, ref_updates)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_layer_decay_refuses_parameters_without_a_depth():
    cfg = optim.OptimConfig(layer_decay=0.8)
    albert = _model_params(
        False,
        family="albert",
        hidden_act="gelu_new",
        embedding_size=8,
        num_hidden_groups=1,
        heads=("pooler", "classifier"),
        num_labels=2,
    )
    with pytest.raises(
        ConfigError,
        match=r"optim.layer_decay=0.8: ALBERT's shared layers "
        r"\(encoder/group_0\)",
    ):
        optim.make_optimizer(cfg, albert)
    tx = optim.make_optimizer(cfg)  # without a tree to check, init refuses it
    with pytest.raises(ConfigError, match="optim.layer_decay=0.8"):
        tx.init(albert)
    optim.make_optimizer(cfg.replace(layer_decay=1.0), albert)  # off: ALBERT is fine
    electra = _model_params(
        False,
        family="electra",
        embedding_size=8,
        generator_hidden_size=8,
        generator_num_heads=1,
        generator_intermediate_size=16,
    )
    with pytest.raises(ConfigError, match="optim.layer_decay=0.8: generator/.*generator tower"):
        optim.make_optimizer(cfg, electra)
    with pytest.raises(ConfigError, match="optim.layer_decay=0.8: .*no encoder/layer_"):
        optim.make_optimizer(cfg, _params())
