"""Google's original TF checkpoints -> bertjax: forward parity with transformers.

Each test builds a random tiny transformers model, writes its weights as a TF1
checkpoint under Google's variable names (spelled out here, independently of
`bertjax.convert.google`), imports it with `google.load` and compares logits.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from bertjax.convert import google, google_checkpoint  # noqa: E402
from bertjax.convert.hf import ConversionError  # noqa: E402
from bertjax.models import build  # noqa: E402

torch.set_default_dtype(torch.float32)
VOCAB = 99
TOL = 1e-5


# --- helpers -----------------------------------------------------------------------------


def save_tf1(prefix: str, tensors: dict[str, np.ndarray]) -> None:
    """A V2 checkpoint bundle whose keys are exactly `tensors`' names (TF1 style)."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tensors[n] for n in names],
    )


def with_training_vars(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Adds optimizer slots and counters that the import must skip."""
    out = dict(tensors)
    for name, arr in tensors.items():
        out[f"{name}/adam_m"] = np.zeros_like(arr)
        out[f"{name}/adam_v"] = np.ones_like(arr)
    out["global_step"] = np.int64(1000)
    return out


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial values everywhere (biases and LayerNorms too), kept small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.15 * torch.randn(p.shape, generator=g))


def state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def write_vocab(directory: str, n: int = VOCAB) -> None:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(n - 5)]
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(words) + "\n")


def inputs(length: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two rows; the second is padded (mask 0) and both mix segments 0 and 1."""
    rng = np.random.default_rng(0)
    ids = rng.integers(5, VOCAB, size=(2, length)).astype(np.int32)
    mask = np.ones((2, length), np.int32)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    types = np.zeros((2, length), np.int32)
    types[0, 4:] = 1
    types[1, 3:6] = 1
    return ids, types, mask


def torch_inputs() -> dict[str, torch.Tensor]:
    ids, types, mask = inputs()
    return dict(
        input_ids=torch.tensor(ids, dtype=torch.long),
        token_type_ids=torch.tensor(types, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
    )


def ours(cfg, params) -> dict[str, np.ndarray]:
    ids, types, mask = inputs()
    logits, _ = build(cfg).apply({"params": params}, ids, token_type_ids=types, attention_mask=mask)
    return {k: np.asarray(v) for k, v in logits.items()}


def assert_close(name: str, got: np.ndarray, want: torch.Tensor) -> None:
    want = want.detach().numpy()
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert np.isfinite(got).all(), f"{name}: NaN/inf in bertjax logits"
    assert np.isfinite(want).all(), f"{name}: NaN/inf in transformers logits"
    err = float(np.max(np.abs(got - want)))
    assert err < TOL, f"{name}: max abs diff {err:.3g}"


# Google's names, written out by hand: (Google scope, HF module) inside one layer.
BERT_LAYER_DENSE = [
    ("attention/self/query", "attention.self.query"),
    ("attention/self/key", "attention.self.key"),
    ("attention/self/value", "attention.self.value"),
    ("attention/output/dense", "attention.output.dense"),
    ("intermediate/dense", "intermediate.dense"),
    ("output/dense", "output.dense"),
]
BERT_LAYER_NORMS = [
    ("attention/output/LayerNorm", "attention.output.LayerNorm"),
    ("output/LayerNorm", "output.LayerNorm"),
]
ALBERT_LAYER_DENSE = [
    ("attention_1/self/query", "attention.query"),
    ("attention_1/self/key", "attention.key"),
    ("attention_1/self/value", "attention.value"),
    ("attention_1/output/dense", "attention.dense"),
    ("ffn_1/intermediate/dense", "ffn"),
    ("ffn_1/intermediate/output/dense", "ffn_output"),
]
ALBERT_LAYER_NORMS = [
    ("LayerNorm", "attention.LayerNorm"),
    ("LayerNorm_1", "full_layer_layer_norm"),
]


def dense(out: dict, scope: str, sd: dict, module: str) -> None:
    out[f"{scope}/kernel"] = np.ascontiguousarray(sd[f"{module}.weight"].T)  # [in, out]
    out[f"{scope}/bias"] = sd[f"{module}.bias"]


def norm(out: dict, scope: str, sd: dict, module: str) -> None:
    out[f"{scope}/gamma"] = sd[f"{module}.weight"]
    out[f"{scope}/beta"] = sd[f"{module}.bias"]


def embeddings(out: dict, scope: str, sd: dict, module: str) -> None:
    for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        out[f"{scope}/{table}"] = sd[f"{module}.{table}.weight"]
    norm(out, f"{scope}/LayerNorm", sd, f"{module}.LayerNorm")


def bert_like_layers(out: dict, scope: str, sd: dict, module: str, n: int) -> None:
    for i in range(n):
        for g, h in BERT_LAYER_DENSE:
            dense(out, f"{scope}/layer_{i}/{g}", sd, f"{module}.{i}.{h}")
        for g, h in BERT_LAYER_NORMS:
            norm(out, f"{scope}/layer_{i}/{g}", sd, f"{module}.{i}.{h}")


# --- BERT --------------------------------------------------------------------------------

BERT_CONFIG = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=24,
    type_vocab_size=2,
    initializer_range=0.02,
)


@pytest.fixture(scope="module")
def bert():
    """(transformers model, Google-named tensors) of a tiny random BERT."""
    cfg = transformers.BertConfig(**BERT_CONFIG, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(cfg).eval()
    randomize(model, 0)
    sd = state(model)
    g: dict[str, np.ndarray] = {}
    embeddings(g, "bert/embeddings", sd, "bert.embeddings")
    bert_like_layers(g, "bert/encoder", sd, "bert.encoder.layer", 2)
    dense(g, "bert/pooler/dense", sd, "bert.pooler.dense")
    dense(g, "cls/predictions/transform/dense", sd, "cls.predictions.transform.dense")
    norm(g, "cls/predictions/transform/LayerNorm", sd, "cls.predictions.transform.LayerNorm")
    g["cls/predictions/output_bias"] = sd["cls.predictions.bias"]
    g["cls/seq_relationship/output_weights"] = sd["cls.seq_relationship.weight"]  # [2, H]
    g["cls/seq_relationship/output_bias"] = sd["cls.seq_relationship.bias"]
    return model, g


def write_bert(directory, tensors: dict[str, np.ndarray], config: dict | None = None) -> str:
    directory = str(directory)
    save_tf1(os.path.join(directory, "bert_model.ckpt"), with_training_vars(tensors))
    with open(os.path.join(directory, "bert_config.json"), "w") as f:
        json.dump(config or BERT_CONFIG, f)
    write_vocab(directory)
    return directory


def test_bert_parity(bert, tmp_path):
    model, tensors = bert
    directory = write_bert(tmp_path, tensors)
    assert google_checkpoint.is_google_checkpoint(directory)
    assert tf.train.load_checkpoint(
        os.path.join(directory, "bert_model.ckpt")
    ).get_variable_to_shape_map()["bert/encoder/layer_0/attention/self/query/kernel"] == [32, 32]

    cfg, params, files = google.load(directory)
    assert (cfg.family, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.hidden_act) == (
        "bert",
        32,
        2,
        4,
        "gelu",
    )
    assert files == {"vocab.txt": os.path.join(directory, "vocab.txt")}
    got = ours(cfg, params)
    with torch.no_grad():
        want = model(**torch_inputs())
    assert_close("mlm", got["mlm"], want.prediction_logits)
    assert_close("nsp", got["nsp"], want.seq_relationship_logits)


# --- ALBERT ------------------------------------------------------------------------------


def albert_case(embedding_size: int, seed: int):
    """(HF model, Google tensors, albert_config.json) of a tiny ALBERT with 2 groups x 2
    inner layers over 4 layers."""
    google_cfg = dict(
        vocab_size=VOCAB,
        embedding_size=embedding_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_hidden_groups=2,
        inner_group_num=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_act="gelu",
        hidden_dropout_prob=0,
        attention_probs_dropout_prob=0,
        max_position_embeddings=24,
        type_vocab_size=2,
        initializer_range=0.02,
        down_scale_factor=1,
        net_structure_type=0,
        gap_size=0,
        num_memory_blocks=0,
        layers_to_keep=[],
    )
    # google-research/albert's "gelu" is the tanh approximation: HF's gelu_new.
    hf_cfg = {
        k: v
        for k, v in google_cfg.items()
        if k
        not in (
            "down_scale_factor",
            "net_structure_type",
            "gap_size",
            "num_memory_blocks",
            "layers_to_keep",
        )
    }
    hf_cfg["hidden_act"] = "gelu_new"
    torch.manual_seed(seed)
    model = transformers.AlbertForPreTraining(
        transformers.AlbertConfig(**hf_cfg, attn_implementation="eager")
    ).eval()
    randomize(model, seed)
    mapping = model.albert.encoder.embedding_hidden_mapping_in
    if embedding_size == 32:  # Google has no mapping when E == H: it is the identity
        with torch.no_grad():
            mapping.weight.copy_(torch.eye(32))
            mapping.bias.zero_()
    sd = state(model)
    g: dict[str, np.ndarray] = {}
    embeddings(g, "bert/embeddings", sd, "albert.embeddings")
    if embedding_size != 32:
        dense(
            g,
            "bert/encoder/embedding_hidden_mapping_in",
            sd,
            "albert.encoder.embedding_hidden_mapping_in",
        )
    for grp in range(2):
        for j in range(2):
            scope = f"bert/encoder/transformer/group_{grp}/inner_group_{j}"
            module = f"albert.encoder.albert_layer_groups.{grp}.albert_layers.{j}"
            for gn, hn in ALBERT_LAYER_DENSE:
                dense(g, f"{scope}/{gn}", sd, f"{module}.{hn}")
            for gn, hn in ALBERT_LAYER_NORMS:
                norm(g, f"{scope}/{gn}", sd, f"{module}.{hn}")
    dense(g, "bert/pooler/dense", sd, "albert.pooler")
    dense(g, "cls/predictions/transform/dense", sd, "predictions.dense")
    norm(g, "cls/predictions/transform/LayerNorm", sd, "predictions.LayerNorm")
    g["cls/predictions/output_bias"] = sd["predictions.bias"]
    g["cls/seq_relationship/output_weights"] = sd["sop_classifier.classifier.weight"]
    g["cls/seq_relationship/output_bias"] = sd["sop_classifier.classifier.bias"]
    return model, g, google_cfg


@pytest.mark.parametrize("embedding_size", [16, 32])
def test_albert_parity(tmp_path, embedding_size):
    model, tensors, google_cfg = albert_case(embedding_size, seed=embedding_size)
    save_tf1(str(tmp_path / "model.ckpt-best"), with_training_vars(tensors))
    (tmp_path / "albert_config.json").write_text(json.dumps(google_cfg))
    (tmp_path / "30k-clean.model").write_bytes(b"not parsed by the import")
    (tmp_path / "30k-clean.vocab").write_text("<pad>\t0\n")

    cfg, params, files = google.load(str(tmp_path))
    assert (cfg.family, cfg.embed_dim, cfg.num_groups, cfg.inner_group_num, cfg.hidden_act) == (
        "albert",
        embedding_size,
        2,
        2,
        "gelu_new",
    )
    assert files == {"spiece.model": str(tmp_path / "30k-clean.model")}
    got = ours(cfg, params)
    with torch.no_grad():
        want = model(**torch_inputs())
    assert_close("mlm", got["mlm"], want.prediction_logits)
    assert_close("sop", got["sop"], want.sop_logits)


# --- ELECTRA -----------------------------------------------------------------------------


def electra_case(hidden: int, heads: int, embed: int, gen_hidden: int, gen_layers: int, seed: int):
    """(discriminator, generator, Google tensors); the generator shares the embeddings."""
    common = dict(
        vocab_size=VOCAB,
        embedding_size=embed,
        max_position_embeddings=24,
        type_vocab_size=2,
        hidden_act="gelu",
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    disc = transformers.ElectraForPreTraining(
        transformers.ElectraConfig(
            **common,
            hidden_size=hidden,
            num_hidden_layers=2,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
        )
    ).eval()
    gen = transformers.ElectraForMaskedLM(
        transformers.ElectraConfig(
            **common,
            hidden_size=gen_hidden,
            num_hidden_layers=gen_layers,
            num_attention_heads=max(1, gen_hidden // 64),
            intermediate_size=3 * gen_hidden,
        )
    ).eval()
    randomize(disc, seed)
    randomize(gen, seed + 1)
    gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    d, s = state(disc), state(gen)
    assert np.array_equal(
        s["generator_lm_head.weight"], d["electra.embeddings.word_embeddings.weight"]
    )
    g: dict[str, np.ndarray] = {}
    embeddings(g, "electra/embeddings", d, "electra.embeddings")
    if embed != hidden:
        dense(g, "electra/embeddings_project", d, "electra.embeddings_project")
    bert_like_layers(g, "electra/encoder", d, "electra.encoder.layer", 2)
    dense(g, "discriminator_predictions/dense", d, "discriminator_predictions.dense")
    dense(g, "discriminator_predictions/dense_1", d, "discriminator_predictions.dense_prediction")
    if embed != gen_hidden:
        dense(g, "generator/embeddings_project", s, "electra.embeddings_project")
    bert_like_layers(g, "generator/encoder", s, "electra.encoder.layer", gen_layers)
    dense(g, "generator_predictions/dense", s, "generator_predictions.dense")
    norm(g, "generator_predictions/LayerNorm", s, "generator_predictions.LayerNorm")
    g["generator_predictions/output_bias"] = s["generator_lm_head.bias"]
    return disc, gen, g


@pytest.mark.parametrize("variant", ["shapes_only", "hparams"])
def test_electra_parity(tmp_path, variant):
    if variant == "shapes_only":  # heads from ELECTRA's hidden // 64 rule; E < H
        disc, gen, tensors = electra_case(
            hidden=128, heads=2, embed=16, gen_hidden=64, gen_layers=1, seed=3
        )
    else:  # hparams.json overrides the discriminator's heads; E == H, generator projects
        disc, gen, tensors = electra_case(
            hidden=64, heads=4, embed=64, gen_hidden=32, gen_layers=2, seed=5
        )
        (tmp_path / "hparams.json").write_text(
            json.dumps(
                {
                    "model_size": "small",
                    "vocab_size": VOCAB,
                    "embedding_size": 64,
                    "generator_hidden_size": 0.5,
                    "model_hparam_overrides": {"hidden_size": 64, "num_attention_heads": 4},
                }
            )
        )
    # The `checkpoint` state file names the newest checkpoint by its training path.
    save_tf1(str(tmp_path / "model.ckpt-20"), with_training_vars(tensors))
    save_tf1(str(tmp_path / "model.ckpt-10"), {"something/else": np.zeros(3, np.float32)})
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "gs://bucket/electra/model.ckpt-20"\n'
        'all_model_checkpoint_paths: "gs://bucket/electra/model.ckpt-10"\n'
    )
    write_vocab(str(tmp_path))

    cfg, params, files = google.load(str(tmp_path))
    gcfg = cfg.generator_config()
    assert cfg.family == "electra" and files == {"vocab.txt": str(tmp_path / "vocab.txt")}
    assert (cfg.hidden_size, cfg.num_heads) == (
        disc.config.hidden_size,
        disc.config.num_attention_heads,
    )
    assert (gcfg.hidden_size, gcfg.num_heads, gcfg.num_layers) == (
        gen.config.hidden_size,
        gen.config.num_attention_heads,
        gen.config.num_hidden_layers,
    )
    got = ours(cfg, params)
    with torch.no_grad():
        want_gen = gen(**torch_inputs()).logits
        want_disc = disc(**torch_inputs()).logits
    assert_close("generator mlm", got["generator"], want_gen)
    assert_close("discriminator rtd", got["discriminator"], want_disc)


# --- errors ------------------------------------------------------------------------------


def test_unknown_variable_is_named(bert, tmp_path):
    _, tensors = bert
    bad = {**tensors, "cls/squad/output_weights": np.zeros((2, 32), np.float32)}
    with pytest.raises(ConversionError, match="unknown variable cls/squad/output_weights"):
        google.load(write_bert(tmp_path, bad))


def test_wrong_shape_is_named(bert, tmp_path):
    _, tensors = bert
    name = "bert/encoder/layer_1/intermediate/dense/kernel"
    bad = {**tensors, name: np.ascontiguousarray(tensors[name].T)}  # [37, 32], not [32, 37]
    with pytest.raises(ConversionError, match=f"variable {name} has shape \\(37, 32\\)"):
        google.load(write_bert(tmp_path, bad))


def test_missing_variable_is_named(bert, tmp_path):
    _, tensors = bert
    bad = {k: v for k, v in tensors.items() if k != "cls/predictions/output_bias"}
    with pytest.raises(ConversionError, match="variable cls/predictions/output_bias is missing"):
        google.load(write_bert(tmp_path, bad))


def test_config_that_does_not_fit_is_named(bert, tmp_path):
    _, tensors = bert
    directory = write_bert(tmp_path, tensors, {**BERT_CONFIG, "intermediate_size": 40})
    with pytest.raises(ConversionError, match="bert_config.json needs"):
        google.load(directory)


def test_missing_config_is_named(bert, tmp_path):
    _, tensors = bert
    directory = write_bert(tmp_path, tensors)
    os.remove(os.path.join(directory, "bert_config.json"))
    with pytest.raises(ConversionError, match="bert_config.json: missing"):
        google.load(directory)


def test_missing_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert not google_checkpoint.is_google_checkpoint(str(tmp_path))
    assert not google_checkpoint.is_google_checkpoint(str(tmp_path / "nowhere"))
    with pytest.raises(ConversionError, match="no TensorFlow checkpoint"):
        google.load(str(tmp_path))


def test_vocab_larger_than_embeddings(bert, tmp_path):
    _, tensors = bert
    directory = write_bert(tmp_path, tensors)
    write_vocab(directory, VOCAB + 1)
    with pytest.raises(ConversionError, match="vocab.txt: 100 tokens"):
        google.load(directory)


def test_cli_import_then_export_loads_in_transformers(bert, tmp_path):
    """The whole path a user takes: Google dir -> `import` -> `export` -> transformers."""
    from clilib import bertjax

    model, tensors = bert
    src = write_bert(tmp_path / "uncased_L-2_H-32_A-4", tensors)
    bertjax("import", f"--from={src}", f"--out={tmp_path}/ckpt", ok=True)
    bertjax("export", f"--checkpoint={tmp_path}/ckpt", f"--out={tmp_path}/hf", ok=True)
    exported, info = transformers.AutoModelForPreTraining.from_pretrained(
        f"{tmp_path}/hf", output_loading_info=True
    )
    assert not any(info.values()), info
    with torch.no_grad():
        want, got = model(**torch_inputs()), exported.eval()(**torch_inputs())
    assert_close("mlm", got.prediction_logits.numpy(), want.prediction_logits)
    assert_close("nsp", got.seq_relationship_logits.numpy(), want.seq_relationship_logits)
    tok = transformers.AutoTokenizer.from_pretrained(f"{tmp_path}/hf")
    assert tok.do_lower_case  # "uncased" in the directory name
    assert tok("W3 w4")["input_ids"] == [2, 8, 9, 3]
