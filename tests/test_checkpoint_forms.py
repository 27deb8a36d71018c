"""Every checkpoint form of every family, against transformers.

For each family, transformers builds each form it has (small random config, every bias
and LayerNorm perturbed so that 0/1 initialisation hides no mapping bug) and saves it
with `save_pretrained`:

  bare encoder       BertModel, RobertaModel, AlbertModel, DistilBertModel, ElectraModel
  masked LM          *ForMaskedLM (ELECTRA: the generator alone)
  pretraining        BertForPreTraining, AlbertForPreTraining, ElectraForPreTraining
                     (the discriminator alone)
  sequence / token classification, question answering
                     *ForSequenceClassification (named labels; BERT also as a regression,
                     one output), *ForTokenClassification, *ForQuestionAnswering

bertjax imports the directory, must find exactly the form's heads, match transformers on
every output the form has (every hidden state, pooled vector and logits; <= 1e-5 in
float32, all finite), keep them through a bertjax model directory, and export the same
class with bit-identical tensors and the same labels, which transformers loads with no
missing or unexpected key.
"""

from __future__ import annotations

import json
import os
import shutil

import hflib
import jax
import modellib
import numpy as np
import pytest

from bertjax import modeldir
from bertjax.convert import hf, hfdir, statedict
from bertjax.models import build

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5
VOCAB, MAX_POS = 90, 40
SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=24,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=40,
    max_position_embeddings=MAX_POS,
)
LABELS = {"0": "negative", "1": "neutral", "2": "positive"}
TAGS = {str(i): t for i, t in enumerate(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])}


def _config(family: str, **kw):
    if family == "bert":
        return transformers.BertConfig(**SMALL, **kw)
    if family == "roberta":
        return transformers.RobertaConfig(
            **{**SMALL, "max_position_embeddings": MAX_POS + 2},
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            layer_norm_eps=1e-5,
            **kw,
        )
    if family == "albert":
        return transformers.AlbertConfig(
            **{**SMALL, "num_hidden_layers": 3}, embedding_size=16, num_hidden_groups=1, **kw
        )
    if family == "distilbert":
        return transformers.DistilBertConfig(
            vocab_size=VOCAB,
            dim=24,
            n_layers=2,
            n_heads=4,
            hidden_dim=40,
            max_position_embeddings=MAX_POS,
            **kw,
        )
    return transformers.ElectraConfig(**SMALL, embedding_size=16, **kw)


# family -> form -> (transformers class, the heads bertjax must find, config extras)
FORMS = {
    "bert": {
        "model": ("BertModel", ("pooler",), {}),
        "masked_lm": ("BertForMaskedLM", ("mlm",), {}),
        "pretraining": ("BertForPreTraining", ("pooler", "mlm", "nsp"), {}),
        "sequence": (
            "BertForSequenceClassification",
            ("pooler", "classifier"),
            {"id2label": LABELS},
        ),
        "token": ("BertForTokenClassification", ("token_classifier",), {"id2label": TAGS}),
        "qa": ("BertForQuestionAnswering", ("span",), {}),
        "regression": (
            "BertForSequenceClassification",
            ("pooler", "classifier"),
            {"num_labels": 1},
        ),
    },
    "roberta": {
        "model": ("RobertaModel", ("pooler",), {}),
        "masked_lm": ("RobertaForMaskedLM", ("mlm",), {}),
        "sequence": ("RobertaForSequenceClassification", ("classifier",), {"id2label": LABELS}),
        "token": ("RobertaForTokenClassification", ("token_classifier",), {"id2label": TAGS}),
        "qa": ("RobertaForQuestionAnswering", ("span",), {}),
    },
    "albert": {
        "model": ("AlbertModel", ("pooler",), {}),
        "masked_lm": ("AlbertForMaskedLM", ("mlm",), {}),
        "pretraining": ("AlbertForPreTraining", ("pooler", "mlm", "sop"), {}),
        "sequence": (
            "AlbertForSequenceClassification",
            ("pooler", "classifier"),
            {"id2label": LABELS},
        ),
        "token": ("AlbertForTokenClassification", ("token_classifier",), {"id2label": TAGS}),
        "qa": ("AlbertForQuestionAnswering", ("span",), {}),
    },
    "distilbert": {
        "model": ("DistilBertModel", (), {}),
        "masked_lm": ("DistilBertForMaskedLM", ("mlm",), {}),
        "sequence": ("DistilBertForSequenceClassification", ("classifier",), {"id2label": LABELS}),
        "token": ("DistilBertForTokenClassification", ("token_classifier",), {"id2label": TAGS}),
        "qa": ("DistilBertForQuestionAnswering", ("span",), {}),
    },
    "electra": {
        "model": ("ElectraModel", (), {}),
        "generator": ("ElectraForMaskedLM", ("mlm",), {}),
        "discriminator": ("ElectraForPreTraining", ("discriminator",), {}),
        "sequence": ("ElectraForSequenceClassification", ("classifier",), {"id2label": LABELS}),
        "token": ("ElectraForTokenClassification", ("token_classifier",), {"id2label": TAGS}),
        "qa": ("ElectraForQuestionAnswering", ("span",), {}),
    },
}
CASES = [(f, form) for f, forms in FORMS.items() for form in forms]

# Our logits key -> transformers' output field, per head.
OUTPUT = {
    "mlm": None,
    "nsp": "seq_relationship_logits",
    "sop": "sop_logits",
    "discriminator": "logits",
    "classifier": "logits",
    "token_classifier": "logits",
}


def _inputs(family: str, pad_id: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(3, VOCAB, (2, 9)).astype(np.int32)
    mask = np.ones((2, 9), np.int32)
    mask[1, 6:] = 0
    ids[1, 6:] = pad_id
    out = {"input_ids": ids, "attention_mask": mask}
    if family in ("bert", "albert", "electra"):
        types = np.zeros((2, 9), np.int32)
        types[0, 4:] = 1
        out["token_type_ids"] = types
    return out


def _close(what: str, ref, ours) -> None:
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    ours = np.asarray(ours)
    assert ref.shape == ours.shape, f"{what}: shape {ours.shape}, transformers {ref.shape}"
    assert np.isfinite(ref).all() and np.isfinite(ours).all(), f"{what}: not finite"
    diff = float(np.abs(ref.astype(np.float64) - ours.astype(np.float64)).max())
    assert diff <= TOL, f"{what}: max abs diff {diff:.3g} > {TOL}"


def _hf_states(family: str, states, inner: int = 1) -> list:
    return list(states)[::inner]


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}-{form}" for f, form in CASES])
def case(request, tmp_path_factory):
    family, form = request.param
    cls_name, heads, extra = FORMS[family][form]
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(_config(family, **extra))
    hflib.perturb(model, 1)
    model.eval()
    src = tmp_path_factory.mktemp(f"{family}_{form}")
    model.save_pretrained(src)
    return family, form, cls_name, heads, model, str(src)


def test_import_finds_the_heads_and_matches_transformers(case, tmp_path):
    family, form, cls_name, heads, model, src = case
    cfg, params, _ = hfdir.read_hf_dir(src)
    assert cfg.family == family and set(cfg.heads) == set(heads), cfg.heads
    assert [hf.architecture(p) for p in hf.parts(cfg)] == [cls_name]
    if any(h in heads for h in ("classifier", "token_classifier")):
        assert cfg.num_labels == model.config.num_labels
        names = [model.config.id2label[i] for i in range(cfg.num_labels)]
        assert cfg.label_names == (() if names == ["LABEL_0"] else tuple(names))

    inputs = _inputs(family, cfg.pad_token_id)
    apply = jax.jit(
        lambda p, x: build(cfg).apply(
            {"params": p}, x["input_ids"], x.get("token_type_ids"), x["attention_mask"]
        )
    )
    logits, out = apply(params, inputs)
    with torch.no_grad():
        ref = model(
            **{k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()},
            output_hidden_states=True,
        )
    inner = cfg.inner_group_num if family == "albert" else 1
    states = _hf_states(family, ref.hidden_states, inner)
    assert len(states) == len(out["hidden_states"]) == cfg.num_layers + 1
    for i, (r, o) in enumerate(zip(states, out["hidden_states"], strict=True)):
        _close(f"hidden_states[{i}]", r, o)
    if form == "model":
        _close("last_hidden_state", ref.last_hidden_state, out["sequence"])
        if "pooler" in heads:
            _close("pooled", ref.pooler_output, out["pooled"])
        assert logits == {}
    for head in heads:
        if head == "pooler":
            continue
        if head == "span":
            _close("start_logits", ref.start_logits, logits["span"][..., 0])
            _close("end_logits", ref.end_logits, logits["span"][..., 1])
        elif head == "mlm":
            field = "prediction_logits" if hasattr(ref, "prediction_logits") else "logits"
            _close("mlm", getattr(ref, field), logits["mlm"])
        else:
            _close(head, getattr(ref, OUTPUT[head]), logits[head])


def test_model_directory_then_export_is_the_same_transformers_model(case, tmp_path):
    family, form, cls_name, heads, model, src = case
    cfg, params, _ = hfdir.read_hf_dir(src)
    ckpt = str(tmp_path / "ckpt")
    modeldir.save(ckpt, cfg, params)
    saved_cfg, _ = modeldir.read_config(ckpt)
    assert saved_cfg.heads == cfg.heads  # the model directory records its heads
    out = str(tmp_path / "hf")
    assert hfdir.export_hf(ckpt, out) == [out]

    with open(os.path.join(src, "config.json")) as f:
        want = json.load(f)
    with open(os.path.join(out, "config.json")) as f:
        got = json.load(f)
    assert got["architectures"] == [cls_name] == want["architectures"]
    if any(h in heads for h in ("classifier", "token_classifier")):
        assert got["id2label"] == want["id2label"]
    a, b = statedict.read_state_dict(src), statedict.read_state_dict(out)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k

    loaded, info = getattr(transformers, cls_name).from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    assert loaded.config.num_labels == model.config.num_labels


def test_electra_pair_from_a_lone_discriminator_and_generator(tmp_path):
    """The two released halves, each imported alone, and the pair they make."""
    torch.manual_seed(0)
    disc = transformers.ElectraForPreTraining(_config("electra")).eval()
    gen = transformers.ElectraForMaskedLM(
        transformers.ElectraConfig(
            **{**SMALL, "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16},
            embedding_size=16,
        )
    ).eval()
    gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    for part, m in (("discriminator", disc), ("generator", gen)):
        m.save_pretrained(tmp_path / "pair" / part)
    alone = {
        part: hfdir.read_hf_dir(str(tmp_path / "pair" / part))[0]
        for part in ("discriminator", "generator")
    }
    assert alone["discriminator"].heads == ("discriminator",)
    assert alone["generator"].heads == ("mlm",) and alone["generator"].hidden_size == 8
    pair, params, _ = hfdir.read_hf_dir(str(tmp_path / "pair"))
    assert pair.heads == ("discriminator", "generator")
    assert pair.generator_config().hidden_size == 8
    assert [hf.architecture(p) for p in hf.parts(pair)] == [
        "ElectraForPreTraining",
        "ElectraForMaskedLM",
    ]
    assert set(params) == {"embeddings", "encoder", "discriminator", "generator"}


def test_export_of_heads_no_class_holds_is_refused():
    cfg = modellib.tiny(
        "bert",
        modellib.SIZES,
        vocab_size=VOCAB,
        hidden_size=24,
        num_layers=1,
        intermediate_size=40,
        max_position_embeddings=512,  # ModelConfig's default: the size this test always had
        heads=("mlm", "span"),
    )
    with pytest.raises(
        hf.ConversionError, match="no transformers bert class holds the heads mlm, span"
    ):
        hf.hf_configs(cfg)


def test_model_directories_without_digests_are_refused(tmp_path):
    """A model directory must carry params_sha256, model_sha256 and tokenizer_sha256:
    one without any of them cannot be verified and is refused in one line, before its
    parameters are read."""
    torch.manual_seed(0)
    transformers.BertForMaskedLM(_config("bert")).save_pretrained(tmp_path / "hf")
    cfg, params, _ = hfdir.read_hf_dir(str(tmp_path / "hf"))
    good = str(tmp_path / "good")
    modeldir.save(good, cfg, params)
    for key in ("params_sha256", "model_sha256", "tokenizer_sha256"):
        ckpt = tmp_path / key
        shutil.copytree(good, ckpt)
        meta = json.loads((ckpt / "config.json").read_text())
        del meta[key]
        (ckpt / "config.json").write_text(json.dumps(meta))
        with pytest.raises(
            ValueError, match=f"config.json: no {key}; the directory cannot be verified"
        ):
            modeldir.load(str(ckpt))
    loaded_cfg, loaded = modeldir.load(good)
    assert loaded_cfg == cfg
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_a_damaged_model_directory_names_the_files_that_differ(tmp_path):
    """params_files records each file's size and sha256: a truncated, a deleted and an
    added file are named in the one line (by hand: the damage done here); a directory
    written before that record existed gets the line without names."""
    torch.manual_seed(0)
    transformers.BertForMaskedLM(_config("bert")).save_pretrained(tmp_path / "hf")
    cfg, params, _ = hfdir.read_hf_dir(str(tmp_path / "hf"))
    good = tmp_path / "good"
    modeldir.save(str(good), cfg, params)
    meta = json.loads((good / "config.json").read_text())
    files = sorted((p for p in (good / "params").rglob("*") if p.is_file()), key=lambda p: str(p))
    assert sorted(meta["params_files"]) == [str(p.relative_to(good / "params")) for p in files]
    biggest = max(files, key=lambda p: p.stat().st_size)
    name = str(biggest.relative_to(good / "params"))
    assert meta["params_files"][name][0] == biggest.stat().st_size

    damaged = tmp_path / "damaged"
    shutil.copytree(good, damaged)
    size = biggest.stat().st_size
    with open(damaged / "params" / name, "r+b") as f:
        f.truncate(size - 1)
    os.remove(damaged / "params" / "manifest.ocdbt")
    (damaged / "params" / "stray.txt").write_text("x")
    with pytest.raises(ValueError) as e:
        modeldir.load(str(damaged))
    message = str(e.value)
    assert "\n" not in message and message.endswith("; the directory is damaged"), message
    assert "(params_sha256; manifest.ocdbt missing; stray.txt not recorded; " in message
    assert f"{name} {size - 1:,} bytes, {size:,} recorded)" in message, message

    old = tmp_path / "old"  # no params_files: the digest alone
    shutil.copytree(damaged, old)
    meta.pop("params_files")
    (old / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"\(params_sha256\); the directory is damaged$"):
        modeldir.load(str(old))
