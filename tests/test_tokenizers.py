"""bertjax.data.tokenizers against transformers' tokenizers on the same files.

Tiny vocabularies are trained here from generated text, so nothing is downloaded.
transformers (v5: BertTokenizer, RobertaTokenizer, AlbertTokenizer, ...) is the
independent reference every assertion compares to.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import clilib
import pytest
import sentencepiece as spm
import tokenizers
from tokenizers import normalizers, pre_tokenizers, trainers

from bertjax.data.tokenizers import Tokenizer, TokenizerFileError, load_tokenizer

transformers = pytest.importorskip("transformers")

HARD_TEXTS = [
    "Hello, world!",
    "café Ærøskøbing naïve Crème Brûlée",
    "中文字符 and 日本語のテキスト mixed",
    "wait... what?!?! --- (((nested))) [[x]] ~~~ @#$%^&*",
    "emoji 👍🏽 flags 🇫🇷 family 👨\u200d👩\u200d👧",
    "ctrl\x00chars\x07here\u200bzero\ttab\r\nnewline\x1b[0m",
    "x" * 300,
    "supercalifragilistic" * 15,
    "MiXeD CaSe WORDS and ALLCAPS",
    "``quoted'' text and ''more`` quotes",
    "digits 1,000.5 and 3.14159 and 1999, 2,",
    "",
    " ",
    "   leading  and   trailing   ",
    "[MASK] and <mask> and [CLS] literal <s> </s> <pad> <unk> a[MASK]b x<ud>y",
    "\ufeffBOM text",
    "ﬁ ligature ① Ⅻ ｆｕｌｌｗｉｄｔｈ",
    "\u0301combining mark first",
    "the city played music during the season.",
]
# transformers drops an empty second text (`if text_pair:`), while our encode(a, "")
# keeps an empty segment ([CLS] a [SEP] [SEP]); so pairs with "" are not compared.
PAIRS = [(a, b) for a, b in zip(HARD_TEXTS, reversed(HARD_TEXTS), strict=True) if a and b]
ROLES = ("cls", "sep", "pad", "mask", "unk")

# case -> (fixture dir, transformers class, its kwargs, load_tokenizer kwargs)
CASES = {
    "wordpiece_uncased": ("wp_uncased", "BertTokenizer", {}, {}),
    "wordpiece_cased": (
        "wp_cased",
        "BertTokenizer",
        {"do_lower_case": False},
        {"lowercase": False},
    ),
    "distilbert": ("wp_uncased", "DistilBertTokenizer", {}, {}),
    "electra": ("wp_uncased", "ElectraTokenizer", {}, {}),
    "bpe": ("bpe", "RobertaTokenizer", {}, {}),
    "sentencepiece": ("sp", "AlbertTokenizer", {}, {}),
}


def corpus(n_lines: int = 400) -> list[str]:
    """English-like lines: common words, invented words, accents, CJK, numbers."""
    rng = random.Random(0)
    common = (
        "the of and to in is was for on that with as by at from his her their it an "
        "be this which are or had not but were have has one all new more first after "
        "city music film school state world war team season game year played during "
        "river north south café naïve Ærøskøbing crème 中文 日本語 Paris London"
    ).split()
    syllables = "ka ra to mi sen ta lo ver in qu al dor pe su nex bri gol ush am el".split()
    lines = []
    for _ in range(n_lines):
        words = []
        for _ in range(rng.randint(5, 16)):
            if rng.random() < 0.7:
                words.append(rng.choice(common))
            else:
                words.append("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))))
            if rng.random() < 0.05:
                words.append(rng.choice(["1,000.5", "42", "1999", "3.14", "(x)", "--", '"q"']))
        line = " ".join(words)
        lines.append(line[0].upper() + line[1:] + rng.choice([".", "!", "?", ",", ";"]))
    return lines


def train_wordpiece(directory: Path, lines: list[str], lowercase: bool) -> None:
    tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        lines, trainers.WordPieceTrainer(vocab_size=500, special_tokens=specials)
    )
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")


def train_bpe(directory: Path, lines: list[str]) -> None:
    tok = tokenizers.ByteLevelBPETokenizer()
    tok.train_from_iterator(
        lines, vocab_size=500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    directory.mkdir(parents=True)
    tok.save_model(str(directory))


def train_sentencepiece(directory: Path, lines: list[str], **ids: int) -> None:
    """ALBERT's layout by default: <pad>=0 <unk>=1 [CLS]=2 [SEP]=3 [MASK]=4, no <s> </s>;
    '<ud>' is an extra user-defined symbol, matched in raw text but not special."""
    directory.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(directory / "spiece"),
        model_type="unigram",
        vocab_size=400,
        hard_vocab_limit=False,
        **({"pad_id": 0, "unk_id": 1, "bos_id": -1, "eos_id": -1} | ids),
        control_symbols=["[CLS]", "[SEP]"],
        user_defined_symbols=["[MASK]", "<ud>"],
        minloglevel=2,
    )


@pytest.fixture(scope="module")
def vocab_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vocabs")
    lines = corpus()
    train_wordpiece(root / "wp_uncased", lines, lowercase=True)
    train_wordpiece(root / "wp_cased", lines, lowercase=False)
    train_bpe(root / "bpe", lines)
    train_sentencepiece(root / "sp", lines)
    return {p.name: p for p in root.iterdir()}


def reference(case: str, vocab_dirs: dict[str, Path]):
    """transformers' tokenizer for a case, loaded from the legacy files."""
    dirname, class_name, kwargs, _ = CASES[case]
    return getattr(transformers, class_name).from_pretrained(str(vocab_dirs[dirname]), **kwargs)


@pytest.fixture(
    scope="module",
    params=[(c, s) for c in CASES for s in ("legacy", "hf_json")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def loaded(request, vocab_dirs, tmp_path_factory):
    """(ours, transformers reference, source dir) for every case, loaded either from the
    legacy files or from the tokenizer.json that transformers' save_pretrained writes."""
    case, source = request.param
    ref = reference(case, vocab_dirs)
    if source == "legacy":
        dirname, _, _, load_kwargs = CASES[case]
        directory = vocab_dirs[dirname]
        ours = load_tokenizer(str(directory), **load_kwargs)
    else:
        directory = tmp_path_factory.mktemp(f"hf_{case}")
        ref.save_pretrained(str(directory))
        assert (directory / "tokenizer.json").is_file()
        ours = load_tokenizer(str(directory))
        # The reloaded transformers tokenizer must still agree with the original.
        assert_same_ids(ours, transformers.AutoTokenizer.from_pretrained(str(directory)))
    return ours, ref, directory


def assert_same_ids(ours: Tokenizer, ref) -> None:
    for text in HARD_TEXTS:
        assert ours.encode(text) == ref(text)["input_ids"], repr(text)
        assert (
            ours.encode(text, add_special_tokens=False)
            == ref(text, add_special_tokens=False)["input_ids"]
        ), repr(text)
    for a, b in PAIRS:
        assert ours.encode(a, b) == ref(a, b)["input_ids"], (a, b)
        assert (
            ours.encode(a, pair=b, add_special_tokens=False)
            == ref(a, b, add_special_tokens=False)["input_ids"]
        ), (a, b)
    assert ours.encode_batch(HARD_TEXTS) == ref(HARD_TEXTS)["input_ids"]
    assert (
        ours.encode_batch(HARD_TEXTS, add_special_tokens=False)
        == ref(HARD_TEXTS, add_special_tokens=False)["input_ids"]
    )


def test_encode_matches_transformers(loaded):
    ours, ref, _ = loaded
    # The tiny vocabularies must be real enough that equality is not all-[UNK].
    plain = ours.encode("the city played music during the season.", add_special_tokens=False)
    assert ours.unk_id not in plain and len(plain) >= 7
    assert_same_ids(ours, ref)


def test_special_tokens_and_vocab_size_match_transformers(loaded):
    ours, ref, _ = loaded
    assert ours.vocab_size == len(ref)
    for role in ROLES:
        assert getattr(ours, f"{role}_token") == str(getattr(ref, f"{role}_token")), role
        assert getattr(ours, f"{role}_id") == getattr(ref, f"{role}_token_id"), role
    assert ours.special_ids() == set(ref.all_special_ids)
    for i in range(ours.vocab_size):
        assert ours.id_to_token(i) == ref.convert_ids_to_tokens(i)
        assert ours.token_to_id(ours.id_to_token(i)) == ref.convert_tokens_to_ids(
            ours.id_to_token(i)
        )
    assert ours.token_to_id("surely-not-a-token-\u2603") is None
    with pytest.raises(IndexError):
        ours.id_to_token(ours.vocab_size)


def test_decode_matches_transformers(loaded):
    ours, ref, _ = loaded
    for text in HARD_TEXTS:
        ids = ref(text)["input_ids"]
        assert ours.decode(ids) == ref.decode(ids), repr(text)
        assert ours.decode(ids, skip_special_tokens=True) == ref.decode(
            ids, skip_special_tokens=True
        )


def test_save_loads_in_transformers_and_round_trips(loaded, tmp_path):
    ours, ref, source = loaded
    ours.save(str(tmp_path))
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert_same_ids(ours, auto)
    assert len(auto) == len(ref)
    assert set(auto.all_special_ids) == set(ref.all_special_ids)

    again = load_tokenizer(str(tmp_path))
    assert_same_ids(again, ref)
    assert (again.kind, again.tokenizer_class, again.options) == (
        ours.kind,
        ours.tokenizer_class,
        ours.options,
    )
    for legacy in ("vocab.txt", "vocab.json", "merges.txt", "spiece.model"):
        if (source / legacy).is_file() and not (source / "tokenizer.json").is_file():
            assert (tmp_path / legacy).read_bytes() == (source / legacy).read_bytes()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    special_map = json.loads((tmp_path / "special_tokens_map.json").read_text())
    assert config["tokenizer_class"] == ours.tokenizer_class
    assert special_map["mask_token"] == str(ref.mask_token)


@pytest.mark.parametrize(
    "class_name,model_type",
    [
        ("DistilBertTokenizer", "distilbert"),
        ("ElectraTokenizer", "electra"),
        ("BertTokenizer", "bert"),
    ],
)
def test_tokenizer_class_override_with_model_config(vocab_dirs, tmp_path, class_name, model_type):
    """An export directory holds config.json too; AutoTokenizer must still pick our class."""
    ours = load_tokenizer(str(vocab_dirs["wp_uncased"]))
    ours.tokenizer_class = class_name
    ours.save(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert isinstance(auto, getattr(transformers, class_name))
    assert_same_ids(ours, auto)
    assert load_tokenizer(str(tmp_path)).tokenizer_class == class_name


def test_save_rejects_class_of_another_kind(vocab_dirs, tmp_path):
    ours = load_tokenizer(str(vocab_dirs["wp_uncased"]))
    ours.tokenizer_class = "RobertaTokenizer"
    with pytest.raises(ValueError, match="RobertaTokenizer"):
        ours.save(str(tmp_path))


def test_special_token_missing_from_vocab_is_appended_like_transformers(vocab_dirs, tmp_path):
    lines = (vocab_dirs["wp_uncased"] / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "vocab.txt").write_text(
        "".join(t + "\n" for t in lines if t != "[MASK]"), encoding="utf-8"
    )
    ours = load_tokenizer(str(tmp_path))
    ref = transformers.BertTokenizer.from_pretrained(str(tmp_path))
    assert ours.vocab_size == len(ref) == len(lines)
    assert ours.mask_id == ref.mask_token_id
    assert_same_ids(ours, ref)


def test_do_lower_case_from_tokenizer_config(vocab_dirs, tmp_path):
    (tmp_path / "vocab.txt").write_bytes((vocab_dirs["wp_cased"] / "vocab.txt").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "do_lower_case": False,
                "tokenizer_class": "BertTokenizerFast",
                "model_max_length": 128,
            }
        )
    )
    ours = load_tokenizer(str(tmp_path))
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert ours.options["do_lower_case"] is False
    assert ours.model_max_length == ref.model_max_length == 128
    assert ours.tokenizer_class == "BertTokenizer"
    assert_same_ids(ours, ref)
    with pytest.raises(ValueError, match="do_lower_case"):
        load_tokenizer(str(tmp_path), lowercase=True)


def test_sentencepiece_non_albert_ids_follow_the_model(tmp_path):
    """With sentencepiece's default ids (<unk>=0, <s>=1, </s>=2) unknown pieces map to the
    model's own unk id, as in sentencepiece itself; transformers' AlbertTokenizer
    hard-codes unk id 1, so sentencepiece is the reference here."""
    train_sentencepiece(tmp_path, corpus(200), pad_id=-1, unk_id=0, bos_id=1, eos_id=2)
    ours = load_tokenizer(str(tmp_path))
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    assert ours.unk_id == sp.unk_id() == 0
    assert (
        ours.encode("\u2603", add_special_tokens=False)[-1]
        == sp.encode("\u2603")[-1]
        == sp.unk_id()
    )
    # Control symbols <s> </s> are special, as sentencepiece marks them.
    assert {sp.bos_id(), sp.eos_id()} <= ours.special_ids()


def test_tokenizer_pickles(vocab_dirs):
    """Preparation workers receive the tokenizer by pickling."""
    ours = load_tokenizer(str(vocab_dirs["sp"]))
    again = pickle.loads(pickle.dumps(ours))
    assert again.encode_batch(HARD_TEXTS) == ours.encode_batch(HARD_TEXTS)


def one_line_error(excinfo: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_missing_directory_error_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as e:
        load_tokenizer(str(missing))
    one_line_error(e, str(missing))


def test_directory_without_tokenizer_files_error_names_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as e:
        load_tokenizer(str(tmp_path))
    one_line_error(e, str(tmp_path), "tokenizer.json", "vocab.txt", "merges.txt", "spiece.model")


def test_bpe_without_merges_error_names_missing_file(vocab_dirs, tmp_path):
    (tmp_path / "vocab.json").write_bytes((vocab_dirs["bpe"] / "vocab.json").read_bytes())
    with pytest.raises(FileNotFoundError) as e:
        load_tokenizer(str(tmp_path))
    one_line_error(e, str(tmp_path), "merges.txt")


@pytest.mark.parametrize(
    "name,content",
    [
        ("tokenizer.json", b'{"model": {"type": "WordPiece", '),
        ("tokenizer.json", b'{"version": "1.0", "model": {"type": "Nonsense"}}'),
        ("vocab.txt", b"[PAD]\n\xff\xfe broken utf-8\n"),
        ("spiece.model", b"\x0a\xff\xff\xff not a protobuf"),
        ("spiece.model", b""),
    ],
)
def test_corrupt_file_error_names_it(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError) as e:
        load_tokenizer(str(tmp_path))
    assert isinstance(e.value, TokenizerFileError)
    one_line_error(e, str(tmp_path / name))


def test_corrupt_tokenizer_config_error_names_it(vocab_dirs, tmp_path):
    (tmp_path / "vocab.txt").write_bytes((vocab_dirs["wp_uncased"] / "vocab.txt").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError) as e:
        load_tokenizer(str(tmp_path))
    one_line_error(e, str(tmp_path / "tokenizer_config.json"))


@pytest.mark.parametrize("case", ["wordpiece_cased", "bpe", "sentencepiece"])
def test_tokenizer_json_alone(vocab_dirs, tmp_path, case):
    """A bare tokenizer.json (no tokenizer_config.json): casing, [CLS]/[SEP] and unk come
    from the JSON's normalizer, post-processor and model."""
    ref = reference(case, vocab_dirs)
    ref.save_pretrained(str(tmp_path / "hf"))
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "tokenizer.json").write_bytes(
        (tmp_path / "hf" / "tokenizer.json").read_bytes()
    )
    ours = load_tokenizer(str(tmp_path / "bare"))
    assert_same_ids(ours, ref)
    for role in ROLES:
        assert getattr(ours, f"{role}_id") == getattr(ref, f"{role}_token_id"), role


def test_config_contradicting_tokenizer_json_is_an_error(vocab_dirs, tmp_path):
    reference("wordpiece_cased", vocab_dirs).save_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config | {"do_lower_case": True}))
    with pytest.raises(ValueError) as e:
        load_tokenizer(str(tmp_path))
    one_line_error(e, "tokenizer_config.json", "do_lower_case")


def test_runtime_needs_neither_transformers_nor_torch():
    code = (
        "import sys, bertjax.data.tokenizers; "
        "bad = {'transformers', 'torch', 'tensorflow'} & set(sys.modules); "
        "assert not bad, bad"
    )
    clilib.python("-c", code, ok=True)
