"""ModernBERT's tokenizer kind (train_tokenizer's bpe-modernbert): trained, written as the
released checkpoints' tokenizer.json, loaded by bertjax with the right special ids.

Independent reference: transformers' AutoTokenizer and PreTrainedTokenizerFast (the class
the released checkpoints name) loading the written directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertjax.data import train_tokenizer
from bertjax.data.sources import DemoSource
from bertjax.data.tokenizers import load_tokenizer
from bertjax.data.train_tokenizer import train

transformers = pytest.importorskip("transformers")

KIND = train_tokenizer.MODERNBERT_KIND
TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "MiXeD CaSe and ALLCAPS WORDS in a sentence.",
    "café naïve Crème Brûlée résumé, and cafe\u0301 decomposed (NFC makes it café)",
    "  leading,   repeated\tand trailing whitespace  ",
    "中文字符 and emoji 👍 mixed in",
    "the [MASK] of the city [MASK]. [CLS] [SEP] [PAD] [UNK] <mask> <s> literal specials",
]
IDS = dict(
    unk=("[UNK]", 0), cls=("[CLS]", 1), sep=("[SEP]", 2), pad=("[PAD]", 3), mask=("[MASK]", 4)
)


@pytest.fixture(scope="module")
def corpus() -> list[list[str]]:
    return list(DemoSource(max_bytes=300_000).documents())


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "modernbert"
    train(corpus, KIND, 800, str(out), family="modernbert")
    return out


def test_it_is_the_released_kind_of_tokenizer_json(trained):
    spec = json.loads((trained / "tokenizer.json").read_text())
    assert spec["model"]["type"] == "BPE" and spec["normalizer"] == {"type": "NFC"}
    assert spec["pre_tokenizer"]["type"] == "ByteLevel"
    assert spec["pre_tokenizer"]["add_prefix_space"] is False
    trim, post = spec["post_processor"]["processors"]  # offsets trimmed, then the template
    assert trim["type"] == "ByteLevel" and trim["trim_offsets"] is True
    assert post["type"] == "TemplateProcessing"
    assert [next(iter(p.values()))["id"] for p in post["single"]] == ["[CLS]", "A", "[SEP]"]
    assert [next(iter(p.values()))["id"] for p in post["pair"]] == [
        "[CLS]",
        "A",
        "[SEP]",
        "B",
        "[SEP]",
    ]
    added = {t["content"]: t for t in spec["added_tokens"]}
    assert {t: added[t]["id"] for t, _ in IDS.values()} == dict(IDS.values())
    assert all(t["special"] and not t["normalized"] for t in added.values())
    assert [t for t in added if added[t]["lstrip"]] == ["[MASK]"]  # as the released one
    config = json.loads((trained / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert {config[f"{role}_token"] for role in IDS} == {t for t, _ in IDS.values()}


def test_bertjax_and_transformers_give_the_same_ids(trained):
    ours = load_tokenizer(str(trained))
    assert ours.tokenizer_class == "PreTrainedTokenizerFast" and ours.kind == "bpe"
    for role, (token, i) in IDS.items():
        assert (getattr(ours, f"{role}_token"), getattr(ours, f"{role}_id")) == (token, i)
    auto = transformers.AutoTokenizer.from_pretrained(str(trained))
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(str(trained))
    for ref in (auto, fast):
        assert (
            ref.cls_token_id,
            ref.sep_token_id,
            ref.pad_token_id,
            ref.mask_token_id,
            ref.unk_token_id,
        ) == (1, 2, 3, 4, 0)
        assert len(ref) == ours.vocab_size <= 800
        for text in TEXTS:
            assert ours.encode(text) == ref(text)["input_ids"], text
        for a, b in zip(TEXTS, TEXTS[1:], strict=False):
            assert ours.encode(a, b) == ref(a, b)["input_ids"], (a, b)
    a, b = ours.encode("the city"), ours.encode("a fox", add_special_tokens=False)
    assert ours.encode("the city", "a fox") == [*a, *b, 2]  # [CLS] A [SEP] B [SEP]
    assert a[0] == 1 and a[-1] == 2
    # Cased, NFC-normalized, byte-level: nothing is unknown, "[MASK]" takes its space.
    assert ours.encode("The") != ours.encode("the")
    assert ours.encode("cafe\u0301") == ours.encode("caf\u00e9")
    assert 0 not in ours.encode(TEXTS[4])
    assert ours.encode("the [MASK]", add_special_tokens=False)[-1] == 4
    assert ours.decode(ours.encode(TEXTS[0]), skip_special_tokens=True) == TEXTS[0]
    # Offsets leave out the space before a word (SQuAD's answers fall on token boundaries).
    text = "lives in the city"
    enc = ours.backend.encode(text)
    assert [text[s:e] for s, e in enc.offsets[1:-1]] == [
        t.removeprefix("\u0120") for t in enc.tokens[1:-1]
    ]


def test_saved_again_it_is_the_same_and_deterministic(corpus, trained, tmp_path):
    load_tokenizer(str(trained)).save(str(tmp_path / "again"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "again" / name).read_bytes() == (trained / name).read_bytes(), name
    for run in ("a", "b"):
        train(corpus[:300], KIND, 400, str(tmp_path / run))
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (
        tmp_path / "b" / "tokenizer.json"
    ).read_bytes()


def test_the_family_takes_it_and_the_roberta_kind_is_refused(corpus, tmp_path):
    cases = [
        (dict(kind="bpe", family="modernbert"), "family modernbert uses bpe-modernbert"),
        (dict(kind=KIND, family="roberta"), "roberta uses bpe tokenizers, not bpe-modernbert"),
        (dict(kind=KIND, lowercase=True), "cased"),
        (dict(kind=KIND, vocab_size=100), "too small"),
    ]
    for kwargs, match in cases:
        kwargs = {"vocab_size": 500, **kwargs}
        with pytest.raises(ValueError, match=match):
            train(corpus[:10], out_dir=str(tmp_path / "out"), **kwargs)
    with pytest.raises(ValueError, match="no text"):
        train([[], ["  "]], KIND, 500, str(tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []


def test_prepare_tokenizer_for_the_runlocal_config_matches_its_pad_id(tmp_path):
    """What `prepare tokenizer` / `prepare data` train for configs/pretrain.py's modernbert
    presets: this kind, with the [PAD] id the runlocal model is built with."""
    from bertjax import configfile
    from bertjax.data.from_config import prepare_tokenizer

    (tmp_path / "c.txt").write_text(
        "\n\n".join(" ".join(doc) for doc in DemoSource(max_bytes=60_000).documents())
    )
    c = configfile.load_config("configs/pretrain.py:modernbert_tiny,runlocal")
    c.data.source = f"text:{tmp_path / 'c.txt'}"
    c.tokenizer.vocab_size = 400
    assert c.tokenizer.lowercase is False
    tok = prepare_tokenizer(c, str(tmp_path / "tok"))
    assert (tok.pad_id, tok.mask_id, tok.cls_id, tok.sep_id) == (c.model.pad_token_id, 4, 1, 2)
    assert tok.tokenizer_class == "PreTrainedTokenizerFast"
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert ref.pad_token_id == c.model.pad_token_id == 3


def test_an_exported_model_names_its_tokenizer_ids(trained, tmp_path):
    """config.json carries the trained tokenizer's [CLS]/[SEP]/[PAD] ids (transformers'
    ModernBertConfig would otherwise keep the released 50281/50282), and the directory
    comes back with the same tokenizer."""
    import jax
    import numpy as np

    from bertjax.convert import hfdir
    from bertjax.models import ModelConfig, build, init_params

    tok = load_tokenizer(str(trained))
    cfg = ModelConfig.from_preset(
        "modernbert_tiny", vocab_size=tok.vocab_size, pad_token_id=3, num_layers=1, heads=("mlm",)
    )
    params = jax.tree.map(
        np.asarray, jax.jit(lambda: __import__("flax").linen.unbox(init_params(build(cfg))))()
    )
    hfdir.write_hf_dir(str(tmp_path / "hf"), cfg, params, tok)
    config = transformers.AutoConfig.from_pretrained(str(tmp_path / "hf"))
    assert (config.cls_token_id, config.sep_token_id, config.pad_token_id) == (1, 2, 3)
    assert (config.bos_token_id, config.eos_token_id) == (1, 2)
    back_cfg, _, tok_dir = hfdir.read_hf_dir(str(tmp_path / "hf"))
    back = hfdir.checked_tokenizer(tok_dir, back_cfg)
    assert (back.cls_id, back.sep_id, back.pad_id, back.mask_id) == (1, 2, 3, 4)
    assert all(back.encode(t) == tok.encode(t) for t in TEXTS)
