"""ModernBERT conversion against transformers' PyTorch classes (the independent reference).

Each case is a tiny random transformers model (float32, eval, every bias and norm weight
perturbed) of one class: ModernBertModel, ForMaskedLM, ForSequenceClassification with
cls and mean pooling, ForTokenClassification, ForQuestionAnswering, and a ForMaskedLM
with every bias on and an untied decoder. Inputs are 24 tokens, longer than the 8-token
local window, with a padded row. Checked: logits and hidden states within 1e-5; both
config.json forms (released and transformers v5) read into the same config; round trips
bit-exact against save_pretrained's files; a bertjax-initialised model exported loads
into transformers with no missing or unexpected key and the same logits; config keys
bertjax does not model refused in one line.
"""

from __future__ import annotations

import json
import types

import hflib
import numpy as np
import pytest

from bertjax.convert import hf, statedict
from bertjax.convert.names import ConversionError
from bertjax.models import build

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5
LENGTH, PAD_FROM, WINDOW = 24, 17, 8  # texts longer than the window; row 1 padded
SMALL = dict(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=64,
    local_attention=WINDOW,
    global_attn_every_n_layers=3,
    global_rope_theta=1000.0,
    local_rope_theta=50.0,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    cls_token_id=1,
    sep_token_id=2,
)
BIASED = dict(
    attention_bias=True,
    mlp_bias=True,
    norm_bias=True,
    classifier_bias=True,
    tie_word_embeddings=False,
)
# case -> (class, config changes, {our logits key: transformers output field(s)})
CASES = {
    "model": ("ModernBertModel", {}, {}),
    "mlm": ("ModernBertForMaskedLM", {}, {"mlm": "logits"}),
    "mlm_biased_untied": ("ModernBertForMaskedLM", BIASED, {"mlm": "logits"}),
    "cls": ("ModernBertForSequenceClassification", {"num_labels": 3}, {"classifier": "logits"}),
    "mean": (
        "ModernBertForSequenceClassification",
        {"num_labels": 3, "classifier_pooling": "mean"},
        {"classifier": "logits"},
    ),
    "token": (
        "ModernBertForTokenClassification",
        {"num_labels": 5},
        {"token_classifier": "logits"},
    ),
    "qa": ("ModernBertForQuestionAnswering", {}, {"span": ("start_logits", "end_logits")}),
}
RELEASED_ONLY = ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta")


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 100, (2, LENGTH)).astype(np.int32)
    mask = np.ones((2, LENGTH), np.int32)
    mask[1, PAD_FROM:] = 0
    ids[1, PAD_FROM:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _hf_forward(model, inputs: dict):
    with torch.no_grad():
        return model(
            **{k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()},
            output_hidden_states=True,
        )


def _ref(out, field):
    if isinstance(field, tuple):  # QA: start and end -> [b, l, 2]
        return np.stack([getattr(out, f).numpy() for f in field], -1)
    return getattr(out, field).numpy()


def _close(what: str, ref, ours, real=None) -> None:
    ref, ours = np.asarray(ref, np.float64), np.asarray(ours, np.float64)
    assert ref.shape == ours.shape, f"{what}: {ours.shape} vs transformers {ref.shape}"
    if real is not None:  # per-token outputs: the real tokens (padding's are never read)
        ref, ours = ref[real], ours[real]
    diff = float(np.abs(ref - ours).max())
    assert diff <= TOL, f"{what}: max abs diff {diff:.3g} > {TOL}"


def _forms(config: dict) -> dict[str, dict]:
    """The released config.json form and transformers v5's, from one transformers config."""
    layers = config["num_hidden_layers"]
    every = next(
        i
        for i in range(1, layers + 1)
        if i == layers or config["layer_types"][i] == "full_attention"
    )
    rope = config["rope_parameters"]
    released = {k: v for k, v in config.items() if k not in ("layer_types", "rope_parameters")}
    released.update(
        global_attn_every_n_layers=every,
        global_rope_theta=rope["full_attention"]["rope_theta"],
        local_rope_theta=rope["sliding_attention"]["rope_theta"],
    )
    v5 = {k: v for k, v in config.items() if k not in RELEASED_ONLY}
    return {"released": released, "v5": v5}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory) -> types.SimpleNamespace:
    cls, changes, heads = CASES[request.param]
    torch.manual_seed(0)
    config = transformers.ModernBertConfig(**{**SMALL, **changes})
    model = getattr(transformers, cls)(config)
    hflib.perturb(model, 0)
    model.eval()
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    d = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(d)
    forms = _forms(json.loads((d / "config.json").read_text()))
    cfg = hf.config_from_hf({"": forms["released"]}, {"": sd})
    inputs = _inputs()
    return types.SimpleNamespace(
        name=request.param,
        cls=cls,
        heads=heads,
        model=model,
        sd=sd,
        forms=forms,
        cfg=cfg,
        saved=statedict.read_state_dict(str(d)),
        params=hf.from_state_dicts(cfg, {"": sd}),
        inputs=inputs,
        hf_out=_hf_forward(model, inputs),
    )


def _check(c, cfg, params, hf_out, label: str) -> None:
    logits, out = build(cfg).apply(
        {"params": params}, c.inputs["input_ids"], attention_mask=c.inputs["attention_mask"]
    )
    real = c.inputs["attention_mask"] > 0
    assert set(logits) == set(c.heads)
    for key, field in c.heads.items():
        per_token = key != "classifier"
        _close(f"{label} {key}", _ref(hf_out, field), logits[key], real if per_token else None)
    assert len(hf_out.hidden_states) == len(out["hidden_states"]) == cfg.num_layers + 1
    for i, (r, o) in enumerate(zip(hf_out.hidden_states, out["hidden_states"], strict=True)):
        _close(f"{label} hidden_states[{i}]", r.numpy(), o, real)


def test_forward_matches_transformers(case):
    # _check asserts the head set, the layer count, and every head's logits and hidden
    # state within TOL of transformers' outputs for the same inputs.
    _check(case, case.cfg, case.params, case.hf_out, "import")


def test_both_config_forms_read_the_same(case):
    v5 = hf.config_from_hf({"": case.forms["v5"]}, {"": case.sd})
    assert v5 == case.cfg
    cfg, hf_cfg = case.cfg, case.model.config
    assert (cfg.local_window, cfg.global_every, cfg.rope_theta, cfg.local_rope_theta) == (
        WINDOW,
        3,
        1000.0,
        50.0,
    )
    assert [cfg.layer_window(i) > 0 for i in range(4)] == [
        t == "sliding_attention" for t in hf_cfg.layer_types
    ]
    assert cfg.heads == tuple(case.heads)


def test_round_trip_is_bit_exact(case):
    back = hf.to_state_dicts(case.cfg, hf.from_state_dicts(case.cfg, {"": case.saved}))[""]
    assert sorted(back) == sorted(case.saved)
    for key, ref in case.saved.items():
        assert back[key].dtype == ref.dtype and np.array_equal(back[key], ref), key


def test_the_scan_layout_matches_transformers_and_round_trips(case):
    """scan_layers: layer 0 (no attention_norm) apart, layers 1-3 (local, local, global:
    two windows and two rotary bases) one traced layer picking its kind per layer."""
    cfg = case.cfg.replace(scan_layers=True)
    params = hf.from_state_dicts(cfg, {"": case.saved})
    assert "attention_norm" not in params["encoder"]["layer_0"]
    stacked = params["encoder"]["layers"]["unit"]["attention"]["query"]["kernel"]
    assert stacked.shape[0] == cfg.num_layers - 1
    _check(case, cfg, params, case.hf_out, "scan")
    back = hf.to_state_dicts(cfg, params)[""]
    assert sorted(back) == sorted(case.saved)
    for key, ref in case.saved.items():
        assert np.array_equal(back[key], ref), key


def test_bertjax_init_exports_to_transformers(case, tmp_path):
    cfg = case.cfg
    params = hflib.perturbed_init(cfg, case.inputs["input_ids"])
    config = hf.hf_configs(cfg)[""]
    assert config["architectures"] == [case.cls]
    (tmp_path / "config.json").write_text(json.dumps(config))
    statedict.write_state_dict(str(tmp_path), hf.to_state_dicts(cfg, params)[""])
    model, info = getattr(transformers, case.cls).from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert model.config.layer_types == case.model.config.layer_types
    _check(case, cfg, params, _hf_forward(model.eval(), case.inputs), "export")


@pytest.mark.parametrize(
    "change,match",
    [
        (
            {
                "rope_parameters": {
                    "full_attention": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}
                }
            },
            "rope_parameters.full_attention.factor",
        ),
        (
            {"rope_parameters": {"full_attention": {"rope_type": "dynamic", "rope_theta": 1e4}}},
            "rope_type='dynamic'",
        ),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
        ({"layer_types": ["sliding_attention", "full_attention"] * 2}, "layer_types"),
        ({"classifier_activation": "silu"}, "classifier_activation"),
    ],
)
def test_unmodelled_config_keys_are_refused_in_one_line(change, match):
    config = transformers.ModernBertConfig(**SMALL).to_dict()
    config.update(change)
    with pytest.raises(ConversionError, match=match) as e:
        hf.config_from_hf({"": config})
    assert "\n" not in str(e.value)


def _modernbert_tokenizer():
    """A byte-level BPE tokenizer.json with ModernBERT's specials and [CLS] $A [SEP]."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"],
    )
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
    )


def test_a_directory_with_its_tokenizer_imports_and_exports(tmp_path):
    """What `import` and `export` run: the transformers directory, tokenizer.json included,
    back to a directory transformers' Auto classes load with the same logits."""
    from bertjax.convert import hfdir

    fast = _modernbert_tokenizer()
    torch.manual_seed(0)
    config = transformers.ModernBertConfig(**{**SMALL, "vocab_size": 320, "pad_token_id": 3})
    model = transformers.ModernBertForMaskedLM(config)
    hflib.perturb(model, 0)
    model.eval().save_pretrained(tmp_path / "hf")
    fast.save_pretrained(tmp_path / "hf")
    cfg, params, tok_dir = hfdir.read_hf_dir(str(tmp_path / "hf"))
    tok = hfdir.checked_tokenizer(tok_dir, cfg)
    assert (tok.cls_id, tok.sep_id, tok.pad_id) == (1, 2, 3)
    hfdir.write_hf_dir(str(tmp_path / "out"), cfg, params, tok)
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "out").eval()
    back_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    enc = back_tok(
        ["the quick [MASK] fox jumps over the lazy dog, the quick brown fox", "a"],
        return_tensors="pt",
        padding=True,
    )
    assert enc.input_ids.shape[1] > WINDOW
    assert (
        enc.input_ids[0].tolist()
        == fast("the quick [MASK] fox jumps over the lazy dog, the quick brown fox").input_ids
    )
    with torch.no_grad():
        _close("exported logits", model(**enc).logits.numpy(), back(**enc).logits.numpy())
