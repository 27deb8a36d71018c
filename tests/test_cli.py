"""End to end through the command line: import, export, fill_mask, describe, init.

References are transformers' PyTorch models, tokenizers and fill-mask pipeline on
the same files; each CLI call runs in a subprocess, as a user would run it.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import clilib  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = [
    "the quick brown fox jumps over the lazy dog near the river bank",
    "a journey of a thousand miles begins with a single step forward",
    "all that glitters is not gold and all who wander are not lost",
    "the early bird catches the worm but the second mouse gets the cheese",
    "to be or not to be that is the question asked by the prince",
] * 20


bertjax = functools.partial(clilib.bertjax, ok=True)  # ok=False: expects a failure


def wordpiece_vocab(path: str) -> int:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        TEXT,
        trainers.WordPieceTrainer(
            vocab_size=150,
            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            show_progress=False,
        ),
    )
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    with open(path, "w") as f:
        f.write("".join(t + "\n" for t, _ in vocab))
    return len(vocab)


def sharpen(model) -> None:
    """Random init gives near-uniform MLM scores; spread them so top-k order is stable."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * (3.0 if p.numel() > 100 else 0.2))


def save_hf(d: str, model, tok) -> str:
    sharpen(model)
    assert len(tok) > 100  # the trained vocabulary, not just the special tokens
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("hf_bert"))
    n = wordpiece_vocab(os.path.join(d, "vocab.txt"))
    tok = transformers.BertTokenizer.from_pretrained(d)  # v5 reads vocab.txt this way
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(
        transformers.BertConfig(
            vocab_size=n,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=64,
        )
    ).eval()
    return save_hf(d, model, tok)


@pytest.fixture(scope="module")
def hf_roberta(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("hf_roberta"))
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        TEXT,
        vocab_size=400,
        min_frequency=1,
        show_progress=False,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(d)
    tok = transformers.RobertaTokenizer.from_pretrained(d)
    torch.manual_seed(0)
    model = transformers.RobertaForMaskedLM(
        transformers.RobertaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=66,
            type_vocab_size=1,
        )
    ).eval()
    return save_hf(d, model, tok)


@pytest.fixture(scope="module")
def hf_electra(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("hf_electra"))
    n = wordpiece_vocab(os.path.join(d, "vocab.txt"))
    tok = transformers.ElectraTokenizer.from_pretrained(d)
    common = dict(vocab_size=n, embedding_size=16, num_hidden_layers=2, max_position_embeddings=64)
    torch.manual_seed(0)
    disc = transformers.ElectraForPreTraining(
        transformers.ElectraConfig(
            **common, hidden_size=32, num_attention_heads=4, intermediate_size=37
        )
    ).eval()
    gen = transformers.ElectraForMaskedLM(
        transformers.ElectraConfig(
            **common, hidden_size=8, num_attention_heads=2, intermediate_size=16
        )
    ).eval()
    sharpen(gen)
    gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())  # shared
    for part, m in (("discriminator", disc), ("generator", gen)):
        m.save_pretrained(os.path.join(d, part))
        tok.save_pretrained(os.path.join(d, part))
    return d


@pytest.fixture(scope="module")
def hf_bert_parts(tmp_path_factory):
    """A bare BertModel encoder, and a BertForMaskedLM built on that encoder (no pooler, no
    NSP head): the form most BERT checkpoints take once saved as an MLM."""
    d = str(tmp_path_factory.mktemp("hf_bert_parts"))
    n = wordpiece_vocab(os.path.join(d, "vocab.txt"))
    tok = transformers.BertTokenizer.from_pretrained(d)
    config = transformers.BertConfig(
        vocab_size=n,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    torch.manual_seed(1)
    encoder = transformers.BertModel(config).eval()
    sharpen(encoder)
    mlm = transformers.BertForMaskedLM(config).eval()
    info = mlm.bert.load_state_dict(encoder.state_dict(), strict=False)
    assert sorted(info.unexpected_keys) == ["pooler.dense.bias", "pooler.dense.weight"]
    sharpen(mlm.cls)  # the fresh MLM head: a meaningful top-k order
    out = {}
    for name, model in (("encoder", encoder), ("mlm", mlm)):
        out[name] = os.path.join(d, name)
        model.save_pretrained(out[name])
        tok.save_pretrained(out[name])
    return out


@pytest.fixture(scope="module")
def hf_bert_mlm(hf_bert_parts):
    return hf_bert_parts["mlm"]


@pytest.fixture(scope="module")
def hf_electra_generator(hf_electra):
    return os.path.join(hf_electra, "generator")  # a released generator, alone


@pytest.fixture(scope="module")
def hf_electra_discriminator(hf_electra):
    return os.path.join(hf_electra, "discriminator")


def imported(hf_dir: str, tmp_path, name: str = "ckpt") -> str:
    out = str(tmp_path / name)
    r = bertjax("import", f"--from={hf_dir}", f"--out={out}")
    assert "imported" in r.stdout
    return out


def fill_mask_lines(ckpt: str, text: str, k: int) -> list[dict]:
    r = bertjax("fill_mask", f"--checkpoint={ckpt}", f"--top_k={k}", text)
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.mark.parametrize(
    "fixture, text, sub",
    [
        ("hf_bert", "the quick brown [MASK] jumps over the lazy dog", ""),
        ("hf_roberta", "the quick brown<mask> jumps over the lazy dog", ""),
        ("hf_electra", "a journey of a [MASK] miles begins", "generator"),
        ("hf_bert_mlm", "the quick brown [MASK] jumps over the lazy dog", ""),
        ("hf_electra_generator", "a journey of a [MASK] miles begins", ""),
    ],
)
def test_fill_mask_matches_the_transformers_pipeline(fixture, text, sub, request, tmp_path):
    hf_dir = request.getfixturevalue(fixture)
    ckpt = imported(hf_dir, tmp_path)
    ours = fill_mask_lines(ckpt, text, 5)
    ref_dir = os.path.join(hf_dir, sub) if sub else hf_dir
    pipe = transformers.pipeline("fill-mask", model=ref_dir, tokenizer=ref_dir, device="cpu")
    ref = pipe(text, top_k=5)
    assert [o["token_id"] for o in ours] == [r["token"] for r in ref]
    assert [o["token"] for o in ours] == [r["token_str"] for r in ref]
    np.testing.assert_allclose(
        [o["score"] for o in ours], [r["score"] for r in ref], atol=1e-4, rtol=0
    )
    assert ref[0]["score"] > 1.5 * ref[-1]["score"]  # the order is meaningful, not noise


@pytest.mark.parametrize(
    "fixture", ["hf_bert", "hf_roberta", "hf_electra", "hf_bert_mlm", "hf_electra_discriminator"]
)
def test_import_export_is_bit_exact_and_loads_in_transformers(fixture, request, tmp_path):
    hf_dir = request.getfixturevalue(fixture)
    ckpt = imported(hf_dir, tmp_path)
    with open(os.path.join(ckpt, "config.json")) as f:
        heads = json.load(f)["model"]["heads"]  # the model directory records its heads
    assert (
        heads
        == {
            "hf_bert": ["pooler", "mlm", "nsp"],
            "hf_roberta": ["mlm"],
            "hf_electra": ["discriminator", "generator"],
            "hf_bert_mlm": ["mlm"],
            "hf_electra_discriminator": ["discriminator"],
        }[fixture]
    )
    out = str(tmp_path / "exported")
    r = bertjax("export", f"--checkpoint={ckpt}", f"--out={out}")
    parts = ["discriminator", "generator"] if fixture == "hf_electra" else [""]
    assert r.stdout.count("wrote") == len(parts)
    for part in parts:
        src, dst = os.path.join(hf_dir, part), os.path.join(out, part)
        a, b = (
            load_file(os.path.join(src, "model.safetensors")),
            load_file(os.path.join(dst, "model.safetensors")),
        )
        assert sorted(a) == sorted(b)
        for k in a:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
        with open(os.path.join(src, "config.json")) as f:
            cls_name = json.load(f)["architectures"][0]
        with open(os.path.join(dst, "config.json")) as f:
            assert json.load(f)["architectures"] == [cls_name]  # the same class back
        model, info = getattr(transformers, cls_name).from_pretrained(dst, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        assert not info["mismatched_keys"], info
        tok_ref = transformers.AutoTokenizer.from_pretrained(src)
        tok_out = transformers.AutoTokenizer.from_pretrained(dst)
        assert type(tok_out).__name__ == type(tok_ref).__name__
        for text in TEXT[:5] + ["Unseen wörds, CAPS & émoji 👍 [MASK] <mask>"]:
            assert tok_out(text)["input_ids"] == tok_ref(text)["input_ids"]


def test_import_export_and_fill_mask_through_a_bucket(hf_bert, bucket, tmp_path):
    """The same conversions with every path in a bucket (the local Cloud Storage
    emulator): the transformers directory read from it, the model directory and the
    export written to it, bit-exact as on disk; fill_mask reads the model from it."""
    from bertjax import paths

    src = bucket + "/hf"
    for name in paths.walk_files(hf_bert):
        paths.upload(os.path.join(hf_bert, name), f"{src}/{name}")
    ckpt, out = bucket + "/ckpt", bucket + "/exported"
    r = bertjax("import", f"--from={src}", f"--out={ckpt}")
    assert f"from {src} to {ckpt}" in r.stdout
    assert paths.isfile(f"{ckpt}/config.json") and paths.isdir(f"{ckpt}/tokenizer")
    r = bertjax("export", f"--checkpoint={ckpt}", f"--out={out}")
    assert f"wrote {out}" in r.stdout
    with paths.local_copy(out) as local:
        a = load_file(os.path.join(hf_bert, "model.safetensors"))
        b = load_file(os.path.join(local, "model.safetensors"))
        assert sorted(a) == sorted(b)
        for k in a:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
        tok_ref = transformers.AutoTokenizer.from_pretrained(hf_bert)
        tok_out = transformers.AutoTokenizer.from_pretrained(local)
        assert tok_out(TEXT[0])["input_ids"] == tok_ref(TEXT[0])["input_ids"]
    on_disk = imported(hf_bert, tmp_path)
    text = "the quick brown [MASK] jumps over the lazy dog"
    assert fill_mask_lines(ckpt, text, 5) == fill_mask_lines(on_disk, text, 5)
    # Refusals as on disk, and nothing half-published.
    _assert_clean_failure(
        bertjax("export", f"--checkpoint={ckpt}", f"--out={out}", ok=False),
        out,
        "already exists",
        "--overwrite",
    )
    _assert_clean_failure(
        bertjax("export", f"--checkpoint={bucket}/nowhere", f"--out={bucket}/x", ok=False),
        f"{bucket}/nowhere",
    )
    assert not paths.exists(f"{bucket}/x")


@pytest.mark.parametrize("command", ["prepare data", "train"])
def test_a_missing_bucket_stops_a_job_before_its_work(command, bucket):
    missing = bucket + "-missing"
    flag = "--config.data.dir" if command == "prepare data" else "--workdir"
    r = bertjax(
        *command.split(),
        "--config=configs/pretrain.py:bert_tiny,runlocal",
        f"{flag}={missing}/x",
        ok=False,
    )
    _assert_clean_failure(r, f"{missing}: no such bucket")
    assert "training a wordpiece tokenizer" not in r.stdout


def test_init_then_fill_mask_and_export(tmp_path):
    ckpt = str(tmp_path / "tiny")
    r = bertjax("init", "--config=configs/pretrain.py:bert_tiny", f"--out={ckpt}")
    assert "total" in r.stdout and "4,433,468" in r.stdout  # BertForPreTraining L2/H128
    lines = fill_mask_lines(ckpt, "The capital of France is [MASK].", 3)
    assert len(lines) == 3 and lines[0]["score"] >= lines[1]["score"] >= lines[2]["score"]
    out = str(tmp_path / "hf")
    bertjax("export", f"--checkpoint={ckpt}", f"--out={out}")
    model, info = transformers.AutoModelForPreTraining.from_pretrained(
        out, output_loading_info=True
    )
    assert not any(info.values()), info
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok("The capital of France is [MASK].", return_tensors="pt")
    with torch.no_grad():
        # The model's 30,522 rows exceed the 8,000-token demo vocabulary; like fill_mask,
        # rank only ids the tokenizer can produce.
        probs = model(**ids).prediction_logits[0].softmax(-1)[:, : len(tok)]
    pos = ids["input_ids"][0].tolist().index(tok.mask_token_id)
    assert tok.decode([int(probs[pos].argmax())]) == lines[0]["token"]
    assert abs(float(probs[pos].max()) - lines[0]["score"]) < 1e-4


def _flip_bytes(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    open(path, "wb").write(bytes(data))


def test_damaged_model_dirs_are_named_in_one_line_and_nothing_is_written(tmp_path):
    import json
    import shutil

    import numpy as np

    from bertjax import modeldir

    good = str(tmp_path / "good")
    bertjax("init", "--config=configs/pretrain.py:bert_tiny,runlocal", f"--out={good}")

    def copy(name: str) -> str:
        return shutil.copytree(good, str(tmp_path / name))

    def rewrite_config(path: str, edit) -> None:
        meta = json.load(open(os.path.join(path, "config.json")))
        edit(meta)
        json.dump(meta, open(os.path.join(path, "config.json"), "w"))

    flipped = copy("flipped")  # the largest tensor file: same size, other bytes
    data_files = [
        os.path.join(r, f)
        for r, _, fs in os.walk(os.path.join(flipped, "params"))
        for f in fs
        if os.sep + "d" + os.sep in os.path.join(r, f)
    ]
    _flip_bytes(max(data_files, key=os.path.getsize))
    missing = copy("missing")  # no digest: refused, whatever else is wrong
    os.remove(os.path.join(missing, "params", "manifest.ocdbt"))
    rewrite_config(missing, lambda m: m.pop("params_sha256"))
    edited = copy("edited")  # an architecture field changed by hand
    rewrite_config(edited, lambda m: m["model"].update(layer_norm_eps=0.5))
    retokenized = copy("retokenized")  # a tokenizer file changed after the save
    with open(os.path.join(retokenized, "tokenizer", "tokenizer_config.json"), "a") as f:
        f.write(" ")

    def widen(meta):  # config.json disagreeing with the parameters, its digest redone
        meta["model"].update(hidden_size=256)
        meta["model_sha256"] = modeldir.model_digest(meta["model"])

    wider = copy("wider")
    rewrite_config(wider, widen)
    cfg, params = modeldir.load(good)
    table = np.array(params["embeddings"]["word"]["embedding"])
    table[5, 7] = np.nan
    params["embeddings"]["word"]["embedding"] = table
    nan = str(tmp_path / "nan")  # a consistent directory of non-finite parameters
    modeldir.save(nan, cfg, params)
    cases = [
        (flipped, "differ from what", "(params_sha256; ", "other bytes of the same size)"),
        (missing, "config.json: no params_sha256", "cannot be verified"),
        (wider, "embeddings/layer_norm/bias has shape (128,)", "call for (256,)"),
        (nan, "embeddings/word/embedding holds 1 NaN or Inf values"),
        (edited, "config.json", "differ from model_sha256"),
        (
            retokenized,
            "differ from what",
            "(tokenizer_sha256; tokenizer_config.json",
            "bytes, ",
            "recorded)",
        ),
    ]
    for ckpt, *needles in cases:
        out = str(tmp_path / "hf")
        _assert_clean_failure(
            bertjax("export", f"--checkpoint={ckpt}", f"--out={out}", ok=False), ckpt, *needles
        )
        _no_leftovers(str(tmp_path), "hf")
    for ckpt, *needles in cases[::2]:
        _assert_clean_failure(
            bertjax("fill_mask", f"--checkpoint={ckpt}", "a [MASK] b", ok=False), ckpt, *needles
        )


def test_fill_mask_on_a_bare_encoder_says_what_is_missing(hf_bert_parts, tmp_path):
    ckpt = imported(hf_bert_parts["encoder"], tmp_path)
    r = bertjax("fill_mask", f"--checkpoint={ckpt}", "the [MASK] dog", ok=False)
    _assert_clean_failure(r, "no head that predicts tokens", "its heads: pooler")


def _assert_clean_failure(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in err[0], err[0]


def _no_leftovers(parent: str, name: str) -> None:
    assert not [f for f in os.listdir(parent) if f.startswith(name) or f.startswith("." + name)]


def test_bad_imports_fail_with_one_line_and_leave_nothing(hf_bert, tmp_path):
    out = str(tmp_path / "out")
    _assert_clean_failure(
        bertjax("import", f"--from={tmp_path}/nowhere", f"--out={out}", ok=False), "nowhere"
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in os.listdir(hf_bert):
        os.link(os.path.join(hf_bert, f), bad / f) if f != "config.json" else None
    cfg = json.load(open(os.path.join(hf_bert, "config.json")))
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    _assert_clean_failure(
        bertjax("import", f"--from={bad}", f"--out={out}", ok=False), "gpt2", "config.json"
    )
    # A tensor whose shape does not fit the config.
    (bad / "config.json").write_text(json.dumps(cfg))
    sd = load_file(os.path.join(hf_bert, "model.safetensors"))
    key = "bert.encoder.layer.1.intermediate.dense.weight"
    sd[key] = np.ascontiguousarray(sd[key][:, :-1])
    os.unlink(bad / "model.safetensors")
    save_file(sd, str(bad / "model.safetensors"))
    _assert_clean_failure(bertjax("import", f"--from={bad}", f"--out={out}", ok=False), key)
    # A pickled object in pytorch_model.bin is refused, never executed.
    os.unlink(bad / "model.safetensors")
    torch.save({"weights": sd, "payload": _Payload()}, str(bad / "pytorch_model.bin"))
    _assert_clean_failure(
        bertjax("import", f"--from={bad}", f"--out={out}", ok=False), "pytorch_model.bin"
    )
    _no_leftovers(str(tmp_path), "out")


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_export_refuses_to_clobber_and_bad_checkpoint_is_named(hf_bert, tmp_path):
    ckpt = imported(hf_bert, tmp_path)
    existing = tmp_path / "existing"
    existing.mkdir()
    _assert_clean_failure(
        bertjax("export", f"--checkpoint={ckpt}", f"--out={existing}", ok=False),
        "already exists",
        "--overwrite",
    )
    _assert_clean_failure(
        bertjax("export", f"--checkpoint={tmp_path}", f"--out={tmp_path}/x", ok=False),
        "config.json",
    )
    _no_leftovers(str(tmp_path), "x")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--config=configs/pretrain.py:bert_base", "--config.model.nope=3"], "nope"),
        # Named as given, with ml_collections' suggestion, not the repr of its message.
        (
            ["--config=configs/pretrain.py:bert_tiny", "--config.model.hiden_size=3"],
            "unknown config key 'model.hiden_size' in the overrides; did you mean 'hidden_size'?",
        ),
        (["--config=configs/pretrain.py:bert_huge"], "bert_huge"),
        (["--config=configs/pretrain.py:bert_tiny", "--config.model.num_heads=5"], "num_heads"),
    ],
)
def test_describe_bad_config_fails_with_one_line(args, needle):
    _assert_clean_failure(bertjax("describe", *args, ok=False), needle)


def test_describe_prints_the_transformers_count():
    r = bertjax("describe", "--config=configs/pretrain.py:bert_base")
    total = [ln for ln in r.stdout.splitlines() if ln.startswith("total")][0]
    assert total.split()[-1] == "110,106,428"  # BertForPreTraining, DESIGN.md
