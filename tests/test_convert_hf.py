"""bertjax.convert.hf and the five model families against transformers' PyTorch classes.

transformers is the independent reference: every expected value comes from a
transformers model (or from a figure in DESIGN.md), never from bertjax itself.
Each case builds a tiny random transformers model in float32 and eval mode, with
every bias and LayerNorm parameter perturbed so that zero/one initialisation cannot
hide a mapping bug, then checks

1. forward parity: every hidden state and every head's logits within 1e-5, inputs
   with padding (and token types where the family has them); sparse MLM logits;
2. round trips: HF -> bertjax -> HF is bit-exact against the saved safetensors,
   in the loop and the scan layouts;
3. export: a bertjax-initialised model written with `to_state_dicts`/`hf_configs`
   loads into transformers' Auto classes with no missing, unexpected or
   mismatched key, and gives the same logits;
4. bad inputs fail with a `ConversionError` naming the tensor, key or file;
5. parameter counts of every preset equal transformers' `num_parameters()`.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import types

import flax.linen as nn
import hflib
import jax
import numpy as np
import pytest

from bertjax.convert import hf, statedict
from bertjax.models import ModelConfig, build
from bertjax.models.layers import sinusoidal_table
from bertjax.models.registry import PRESETS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5  # max abs difference allowed in float32 (DESIGN: reliability property 7)
VOCAB, MAX_POS = 100, 64
BATCH, LENGTH, PAD_FROM = 2, 9, 6  # row 1 is padding from position PAD_FROM on
MASKED_POSITIONS = np.array([[1, 4, 7], [0, 2, 5]], np.int32)  # [batch, P]

_SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=MAX_POS,
)


# --- cases: tiny random transformers models ------------------------------------------


def _bert() -> dict:
    return {"": transformers.BertForPreTraining(transformers.BertConfig(**_SMALL))}


def _roberta() -> dict:
    c = transformers.RobertaConfig(
        **{**_SMALL, "max_position_embeddings": MAX_POS + 2},
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
    )
    return {"": transformers.RobertaForMaskedLM(c)}


def _albert(layers: int, groups: int, inner: int) -> dict:
    c = transformers.AlbertConfig(
        **{**_SMALL, "num_hidden_layers": layers},
        embedding_size=16,
        num_hidden_groups=groups,
        inner_group_num=inner,
    )
    return {"": transformers.AlbertForPreTraining(c)}


def _distilbert(sinusoidal: bool) -> dict:
    c = transformers.DistilBertConfig(
        vocab_size=VOCAB,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
        max_position_embeddings=MAX_POS,
        sinusoidal_pos_embds=sinusoidal,
    )
    return {"": transformers.DistilBertForMaskedLM(c)}


def _electra() -> dict:
    # E=16 differs from both towers' widths (32 and 24): both project their embeddings.
    disc = transformers.ElectraConfig(**{**_SMALL, "num_hidden_layers": 3}, embedding_size=16)
    gen = transformers.ElectraConfig(
        **{**_SMALL, "hidden_size": 24, "num_attention_heads": 2, "intermediate_size": 48},
        embedding_size=16,
    )
    return {
        "discriminator": transformers.ElectraForPreTraining(disc),
        "generator": transformers.ElectraForMaskedLM(gen),
    }


CASES = {
    "bert": _bert,
    "roberta": _roberta,
    "roberta_pooler": _roberta,  # + roberta.pooler.dense, from a RobertaModel
    "albert_shared": lambda: _albert(layers=3, groups=1, inner=1),
    "albert_groups": lambda: _albert(layers=4, groups=2, inner=2),
    "distilbert": lambda: _distilbert(sinusoidal=False),
    "distilbert_sinusoidal": lambda: _distilbert(sinusoidal=True),
    "electra": _electra,
}

# Our logits key -> (HF part, HF output field).
HEADS = {
    "bert": {"mlm": ("", "prediction_logits"), "nsp": ("", "seq_relationship_logits")},
    "roberta": {"mlm": ("", "logits")},
    "albert": {"mlm": ("", "prediction_logits"), "sop": ("", "sop_logits")},
    "distilbert": {"mlm": ("", "logits")},
    "electra": {"generator": ("generator", "logits"), "discriminator": ("discriminator", "logits")},
}
MLM = {"electra": "generator"}  # the logits key of the MLM head, where not "mlm"
POOLER_KEYS = ("roberta.pooler.dense.weight", "roberta.pooler.dense.bias")


def _numpy_sd(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _inputs(family: str, pad_id: int) -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(0)
    ids = rng.integers(3, VOCAB, (BATCH, LENGTH)).astype(np.int32)
    mask = np.ones((BATCH, LENGTH), np.int32)
    mask[1, PAD_FROM:] = 0
    ids[1, PAD_FROM:] = pad_id
    types_ = None
    if family in ("bert", "albert", "electra"):
        types_ = np.zeros((BATCH, LENGTH), np.int32)
        types_[0, 4:] = 1
        types_[1, 3:PAD_FROM] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types_}


def _hf_forward(model: torch.nn.Module, inputs: dict) -> object:
    kw = {k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items() if v is not None}
    with torch.no_grad():
        return model(**kw, output_hidden_states=True)


def _our_forward(cfg, params, inputs: dict, masked_positions=None):
    return build(cfg).apply(
        {"params": params},
        inputs["input_ids"],
        token_type_ids=inputs["token_type_ids"],
        attention_mask=inputs["attention_mask"],
        masked_positions=masked_positions,
    )


def _hf_configs_of(models: dict) -> dict[str, dict]:
    return {part: m.config.to_dict() for part, m in models.items()}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request, tmp_path_factory) -> types.SimpleNamespace:
    """One tiny transformers model (two for ELECTRA), its state dicts, both forwards."""
    name = request.param
    torch.manual_seed(0)
    models = CASES[name]()
    for seed, m in enumerate(models.values()):
        hflib.perturb(m, seed)
        m.eval()
    family = next(iter(models.values())).config.model_type
    sd = {part: _numpy_sd(m) for part, m in models.items()}
    base = None
    if name == "roberta_pooler":
        # RobertaForMaskedLM has no pooler; released RoBERTa checkpoints carry one.
        # The reference for it is a RobertaModel holding the same encoder weights.
        base = transformers.RobertaModel(models[""].config, add_pooling_layer=True)
        hflib.perturb(base, 7)
        info = base.load_state_dict(models[""].roberta.state_dict(), strict=False)
        assert sorted(info.missing_keys) == ["pooler.dense.bias", "pooler.dense.weight"]
        base.eval()
        sd[""].update(
            {k: base.state_dict()[k[len("roberta.") :]].numpy().copy() for k in POOLER_KEYS}
        )
    if family == "electra":
        # HF keeps two models; bertjax shares one embedding module, so make them equal.
        gen, disc = models["generator"], models["discriminator"]
        gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
        assert torch.equal(
            gen.generator_lm_head.weight, disc.electra.embeddings.word_embeddings.weight
        )
        sd["generator"] = _numpy_sd(gen)

    saved = {}  # what save_pretrained writes: the reference key set of the round trip
    for part, m in models.items():
        d = tmp_path_factory.mktemp(f"{name}_{part or 'model'}")
        m.save_pretrained(d)
        saved[part] = statedict.read_state_dict(str(d))
        if name == "roberta_pooler":
            saved[part].update({k: sd[part][k] for k in POOLER_KEYS})

    cfg = hf.config_from_hf(_hf_configs_of(models), sd)
    params = hf.from_state_dicts(cfg, sd, source=name)
    inputs = _inputs(family, cfg.pad_token_id)
    return types.SimpleNamespace(
        name=name,
        family=family,
        models=models,
        base=base,
        sd=sd,
        saved=saved,
        cfg=cfg,
        params=params,
        inputs=inputs,
        hf_out={part: _hf_forward(m, inputs) for part, m in models.items()},
        ours=_our_forward(cfg, params, inputs),
    )


# --- comparison helpers ---------------------------------------------------------------

MAX_DIFFS: dict[str, float] = {}  # case -> largest difference seen, reported at the end


@pytest.fixture(scope="module", autouse=True)
def _report_max_diffs(request):
    """Prints the largest difference per case after this file's tests."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not MAX_DIFFS:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for name, diff in sorted(MAX_DIFFS.items()):
            reporter.write_line(f"max abs diff vs transformers: {name:22s} {diff:.2g}")


def _close(case_name: str, what: str, ref, ours, tol: float = TOL) -> None:
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    ours = np.asarray(ours)
    assert ref.shape == ours.shape, f"{what}: shape {ours.shape}, transformers {ref.shape}"
    assert np.isfinite(ref).all(), f"{what}: transformers output is not finite"
    assert np.isfinite(ours).all(), f"{what}: bertjax output is not finite"
    diff = float(np.abs(ref.astype(np.float64) - ours.astype(np.float64)).max())
    MAX_DIFFS[case_name] = max(MAX_DIFFS.get(case_name, 0.0), diff)
    assert diff <= tol, f"{what}: max abs diff {diff:.3g} > {tol}"


def _hf_states(c, part: str, hf_out) -> list:
    """transformers' hidden states, one per application of an encoder unit.

    ALBERT in transformers v5 records the output of every AlbertLayer, so with
    inner_group_num > 1 it returns L * inner + 1 states; bertjax (and transformers
    v4) report one per group application: every inner-th of them.
    """
    states = list(hf_out.hidden_states)
    inner = c.cfg.inner_group_num if c.family == "albert" else 1
    tower = c.cfg.generator_config() if part == "generator" else c.cfg
    assert len(states) == tower.num_layers * inner + 1
    return states[::inner]


def _our_states(out: dict, part: str) -> list:
    return out["generator"]["hidden_states"] if part == "generator" else out["hidden_states"]


def _check_forward(c, cfg, params, hf_out: dict, label: str) -> None:
    logits, out = _our_forward(cfg, params, c.inputs)
    # Padded positions are compared too: transformers and bertjax both mask keys only,
    # so the (unused) outputs at padded query positions agree as well.
    for part in hf_out:
        ref, ours = _hf_states(c, part, hf_out[part]), _our_states(out, part)
        assert len(ours) == len(ref)
        for i, (r, o) in enumerate(zip(ref, ours, strict=True)):
            _close(c.name, f"{label} {part or 'model'} hidden_states[{i}]", r, o)
    assert set(logits) == set(HEADS[c.family])
    for key, (part, field) in HEADS[c.family].items():
        _close(c.name, f"{label} logits[{key}]", getattr(hf_out[part], field), logits[key])


# --- 1. forward parity ----------------------------------------------------------------


def test_forward_matches_transformers(case):
    _check_forward(case, case.cfg, case.params, case.hf_out, "loop")


# One case per kind of stacking (plain layers, ALBERT groups of inner layers, two towers);
# the other families stack exactly as BERT does and would only cost time.
@pytest.mark.parametrize("case", ["bert", "albert_groups", "electra"], indirect=True)
def test_forward_matches_transformers_scan_layers(case):
    cfg = case.cfg.replace(scan_layers=True)
    params = hf.from_state_dicts(cfg, case.sd)
    assert "layers" in params["encoder"] or cfg.shares_layers  # the stacked layout is in use
    _check_forward(case, cfg, params, case.hf_out, "scan")


def test_sparse_mlm_equals_dense_logits_at_positions(case):
    logits, _ = _our_forward(case.cfg, case.params, case.inputs, MASKED_POSITIONS)
    head = MLM.get(case.family, "mlm")
    part, field = HEADS[case.family][head]
    dense = getattr(case.hf_out[part], field).numpy()
    ref = np.take_along_axis(dense, MASKED_POSITIONS[:, :, None].astype(np.int64), axis=1)
    _close(case.name, "sparse mlm", ref, logits[head])
    ours_dense = np.take_along_axis(
        np.asarray(case.ours[0][head]), MASKED_POSITIONS[:, :, None], axis=1
    )
    np.testing.assert_allclose(logits[head], ours_dense, atol=1e-6, rtol=0)


def test_config_fields_from_transformers(case):
    cfg, hf_cfg = case.cfg, next(iter(case.models.values())).config
    assert cfg.family == case.family
    assert cfg.use_pooler == (case.family in ("bert", "albert") or case.name == "roberta_pooler")
    if case.family == "roberta":
        assert (cfg.pad_token_id, cfg.positions_from_padding, cfg.type_vocab_size) == (1, True, 1)
    if case.family == "albert":
        assert (cfg.num_groups, cfg.inner_group_num) == (
            hf_cfg.num_hidden_groups,
            hf_cfg.inner_group_num,
        )
    if case.name == "distilbert_sinusoidal":
        assert cfg.sinusoidal_positions
        # transformers' fixed table equals the one bertjax initialises with.
        table = case.sd[""]["distilbert.embeddings.position_embeddings.weight"]
        np.testing.assert_allclose(table, sinusoidal_table(MAX_POS, 32), atol=1e-6, rtol=0)
    if case.family == "electra":
        gen = case.models["generator"].config
        assert cfg.generator_config().hidden_size == gen.hidden_size
        assert cfg.generator_config().num_layers == gen.num_hidden_layers
    if case.name == "roberta_pooler":
        _, out = case.ours
        _close(
            case.name,
            "pooled",
            _hf_forward(
                case.base, {k: v for k, v in case.inputs.items() if k != "token_type_ids"}
            ).pooler_output,
            out["pooled"],
        )


def test_roberta_mlm_head_activation_is_gelu_whatever_hidden_act():
    torch.manual_seed(0)
    c = transformers.RobertaConfig(
        **{**_SMALL, "max_position_embeddings": MAX_POS + 2},
        type_vocab_size=1,
        pad_token_id=1,
        hidden_act="relu",
    )
    model = transformers.RobertaForMaskedLM(c).eval()
    cfg = hf.config_from_hf({"": c.to_dict()}, {"": _numpy_sd(model)})
    params = hf.from_state_dicts(cfg, {"": _numpy_sd(model)})
    inputs = _inputs("roberta", 1)
    logits, _ = _our_forward(cfg, params, inputs)
    ref = _hf_forward(model, inputs).logits.numpy()
    assert np.abs(ref - np.asarray(logits["mlm"])).max() <= TOL  # about 0.16 today


# --- 2. round trips -------------------------------------------------------------------


@pytest.mark.parametrize("scan", [False, True], ids=["loop", "scan"])
def test_round_trip_is_bit_exact(case, scan):
    cfg = case.cfg.replace(scan_layers=scan)
    back = hf.to_state_dicts(cfg, hf.from_state_dicts(cfg, case.saved))
    assert set(back) == set(case.saved)
    for part, saved in case.saved.items():
        assert sorted(back[part]) == sorted(saved)
        for key, ref in saved.items():
            got = back[part][key]
            assert got.dtype == ref.dtype and got.shape == ref.shape, key
            assert np.array_equal(got, ref), key


def test_full_state_dict_with_tied_copies_imports_like_saved(case):
    """The in-memory state dict (tied decoder copies included) gives the same params."""
    from_saved = hf.from_state_dicts(case.cfg, case.saved)
    flat_a = jax.tree_util.tree_leaves_with_path(from_saved)
    flat_b = jax.tree_util.tree_leaves_with_path(case.params)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(flat_a, flat_b, strict=True))


# --- 3. bertjax-initialised model -> transformers ----------------------------------------


def _loaders(family: str, part: str) -> list:
    if part == "generator":  # AutoModelForPreTraining would build the discriminator
        return [transformers.AutoModelForMaskedLM]
    if family in ("roberta", "distilbert"):
        return [transformers.AutoModelForPreTraining, transformers.AutoModelForMaskedLM]
    return [transformers.AutoModelForPreTraining]


def test_bertjax_init_exports_to_transformers(case, tmp_path):
    cfg = case.cfg
    params = hflib.perturbed_init(cfg, case.inputs["input_ids"])
    state_dicts, configs = hf.to_state_dicts(cfg, params), hf.hf_configs(cfg)
    assert set(state_dicts) == set(configs) == {p.name for p in hf.parts(cfg)}
    dirs, classes = {}, {p.name: hf.architecture(p) for p in hf.parts(cfg)}
    for part in classes:
        dirs[part] = tmp_path / (part or "model")
        dirs[part].mkdir()
        (dirs[part] / "config.json").write_text(json.dumps(configs[part]))
        statedict.write_state_dict(str(dirs[part]), state_dicts[part])

    logits, out = _our_forward(cfg, params, case.inputs)
    hf_out = {}
    for part, d in dirs.items():
        for auto in _loaders(case.family, part):
            model, info = auto.from_pretrained(d, output_loading_info=True)
            assert type(model).__name__ == classes[part]
            unexpected = POOLER_KEYS if case.name == "roberta_pooler" else ()
            assert sorted(info["unexpected_keys"]) == sorted(unexpected), auto
            assert not info["missing_keys"] and not info["mismatched_keys"], auto
            hf_out[part] = _hf_forward(model.eval(), case.inputs)
            assert next(model.parameters()).dtype == torch.float32
    for key, (part, field) in HEADS[case.family].items():
        _close(case.name, f"export logits[{key}]", getattr(hf_out[part], field), logits[key])
    for part in hf_out:
        for i, (r, o) in enumerate(
            zip(_hf_states(case, part, hf_out[part]), _our_states(out, part), strict=True)
        ):
            _close(case.name, f"export {part or 'model'} hidden_states[{i}]", r, o)

    if case.name == "roberta_pooler":  # the pooler reaches RobertaModel intact
        model, info = transformers.AutoModel.from_pretrained(dirs[""], output_loading_info=True)
        assert not info["missing_keys"] and not info["mismatched_keys"]
        assert all(k.startswith("lm_head.") for k in info["unexpected_keys"])
        pooled = _hf_forward(
            model.eval(), {k: v for k, v in case.inputs.items() if k != "token_type_ids"}
        ).pooler_output
        _close(case.name, "export pooled", pooled, out["pooled"])


# --- 4. bad inputs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> types.SimpleNamespace:
    torch.manual_seed(1)
    model = _bert()[""]
    hflib.perturb(model, 3)
    d = tmp_path_factory.mktemp("bert_files")
    model.save_pretrained(d)
    cfg = hf.config_from_hf({"": model.config.to_dict()}, {"": _numpy_sd(model)})
    return types.SimpleNamespace(
        model=model.eval(),
        sd=_numpy_sd(model),
        dir=d,
        cfg=cfg,
        saved=statedict.read_state_dict(str(d)),
    )


def _import(b, **changes) -> dict:
    sd = dict(b.sd)
    for k, v in changes.items():
        if v is None:
            del sd[k]
        else:
            sd[k] = v
    return hf.from_state_dicts(b.cfg, {"": sd}, source="ckpt")


@pytest.mark.parametrize(
    "key,change",
    [
        ("bert.encoder.layer.1.intermediate.dense.weight", lambda a: a[:-1]),
        ("bert.encoder.layer.0.attention.self.query.bias", lambda a: a[:, None]),
        # Same size, other shape: must not be silently reshaped.
        ("bert.embeddings.position_embeddings.weight", lambda a: a.T),
        ("bert.encoder.layer.1.attention.output.dense.weight", lambda a: a.reshape(16, 64)),
    ],
    ids=["rows", "rank", "transposed", "reshaped"],
)
def test_wrong_shape_names_the_tensor(bert, key, change):
    with pytest.raises(hf.ConversionError, match=key.replace(".", r"\.")):
        _import(bert, **{key: change(bert.sd[key])})


def test_missing_tensor_is_named(bert):
    key = "bert.encoder.layer.0.attention.output.LayerNorm.bias"
    with pytest.raises(hf.ConversionError, match=rf"{key}.* missing in ckpt"):
        _import(bert, **{key: None})


def test_unexpected_tensor_is_named(bert):
    key = "bert.encoder.layer.2.output.dense.weight"  # a layer the config does not have
    with pytest.raises(hf.ConversionError, match=rf"unexpected tensor {key}"):
        _import(bert, **{key: np.zeros((32, 64), np.float32)})


def test_unknown_model_type_is_named(bert):
    with pytest.raises(hf.ConversionError, match="gpt2"):
        hf.config_from_hf({"": {**bert.model.config.to_dict(), "model_type": "gpt2"}})


def test_invalid_config_value_is_a_conversion_error(bert):
    with pytest.raises(hf.ConversionError, match="num_attention_heads|num_heads"):
        hf.config_from_hf({"": {**bert.model.config.to_dict(), "num_attention_heads": 5}})


def test_electra_generator_config_must_share_embeddings():
    c = {p: m.config.to_dict() for p, m in _electra().items()}
    assert hf.config_from_hf(c, heads=("discriminator", "generator")).has_generator
    with pytest.raises(hf.ConversionError, match="vocab_size"):
        hf.config_from_hf({**c, "generator": {**c["generator"], "vocab_size": 99}})
    # One config alone is one model: a discriminator without a generator, say.
    alone = hf.config_from_hf({"": c["discriminator"]}, heads=("discriminator",))
    assert not alone.has_generator and alone.heads == ("discriminator",)


@pytest.mark.parametrize("case", ["electra"], indirect=True)
def test_electra_generator_embeddings_must_equal_discriminator(case):
    key = "electra.embeddings.LayerNorm.weight"
    gen = {**case.saved["generator"], key: case.saved["generator"][key] + 1}
    with pytest.raises(hf.ConversionError, match=key.replace(".", r"\.")):
        hf.from_state_dicts(case.cfg, {**case.saved, "generator": gen})


def test_legacy_gamma_beta_names_are_read(bert):
    """Old PyTorch BERT checkpoints call LayerNorm parameters gamma and beta."""
    old = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in bert.saved.items()
    }
    assert old != bert.saved
    a = hf.from_state_dicts(bert.cfg, {"": old})
    b = hf.from_state_dicts(bert.cfg, {"": bert.saved})
    assert all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def test_tied_decoder_weight_equal_is_accepted_different_is_refused(bert):
    key = "cls.predictions.decoder.weight"
    assert key in bert.sd and key not in bert.saved
    np.testing.assert_array_equal(bert.sd[key], bert.sd["bert.embeddings.word_embeddings.weight"])
    _import(bert)  # present and equal
    with pytest.raises(hf.ConversionError, match=key.replace(".", r"\.")):
        _import(bert, **{key: bert.sd[key] + 1e-3})


def test_pytorch_bin_loads_with_weights_only(bert, tmp_path):
    torch.save(
        {k: torch.from_numpy(v) for k, v in bert.saved.items()}, tmp_path / "pytorch_model.bin"
    )
    got = statedict.read_state_dict(str(tmp_path))
    assert sorted(got) == sorted(bert.saved)
    for k, v in bert.saved.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k
    # A whole model's state dict (tied tensors sharing storage) imports as well.
    torch.save(bert.model.state_dict(), tmp_path / "pytorch_model.bin")
    hf.from_state_dicts(bert.cfg, {"": statedict.read_state_dict(str(tmp_path))})


def _plant_marker(path: str) -> None:
    pathlib.Path(path).write_text("code ran while loading a checkpoint")


class _Payload:
    """Unpickling this calls _plant_marker: what a malicious .bin would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_plant_marker, (self.marker,))


class _PlainObject:
    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize("payload", ["reduce", "object"])
def test_pytorch_bin_with_arbitrary_objects_is_refused(tmp_path, payload):
    marker = tmp_path / "marker"
    evil = _Payload(str(marker)) if payload == "reduce" else _PlainObject()
    torch.save(
        {"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2), "x": evil},
        tmp_path / "pytorch_model.bin",
    )
    with pytest.raises(hf.ConversionError, match="pytorch_model.bin"):
        statedict.read_state_dict(str(tmp_path))
    assert not marker.exists()


def test_pytorch_bin_with_non_tensor_entry_is_refused(tmp_path):
    torch.save({"w": torch.zeros(2), "step": 3}, tmp_path / "pytorch_model.bin")
    with pytest.raises(hf.ConversionError, match="'step'"):
        statedict.read_state_dict(str(tmp_path))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(hf.ConversionError, match=str(tmp_path)):
        statedict.read_state_dict(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(hf.ConversionError, match="model.safetensors"):
        statedict.read_state_dict(str(tmp_path))


def test_write_state_dict_leaves_no_temporary(bert, tmp_path):
    statedict.write_state_dict(str(tmp_path), bert.saved)
    assert os.listdir(tmp_path) == ["model.safetensors"]
    got = statedict.read_state_dict(str(tmp_path))
    assert all(np.array_equal(got[k], v) for k, v in bert.saved.items())


# --- 5. parameter counts ------------------------------------------------------------


def _transformers_count(cfg) -> int:
    """num_parameters() of the transformers model(s) `hf_configs(cfg)` describes, on meta."""
    total = 0
    with torch.device("meta"):
        classes = {p.name: hf.architecture(p) for p in hf.parts(cfg)}
        for part, d in hf.hf_configs(cfg).items():
            d = dict(d)
            config = transformers.AutoConfig.for_model(d.pop("model_type"), **d)
            model = getattr(transformers, classes[part])(config)
            total += model.num_parameters()
            if part == "generator":  # bertjax keeps one embedding module for both towers
                total -= sum(p.numel() for p in model.electra.embeddings.parameters())
    return total


def _our_count(cfg) -> int:
    return sum(math.prod(s) for s in hf.abstract_shapes(cfg).values())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_count_matches_transformers(name):
    cfg = ModelConfig.from_preset(name)
    assert _our_count(cfg) == _transformers_count(cfg)


def test_bert_base_parameter_count_is_the_published_one():
    cfg = ModelConfig.from_preset("bert_base")
    assert _our_count(cfg) == _transformers_count(cfg) == 110_106_428  # DESIGN.md


def test_abstract_shapes_describe_the_loop_layout(case):
    """abstract_shapes traces the scan layout (faster); it must equal the loop layout's."""
    init = build(case.cfg).init  # case.cfg has scan_layers=False
    tree = jax.eval_shape(lambda: nn.unbox(init(jax.random.key(0), case.inputs["input_ids"])))
    shapes = {
        tuple(k.key for k in p): tuple(x.shape)
        for p, x in jax.tree_util.tree_leaves_with_path(tree["params"])
    }
    assert hf.abstract_shapes(case.cfg) == shapes
