"""bertjax.data.train_tokenizer: every kind trains, writes the standard files, and loads
with the same ids in bertjax and in transformers.

Independent references: transformers' BertTokenizer / RobertaTokenizer / AlbertTokenizer
(from the full directory and from the legacy file alone) and sentencepiece's own
SentencePieceProcessor for the spiece.model files.
"""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pytest
import sentencepiece as spm

from bertjax.data import train_tokenizer
from bertjax.data.sources import DemoSource
from bertjax.data.tokenizers import load_tokenizer
from bertjax.data.train_tokenizer import train

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "Return a new array of given shape and type, filled with zeros.",
    "MiXeD CaSe and ALLCAPS WORDS in a sentence.",
    "café naïve Crème Brûlée résumé",
    "numbers 1,234.56 and 3.14159 and 2024-01-02",
    "  leading,   repeated\tand trailing whitespace  ",
    "supercalifragilisticexpialidocious" * 3,
    "中文字符 and emoji 👍 mixed in",
    "wait... what?!?! (((nested))) [[x]] ~~~ @#$%^&*",
    "[MASK] [CLS] [SEP] <mask> <s> </s> <pad> <unk> literal special tokens",
]
# Plain text on which sentencepiece itself (spm.encode after the same lowercasing and
# accent stripping) is the reference: no special-token strings in it.
SPM_TEXTS = TEXTS[:8]
VOCAB = {"wordpiece": 1200, "sentencepiece-unigram": 1000, "sentencepiece-bpe": 1000, "bpe": 800}
SPECIALS = {
    "wordpiece": dict(
        pad=("[PAD]", 0), unk=("[UNK]", 1), cls=("[CLS]", 2), sep=("[SEP]", 3), mask=("[MASK]", 4)
    ),
    "sentencepiece-unigram": dict(
        pad=("<pad>", 0), unk=("<unk>", 1), cls=("[CLS]", 2), sep=("[SEP]", 3), mask=("[MASK]", 4)
    ),
    "bpe": dict(
        cls=("<s>", 0), pad=("<pad>", 1), sep=("</s>", 2), unk=("<unk>", 3), mask=("<mask>", 4)
    ),
}
SPECIALS["sentencepiece-bpe"] = SPECIALS["sentencepiece-unigram"]
LEGACY = {
    "wordpiece": ["vocab.txt"],
    "sentencepiece-unigram": ["spiece.model"],
    "sentencepiece-bpe": ["spiece.model"],
    "bpe": ["vocab.json", "merges.txt"],
}
LEGACY_CLASS = {
    "wordpiece": "BertTokenizer",
    "sentencepiece-unigram": "AlbertTokenizer",
    "bpe": "RobertaTokenizer",
}


@pytest.fixture(scope="module")
def corpus() -> list[list[str]]:
    docs = []
    for doc in DemoSource(max_bytes=600_000).documents():
        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tok")
    out = {}
    for kind in train_tokenizer.KINDS:
        out[kind] = root / kind
        train(corpus, kind, VOCAB[kind], str(out[kind]))
    return out


@pytest.mark.parametrize("kind", train_tokenizer.KINDS)
def test_trained_tokenizer_matches_transformers(kind, trained):
    out = trained[kind]
    ours = load_tokenizer(str(out))
    ref = transformers.AutoTokenizer.from_pretrained(str(out))
    for text in TEXTS:
        assert ours.encode(text) == ref(text)["input_ids"], text
    for a, b in zip(TEXTS, TEXTS[1:], strict=False):
        assert ours.encode(a, b) == ref(a, b)["input_ids"], (a, b)
    # Special tokens where the family has them, and nothing past the requested size.
    for role, (token, i) in SPECIALS[kind].items():
        assert (getattr(ours, f"{role}_token"), getattr(ours, f"{role}_id")) == (token, i)
        assert ref.convert_tokens_to_ids(token) == i
    assert ours.vocab_size == len(ref) <= VOCAB[kind]
    assert ours.vocab_size > 0.5 * VOCAB[kind]  # the corpus was big enough to fill most
    for name in LEGACY[kind] + ["tokenizer.json", "tokenizer_config.json"]:
        assert (out / name).is_file(), name
    # Words the corpus is full of are whole tokens (or nearly), not characters.
    assert len(ours.encode("the function returns", add_special_tokens=False)) <= 4


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece-unigram", "bpe"])
def test_legacy_file_alone_gives_the_same_ids(kind, trained, tmp_path):
    """The legacy file by itself (what older tools read) holds the same tokenizer."""
    for name in LEGACY[kind]:
        shutil.copy(trained[kind] / name, tmp_path / name)
    full = load_tokenizer(str(trained[kind]))
    legacy = load_tokenizer(str(tmp_path))
    ref = getattr(transformers, LEGACY_CLASS[kind]).from_pretrained(str(tmp_path))
    for text in TEXTS:
        assert legacy.encode(text) == full.encode(text) == ref(text)["input_ids"], text


def _spm_reference_normalize(text: str, lowercase: bool = True) -> str:
    """What ALBERT does before SentencePiece: NFKD, drop combining marks, lowercase."""
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text.lower() if lowercase else text


@pytest.mark.parametrize("kind", ["sentencepiece-unigram", "sentencepiece-bpe"])
def test_sentencepiece_model_is_the_reference(kind, trained):
    sp = spm.SentencePieceProcessor(model_file=str(trained[kind] / "spiece.model"))
    ours = load_tokenizer(str(trained[kind]))
    assert [sp.id_to_piece(i) for i in range(5)] == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, -1, -1)
    assert sp.get_piece_size() == ours.vocab_size
    for text in SPM_TEXTS:
        expect = sp.encode(_spm_reference_normalize(text))
        assert ours.encode(text, add_special_tokens=False) == expect, text
        assert ours.encode(text) == [2, *expect, 3]


def test_cased_and_family(corpus, tmp_path):
    tok = train(corpus, "wordpiece", 800, str(tmp_path / "e"), lowercase=False, family="electra")
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "e"))
    config = json.loads((tmp_path / "e" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == tok.tokenizer_class == "ElectraTokenizer"
    assert isinstance(ref, transformers.ElectraTokenizer)  # v5: an alias of BertTokenizer
    assert tok.options["do_lower_case"] is False
    for text in TEXTS:
        assert tok.encode(text) == ref(text)["input_ids"], text
    assert tok.encode("The") != tok.encode("the")
    sp = train(
        corpus, "sentencepiece-unigram", 600, str(tmp_path / "a"), lowercase=False, family="albert"
    )
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "a"))
    assert type(ref).__name__ == "AlbertTokenizer"
    for text in TEXTS:
        assert sp.encode(text) == ref(text)["input_ids"], text
    assert sp.encode("The") != sp.encode("the")


def test_deterministic(corpus, tmp_path):
    small = corpus[:300]
    for kind in train_tokenizer.KINDS:
        a = tmp_path / f"{kind}-a"
        b = tmp_path / f"{kind}-b"
        train(small, kind, 400, str(a))
        train(small, kind, 400, str(b))
        for name in LEGACY[kind] + ["tokenizer.json"]:
            assert (a / name).read_bytes() == (b / name).read_bytes(), (kind, name)


def test_source_spec_and_plain_strings(tmp_path):
    (tmp_path / "c.txt").write_text("A tiny corpus. It has words.\n\nAnother paragraph here.\n")
    tok = train(f"text:{tmp_path / 'c.txt'}", "wordpiece", 100, str(tmp_path / "t"))
    assert tok.encode("a tiny corpus", add_special_tokens=False) == [
        tok.token_to_id("a"),
        tok.token_to_id("tiny"),
        tok.token_to_id("corpus"),
    ]
    tok = train(["plain strings work too"] * 3, "bpe", 300, str(tmp_path / "b"))
    assert tok.vocab_size <= 300


def test_errors_leave_nothing_behind(corpus, tmp_path):
    out = tmp_path / "out"
    cases = [
        (dict(kind="nope"), ValueError, "unknown tokenizer kind"),
        (dict(kind="bpe", family="albert"), ValueError, "family albert uses"),
        (dict(kind="wordpiece", family="gpt"), ValueError, "unknown family"),
        (dict(kind="bpe", lowercase=True), ValueError, "cased"),
        (dict(kind="wordpiece", vocab_size=10), ValueError, "too small"),
    ]
    for kwargs, error, match in cases:
        kwargs = {"vocab_size": 500, **kwargs}
        with pytest.raises(error, match=match):
            train(corpus[:10], out_dir=str(out), **kwargs)
    for kind in train_tokenizer.KINDS:
        with pytest.raises(ValueError, match="no text"):
            train([[], ["   "]], kind, 500, str(out))
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no partial directory
    train(corpus[:50], "wordpiece", 200, str(out))
    with pytest.raises(FileExistsError):
        train(corpus[:50], "wordpiece", 200, str(out))
    train(corpus[:50], "wordpiece", 300, str(out), overwrite=True)
    assert load_tokenizer(str(out)).vocab_size <= 300
