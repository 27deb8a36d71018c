"""The files of a tokenizer directory, read and checked (tokenizers.load_tokenizer).

One builder per legacy file kind, each making the pipeline transformers v5 makes from
it: vocab.txt (WordPiece: BERT, DistilBERT, ELECTRA), vocab.json + merges.txt
(byte-level BPE: RoBERTa), spiece.model (SentencePiece Unigram: ALBERT); tokenizer.json
and the family options it implies; the side files tokenizer_config.json and
special_tokens_map.json. A file that exists but cannot be used raises
TokenizerFileError naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers

from bertjax.errors import one_line

# Roles in the order transformers registers them as special tokens; the order decides
# the ids of special tokens that the vocabulary lacks (they are appended).
ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")

CLASS_KIND = {
    "BertTokenizer": "wordpiece",
    "DistilBertTokenizer": "wordpiece",
    "ElectraTokenizer": "wordpiece",
    "RobertaTokenizer": "bpe",
    "AlbertTokenizer": "sentencepiece",
}
MODEL_KIND = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "sentencepiece"}
# Config keys that matter per kind: transformers rebuilds the normalizer and
# pre-tokenizer from them even when a tokenizer.json is present.
OPTION_KEYS = {
    "wordpiece": ("do_lower_case", "strip_accents", "tokenize_chinese_chars"),
    "bpe": ("add_prefix_space", "trim_offsets"),
    "sentencepiece": ("do_lower_case", "keep_accents", "add_prefix_space", "trim_offsets"),
}
# transformers writes int(1e30) when a tokenizer has no length limit.
UNBOUNDED_LENGTH = 10**12
_SPM_UNIGRAM, _SPM_CONTROL, _SPM_USER_DEFINED = 1, 3, 4


class TokenizerFileError(ValueError):
    """A tokenizer file exists but cannot be used; the message names the file."""


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_json(path: str) -> dict[str, Any]:
    try:
        obj = json.loads(read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerFileError(f"{path}: not valid UTF-8 JSON ({one_line(e)})") from e
    if not isinstance(obj, dict):
        raise TokenizerFileError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


# ---------------------------------------------------------------- one builder per file kind


def build_wordpiece(
    vocab_path: str, opts: Mapping[str, Any], unk_token: str
) -> tokenizers.Tokenizer:
    """BERT's pipeline: BertNormalizer (clean text, CJK spacing, optional lowercase and
    accent stripping), BertPreTokenizer (whitespace + punctuation), greedy WordPiece."""
    try:
        vocab = models.WordPiece.read_file(vocab_path)
    except Exception as e:  # the Rust reader raises a bare Exception
        raise TokenizerFileError(
            f"{vocab_path}: cannot read WordPiece vocab ({one_line(e)})"
        ) from e
    if not vocab:
        raise TokenizerFileError(f"{vocab_path}: empty vocabulary")
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=unk_token))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=opts["tokenize_chinese_chars"],
        strip_accents=opts["strip_accents"],  # None: strip exactly when lowercasing, as BERT
        lowercase=opts["do_lower_case"],
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def build_bpe(vocab_path: str, merges_path: str, opts: Mapping[str, Any]) -> tokenizers.Tokenizer:
    """RoBERTa's pipeline: byte-level pre-tokenization (GPT-2 regex, bytes mapped to
    printable characters) and BPE merges; no normalizer, so text is cased."""
    try:
        vocab, merges = models.BPE.read_file(vocab_path, merges_path)
    except Exception as e:
        raise TokenizerFileError(
            f"{vocab_path} / {merges_path}: cannot read BPE vocab and merges ({one_line(e)})"
        ) from e
    tok = tokenizers.Tokenizer(
        models.BPE(
            vocab,
            merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=opts["add_prefix_space"])
    tok.decoder = decoders.ByteLevel()
    return tok


def read_spm_proto(path: str) -> Any:
    from sentencepiece import sentencepiece_model_pb2  # protobuf is only needed for ALBERT

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(read_bytes(path))
    except Exception as e:  # google.protobuf.message.DecodeError
        raise TokenizerFileError(f"{path}: not a SentencePiece model ({one_line(e)})") from e
    # Protobuf parsing is lenient, so check the fields we rely on.
    if not proto.pieces:
        raise TokenizerFileError(f"{path}: SentencePiece model has no pieces")
    if proto.trainer_spec.model_type != _SPM_UNIGRAM:
        raise TokenizerFileError(
            f"{path}: only Unigram SentencePiece models are supported "
            f"(model_type={proto.trainer_spec.model_type})"
        )
    if not 0 <= proto.trainer_spec.unk_id < len(proto.pieces):
        raise TokenizerFileError(f"{path}: unk_id {proto.trainer_spec.unk_id} is out of range")
    return proto


def build_sentencepiece(proto: Any, opts: Mapping[str, Any]) -> tokenizers.Tokenizer:
    """ALBERT's pipeline: `` and '' -> ", NFKD + accent stripping unless keep_accents,
    lowercase, then SentencePiece's own precompiled normalization; split on whitespace
    and mark word starts with U+2581; Unigram with the proto's scores."""
    vocab = [(p.piece, p.score) for p in proto.pieces]
    # transformers hard-codes unk_id=1 (true of every released ALBERT model); the proto's
    # unk_id is the same there and also right for models trained with other ids.
    tok = tokenizers.Tokenizer(
        models.Unigram(vocab, unk_id=proto.trainer_spec.unk_id, byte_fallback=False)
    )
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if not opts["keep_accents"]:
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if opts["do_lower_case"]:
        steps.append(normalizers.Lowercase())
    if proto.normalizer_spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap))
    tok.normalizer = normalizers.Sequence(steps)
    scheme = "always" if opts["add_prefix_space"] else "never"
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)
    return tok


def spm_added_tokens(proto: Any) -> list[AddedToken]:
    """Control symbols (special) and user-defined symbols (not special) are matched in
    raw text before normalization, as SentencePiece itself does."""
    return [
        AddedToken(p.piece, special=p.type == _SPM_CONTROL, normalized=False)
        for p in proto.pieces
        if p.type in (_SPM_CONTROL, _SPM_USER_DEFINED)
    ]


def load_tokenizer_json(path: str) -> tuple[tokenizers.Tokenizer, dict[str, Any]]:
    """The tokenizer serialized in `path` and its parsed JSON."""
    try:
        text = read_bytes(path).decode("utf-8")
        return tokenizers.Tokenizer.from_str(text), json.loads(text)
    except Exception as e:  # the Rust parser raises a bare Exception
        raise TokenizerFileError(f"{path}: cannot load tokenizer.json ({one_line(e)})") from e


def specials_from_json(spec: Mapping[str, Any]) -> dict[str, str]:
    """[CLS]/[SEP]-like tokens from the post-processor and unk from the model, for a
    tokenizer.json that comes without tokenizer_config.json."""
    out = {}
    post = spec.get("post_processor") or {}
    if post.get("type") == "RobertaProcessing":
        out["cls"], out["sep"] = post["cls"][0], post["sep"][0]
    elif post.get("type") == "TemplateProcessing":
        single = [p["SpecialToken"]["id"] for p in post.get("single", []) if "SpecialToken" in p]
        if len(single) == 2:
            out["cls"], out["sep"] = single
    model = spec.get("model") or {}
    if isinstance(model.get("unk_token"), str):
        out["unk"] = model["unk_token"]
    elif isinstance(model.get("unk_id"), int) and model.get("vocab"):
        out["unk"] = model["vocab"][model["unk_id"]][0]
    return out


def json_options(
    kind: str, spec: Mapping[str, Any], config: Mapping[str, Any], config_path: str
) -> dict[str, Any]:
    """Family options implied by a tokenizer.json. They are written to
    tokenizer_config.json on save because transformers rebuilds the normalizer and
    pre-tokenizer from those keys, so a config that contradicts the JSON is an error."""
    norm = spec.get("normalizer") or {}
    steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm]
    types = [s.get("type") for s in steps]
    bert = next((s for s in steps if s.get("type") == "BertNormalizer"), None)
    lower = bert["lowercase"] if bert else "Lowercase" in types
    strip = bert.get("strip_accents") if bert else "StripAccents" in types
    pre = spec.get("pre_tokenizer") or {}
    pres = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    prefix = next(
        (
            p.get("add_prefix_space", False)
            if p["type"] == "ByteLevel"
            else p.get("prepend_scheme", "always") != "never"
            for p in pres
            if p.get("type") in ("ByteLevel", "Metaspace")
        ),
        False,
    )
    inferred = {
        "do_lower_case": lower,
        "strip_accents": strip,
        "tokenize_chinese_chars": bert["handle_chinese_chars"] if bert else False,
        "keep_accents": "StripAccents" not in types,
        "add_prefix_space": prefix,
        "trim_offsets": (spec.get("post_processor") or {}).get("trim_offsets", True),
    }

    def effective(key: str, value: Any) -> Any:
        # BERT's strip_accents=None means "strip when lowercasing".
        return lower if key == "strip_accents" and value is None else value

    opts = {}
    for key in OPTION_KEYS[kind]:
        opts[key] = config.get(key, inferred[key])
        if effective(key, opts[key]) != effective(key, inferred[key]):
            raise TokenizerFileError(
                f"{config_path}: {key}={opts[key]!r} contradicts "
                f"tokenizer.json, which implies {inferred[key]!r}"
            )
    return opts


# ---------------------------------------------------------------- side files and options


def files_present(directory: str) -> tuple[str, list[str]] | None:
    """(kind or 'json', file names) for the first tokenizer format found."""

    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(directory, name))

    if has("tokenizer.json"):
        return "json", ["tokenizer.json"]
    if has("vocab.txt"):
        return "wordpiece", ["vocab.txt"]
    if has("vocab.json") or has("merges.txt"):
        for name in ("vocab.json", "merges.txt"):
            if not has(name):
                raise FileNotFoundError(
                    f"{directory}: found {'merges.txt' if name == 'vocab.json' else 'vocab.json'} "
                    f"but not {name}; a byte-level BPE tokenizer needs both"
                )
        return "bpe", ["vocab.json", "merges.txt"]
    if has("spiece.model"):
        return "sentencepiece", ["spiece.model"]
    return None


def _token_str(value: Any) -> str | None:
    # Entries are strings or, as older transformers wrote them, {"content": ...} dicts.
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _special_tokens_from(config: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """(role -> token, extra special tokens) from tokenizer_config.json or
    special_tokens_map.json."""
    named = {role: _token_str(config.get(f"{role}_token")) for role in ROLES}
    extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    if isinstance(extra, dict):  # v5 model-specific form: name -> token
        extra = list(extra.values())
    extra = [t for t in map(_token_str, extra if isinstance(extra, list) else []) if t]
    return {role: t for role, t in named.items() if t}, extra


def read_side_files(directory: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(tokenizer_config.json, role -> special token, extra special tokens); the config
    wins over special_tokens_map.json (older transformers wrote both)."""
    config_path = os.path.join(directory, "tokenizer_config.json")
    map_path = os.path.join(directory, "special_tokens_map.json")
    config = read_json(config_path) if os.path.isfile(config_path) else {}
    specials, extra = _special_tokens_from(read_json(map_path) if os.path.isfile(map_path) else {})
    config_specials, config_extra = _special_tokens_from(config)
    return config, {**specials, **config_specials}, list(dict.fromkeys(extra + config_extra))


def settle_lowercase(opts: dict[str, Any], lowercase: bool | None, directory: str) -> None:
    """The caller's `lowercase` fills a gap the files leave; it must not contradict them."""
    if "do_lower_case" not in opts:
        if lowercase:
            raise TokenizerFileError(
                f"{directory}: lowercase=True requested, but byte-level BPE tokenizers "
                "(RoBERTa) are cased"
            )
    elif opts["do_lower_case"] is None:
        opts["do_lower_case"] = True if lowercase is None else lowercase  # transformers' default
    elif lowercase is not None and lowercase != opts["do_lower_case"]:
        raise TokenizerFileError(
            f"{directory}: lowercase={lowercase} requested, but the tokenizer files say "
            f"do_lower_case={opts['do_lower_case']}"
        )


def config_class(config: Mapping[str, Any], kind: str, directory: str) -> str | None:
    """tokenizer_class from the config, checked against the kind the files hold."""
    name = config.get("tokenizer_class")
    if not isinstance(name, str):
        return None
    if name.removesuffix("Fast") in CLASS_KIND:  # transformers v4 wrote BertTokenizerFast
        name = name.removesuffix("Fast")
    known = CLASS_KIND.get(name)
    if known is not None and known != kind:
        raise TokenizerFileError(
            f"{os.path.join(directory, 'tokenizer_config.json')}: tokenizer_class {name} "
            f"is for {known} tokenizers but the tokenizer files hold {kind}"
        )
    return name


def legacy_options(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Options for legacy files: tokenizer_config.json if present, else transformers'
    class defaults; do_lower_case stays None (undecided) when the config is silent."""
    defaults = {
        "wordpiece": {"do_lower_case": None, "strip_accents": None, "tokenize_chinese_chars": True},
        "bpe": {"add_prefix_space": False, "trim_offsets": True},
        "sentencepiece": {
            "do_lower_case": None,
            "keep_accents": False,
            "add_prefix_space": True,
            "trim_offsets": True,
        },
    }[kind]
    return {k: config.get(k, v) for k, v in defaults.items()}
