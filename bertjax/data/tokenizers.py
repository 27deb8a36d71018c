"""Tokenizers for BERT-family encoders: load, encode and save in transformers' layout.

`Tokenizer` wraps a `tokenizers.Tokenizer` (the HF Rust library) together with the
special-token facts the rest of bertjax needs (which id is [CLS], [MASK], ...).
`load_tokenizer(directory)` looks, in this order, for

  tokenizer.json (+ tokenizer_config.json)  any family; what transformers v5 writes
  vocab.txt                                 WordPiece: BERT, DistilBERT, ELECTRA
  vocab.json + merges.txt                   byte-level BPE: RoBERTa
  spiece.model                              SentencePiece Unigram: ALBERT

For the legacy files it builds the same pipeline (normalizer, pre-tokenizer, model,
post-processor, added special tokens) as transformers v5's BertTokenizer,
RobertaTokenizer and AlbertTokenizer, so ids equal theirs on the same files.
`Tokenizer.save(directory)` writes a directory `transformers.AutoTokenizer` loads.

Runtime dependencies are only `tokenizers`, `sentencepiece` (for its model proto) and
the stdlib: no TensorFlow, no transformers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors

from bertjax.errors import one_line

# Roles in the order transformers registers them as special tokens; the order decides
# the ids of special tokens that the vocabulary lacks (they are appended).
_ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
_REQUIRED_ROLES = ("cls", "sep", "pad", "mask", "unk")

# Per kind: the transformers class we save as, and its default special tokens.
_FAMILY_DEFAULTS: dict[str, tuple[str, dict[str, str]]] = {
    "wordpiece": (
        "BertTokenizer",
        dict(unk="[UNK]", sep="[SEP]", pad="[PAD]", cls="[CLS]", mask="[MASK]"),
    ),
    "bpe": (
        "RobertaTokenizer",
        dict(bos="<s>", eos="</s>", unk="<unk>", sep="</s>", pad="<pad>", cls="<s>", mask="<mask>"),
    ),
    "sentencepiece": (
        "AlbertTokenizer",
        dict(
            bos="[CLS]",
            eos="[SEP]",
            unk="<unk>",
            sep="[SEP]",
            pad="<pad>",
            cls="[CLS]",
            mask="[MASK]",
        ),
    ),
}
_CLASS_KIND = {
    "BertTokenizer": "wordpiece",
    "DistilBertTokenizer": "wordpiece",
    "ElectraTokenizer": "wordpiece",
    "RobertaTokenizer": "bpe",
    "AlbertTokenizer": "sentencepiece",
}
_MODEL_KIND = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "sentencepiece"}
# Config keys that matter per kind: transformers rebuilds the normalizer and
# pre-tokenizer from them even when a tokenizer.json is present.
_OPTION_KEYS = {
    "wordpiece": ("do_lower_case", "strip_accents", "tokenize_chinese_chars"),
    "bpe": ("add_prefix_space", "trim_offsets"),
    "sentencepiece": ("do_lower_case", "keep_accents", "add_prefix_space", "trim_offsets"),
}
# transformers writes int(1e30) when a tokenizer has no length limit.
_UNBOUNDED_LENGTH = 10**12
_SPM_UNIGRAM, _SPM_CONTROL, _SPM_USER_DEFINED = 1, 3, 4


class TokenizerFileError(ValueError):
    """A tokenizer file exists but cannot be used; the message names the file."""


class Tokenizer:
    """Wraps a `tokenizers.Tokenizer` plus the special-token facts bertjax needs.

    Attributes:
      kind: 'wordpiece' | 'sentencepiece' | 'bpe'.
      tokenizer_class: transformers class written by `save` (e.g. 'ElectraTokenizer');
        callers may reassign it to another class of the same kind.
      vocab_size: vocabulary size including added tokens (== len(transformers tokenizer)).
      cls_token, sep_token, pad_token, mask_token, unk_token: special token strings.
      cls_id, sep_id, pad_id, mask_id, unk_id: their ids.
      options: family options saved to tokenizer_config.json (do_lower_case, ...).
      model_max_length: maximum sequence length if known, else None.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        kind: str,
        tokenizer_class: str | None = None,
        special_tokens: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        model_max_length: int | None = None,
        source_files: Mapping[str, bytes] | None = None,
        extra_special_tokens: Iterable[str | AddedToken] = (),
    ) -> None:
        """Completes `backend` with the family's special tokens and post-processor.

        Args:
          backend: the tokenization pipeline; special tokens missing from it are added.
          kind: 'wordpiece' | 'sentencepiece' | 'bpe'.
          tokenizer_class: transformers class name; defaults to the kind's usual one.
          special_tokens: role ('cls', 'sep', 'pad', 'mask', 'unk', 'bos', 'eos') ->
            token, overriding the kind's defaults.
          options: family options, see `_OPTION_KEYS`.
          model_max_length: maximum sequence length if known.
          source_files: legacy file name -> bytes, copied by `save`.
          extra_special_tokens: further tokens never to mask (e.g. SentencePiece control
            and user-defined symbols), registered after the named ones.
        """
        if kind not in _FAMILY_DEFAULTS:
            raise ValueError(
                f"unknown tokenizer kind {kind!r}; expected one of {list(_FAMILY_DEFAULTS)}"
            )
        default_class, default_specials = _FAMILY_DEFAULTS[kind]
        self.kind = kind
        self.tokenizer_class = tokenizer_class or default_class
        self.special_tokens = {**default_specials, **(special_tokens or {})}
        self.options = dict(options or {})
        self.model_max_length = model_max_length
        extra = [
            t if isinstance(t, AddedToken) else AddedToken(t, special=True, normalized=False)
            for t in extra_special_tokens
        ]
        self.extra_special_tokens = list(dict.fromkeys(t.content for t in extra))
        self._source_files = dict(source_files or {})
        self._backend = backend
        # Encoding never truncates or pads here; packing and lengths are the pipeline's job.
        backend.no_truncation()
        backend.no_padding()
        _add_special_tokens(
            backend, [self.special_tokens[r] for r in _ROLES if r in self.special_tokens], extra
        )
        if backend.post_processor is None:
            backend.post_processor = self._default_post_processor()
        for role in _REQUIRED_ROLES:
            token = self.special_tokens[role]
            setattr(self, f"{role}_token", token)
            setattr(self, f"{role}_id", backend.token_to_id(token))

    def _default_post_processor(self) -> processors.PostProcessor:
        cls, sep = self.special_tokens["cls"], self.special_tokens["sep"]
        cls_id, sep_id = self._backend.token_to_id(cls), self._backend.token_to_id(sep)
        if self.kind == "bpe":
            # RoBERTa: <s> A </s> and <s> A </s></s> B </s>, all with type id 0.
            return processors.RobertaProcessing(
                (sep, sep_id),
                (cls, cls_id),
                trim_offsets=self.options.get("trim_offsets", True),
                add_prefix_space=self.options.get("add_prefix_space", False),
            )
        return processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, cls_id), (sep, sep_id)],
        )

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The underlying `tokenizers.Tokenizer` (for offsets, batching options, ...)."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def encode(
        self, text: str, pair: str | None = None, add_special_tokens: bool = True
    ) -> list[int]:
        """Token ids of `text` (and `pair`), with [CLS]/[SEP]-style tokens if asked."""
        return self._backend.encode(text, pair, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        """`encode` over a list of single texts, run in parallel by the Rust library."""
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text for `ids` (any iterable of ints, e.g. a numpy row)."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str:
        """Token string for id `i`; IndexError when `i` is outside the vocabulary."""
        token = self._backend.id_to_token(int(i))
        if token is None:
            raise IndexError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return token

    def token_to_id(self, t: str) -> int | None:
        """Id of token `t`, or None when it is not in the vocabulary."""
        return self._backend.token_to_id(t)

    def special_ids(self) -> set[int]:
        """Ids never to be masked: the named special tokens, the extra ones (as in
        transformers' `all_special_ids`) and any added token flagged special."""
        ids = {getattr(self, f"{role}_id") for role in _REQUIRED_ROLES}
        ids |= {self._backend.token_to_id(t) for t in self.extra_special_tokens}
        ids |= {i for i, t in self._backend.get_added_tokens_decoder().items() if t.special}
        return ids

    def save(self, directory: str) -> None:
        """Writes tokenizer.json, tokenizer_config.json, special_tokens_map.json and the
        legacy files it was loaded from (vocab.txt, ...) into `directory`.

        `transformers.AutoTokenizer.from_pretrained(directory)` then gives the same ids.
        """
        known_kind = _CLASS_KIND.get(self.tokenizer_class.removesuffix("Fast"))
        if known_kind is not None and known_kind != self.kind:
            raise ValueError(
                f"tokenizer_class {self.tokenizer_class!r} is for {known_kind} "
                f"tokenizers, this one is {self.kind}"
            )
        os.makedirs(directory, exist_ok=True)
        self._backend.save(os.path.join(directory, "tokenizer.json"))
        specials = {f"{role}_token": token for role, token in self.special_tokens.items()}
        config: dict[str, Any] = {
            "tokenizer_class": self.tokenizer_class,
            **specials,
            **self.options,
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        named = set(self.special_tokens.values())
        added_special = [
            t.content for t in self._backend.get_added_tokens_decoder().values() if t.special
        ]
        extra = [
            t for t in dict.fromkeys(self.extra_special_tokens + added_special) if t not in named
        ]
        if extra:
            config["extra_special_tokens"] = extra
        _write_json(os.path.join(directory, "tokenizer_config.json"), config)
        _write_json(os.path.join(directory, "special_tokens_map.json"), specials)
        for name, data in self._source_files.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
        # Tools that read only the legacy files (Google's and NVIDIA's BERT code read
        # vocab.txt): written from the model itself when not copied above.
        legacy = {"wordpiece": ("vocab.txt",), "bpe": ("vocab.json", "merges.txt")}
        if self.kind in legacy and not all(n in self._source_files for n in legacy[self.kind]):
            self._backend.model.save(directory)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(kind={self.kind!r}, tokenizer_class={self.tokenizer_class!r}, "
            f"vocab_size={self.vocab_size}, options={self.options})"
        )


def _add_special_tokens(
    backend: tokenizers.Tokenizer, named: list[str], extra: Iterable[AddedToken]
) -> None:
    """Registers special tokens as transformers does: un-normalized added tokens, so
    "[MASK]" in raw text maps to its id; ones missing from the vocabulary are appended."""
    present = {t.content for t in backend.get_added_tokens_decoder().values()}
    for token in [AddedToken(t, special=True, normalized=False) for t in named] + list(extra):
        if token.content not in present:
            present.add(token.content)
            backend.add_tokens([token])


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _read_json(path: str) -> dict[str, Any]:
    try:
        obj = json.loads(_read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerFileError(f"{path}: not valid UTF-8 JSON ({one_line(e)})") from e
    if not isinstance(obj, dict):
        raise TokenizerFileError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


# ---------------------------------------------------------------- one builder per file kind


def _build_wordpiece(
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


def _build_bpe(vocab_path: str, merges_path: str, opts: Mapping[str, Any]) -> tokenizers.Tokenizer:
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


def _read_spm_proto(path: str) -> Any:
    from sentencepiece import sentencepiece_model_pb2  # protobuf is only needed for ALBERT

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(_read_bytes(path))
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


def _build_sentencepiece(proto: Any, opts: Mapping[str, Any]) -> tokenizers.Tokenizer:
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


def _spm_added_tokens(proto: Any) -> list[AddedToken]:
    """Control symbols (special) and user-defined symbols (not special) are matched in
    raw text before normalization, as SentencePiece itself does."""
    return [
        AddedToken(p.piece, special=p.type == _SPM_CONTROL, normalized=False)
        for p in proto.pieces
        if p.type in (_SPM_CONTROL, _SPM_USER_DEFINED)
    ]


def _load_tokenizer_json(path: str) -> tuple[tokenizers.Tokenizer, dict[str, Any]]:
    """The tokenizer serialized in `path` and its parsed JSON."""
    try:
        text = _read_bytes(path).decode("utf-8")
        return tokenizers.Tokenizer.from_str(text), json.loads(text)
    except Exception as e:  # the Rust parser raises a bare Exception
        raise TokenizerFileError(f"{path}: cannot load tokenizer.json ({one_line(e)})") from e


def _specials_from_json(spec: Mapping[str, Any]) -> dict[str, str]:
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


def _json_options(
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
    for key in _OPTION_KEYS[kind]:
        opts[key] = config.get(key, inferred[key])
        if effective(key, opts[key]) != effective(key, inferred[key]):
            raise TokenizerFileError(
                f"{config_path}: {key}={opts[key]!r} contradicts "
                f"tokenizer.json, which implies {inferred[key]!r}"
            )
    return opts


# ---------------------------------------------------------------- loading


def _files_present(directory: str) -> tuple[str, list[str]] | None:
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
    named = {role: _token_str(config.get(f"{role}_token")) for role in _ROLES}
    extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    if isinstance(extra, dict):  # v5 model-specific form: name -> token
        extra = list(extra.values())
    extra = [t for t in map(_token_str, extra if isinstance(extra, list) else []) if t]
    return {role: t for role, t in named.items() if t}, extra


def _read_side_files(directory: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(tokenizer_config.json, role -> special token, extra special tokens); the config
    wins over special_tokens_map.json (older transformers wrote both)."""
    config_path = os.path.join(directory, "tokenizer_config.json")
    map_path = os.path.join(directory, "special_tokens_map.json")
    config = _read_json(config_path) if os.path.isfile(config_path) else {}
    specials, extra = _special_tokens_from(_read_json(map_path) if os.path.isfile(map_path) else {})
    config_specials, config_extra = _special_tokens_from(config)
    return config, {**specials, **config_specials}, list(dict.fromkeys(extra + config_extra))


def _settle_lowercase(opts: dict[str, Any], lowercase: bool | None, directory: str) -> None:
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


def _config_class(config: Mapping[str, Any], kind: str, directory: str) -> str | None:
    """tokenizer_class from the config, checked against the kind the files hold."""
    name = config.get("tokenizer_class")
    if not isinstance(name, str):
        return None
    if name.removesuffix("Fast") in _CLASS_KIND:  # transformers v4 wrote BertTokenizerFast
        name = name.removesuffix("Fast")
    known = _CLASS_KIND.get(name)
    if known is not None and known != kind:
        raise TokenizerFileError(
            f"{os.path.join(directory, 'tokenizer_config.json')}: tokenizer_class {name} "
            f"is for {known} tokenizers but the tokenizer files hold {kind}"
        )
    return name


def load_tokenizer(directory: str, *, lowercase: bool | None = None) -> Tokenizer:
    """Loads the tokenizer saved in `directory` (see the module docstring for formats).

    Args:
      directory: a local directory, e.g. an HF model directory or a bertjax export.
      lowercase: whether to lowercase (and strip accents) for vocab.txt / spiece.model
        when no tokenizer_config.json says so; default True as in transformers. When
        the files do say, a contradicting value raises ValueError.

    Raises:
      FileNotFoundError: the directory or its tokenizer files are missing.
      TokenizerFileError (a ValueError): a file is corrupt or the files disagree.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"tokenizer directory {directory} does not exist")
    found = _files_present(directory)
    if found is None:
        raise FileNotFoundError(
            f"no tokenizer files in {directory}: looked for tokenizer.json, vocab.txt, "
            "vocab.json + merges.txt, spiece.model"
        )
    fmt, names = found
    paths = [os.path.join(directory, n) for n in names]
    config, specials, extra = _read_side_files(directory)
    sources: dict[str, bytes] = {}
    extra_tokens: list[str | AddedToken] = list(extra)

    if fmt == "json":
        backend, spec = _load_tokenizer_json(paths[0])
        model_type = spec.get("model", {}).get("type") or type(backend.model).__name__
        if model_type not in _MODEL_KIND:
            raise TokenizerFileError(
                f"{paths[0]}: unsupported model type {model_type!r}; "
                f"expected one of {list(_MODEL_KIND)}"
            )
        kind = _MODEL_KIND[model_type]
        specials = {**_specials_from_json(spec), **specials}
        config_path = os.path.join(directory, "tokenizer_config.json")
        opts = _json_options(kind, spec, config, config_path)
        _settle_lowercase(opts, lowercase, directory)
        spm = os.path.join(directory, "spiece.model")  # cannot be rebuilt from the JSON
        if kind not in ("wordpiece", "bpe") and os.path.isfile(spm):
            sources = {"spiece.model": _read_bytes(spm)}
    else:
        kind = fmt
        opts = _legacy_options(kind, config)
        _settle_lowercase(opts, lowercase, directory)
        sources = {n: _read_bytes(p) for n, p in zip(names, paths, strict=True)}
        if kind == "wordpiece":
            unk = specials.get("unk", _FAMILY_DEFAULTS[kind][1]["unk"])
            backend = _build_wordpiece(paths[0], opts, unk)
        elif kind == "bpe":
            backend = _build_bpe(paths[0], paths[1], opts)
        else:
            proto = _read_spm_proto(paths[0])
            backend = _build_sentencepiece(proto, opts)
            extra_tokens = [*_spm_added_tokens(proto), *extra_tokens]

    max_len = config.get("model_max_length")
    if not isinstance(max_len, int) or max_len >= _UNBOUNDED_LENGTH:
        max_len = None
    return Tokenizer(
        backend,
        kind=kind,
        tokenizer_class=_config_class(config, kind, directory),
        special_tokens=specials,
        options=opts,
        model_max_length=max_len,
        source_files=sources,
        extra_special_tokens=extra_tokens,
    )


def _legacy_options(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
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


def train_wordpiece(
    texts: Iterable[str], vocab_size: int = 8000, lowercase: bool = True
) -> Tokenizer:
    """Trains a BERT-style WordPiece tokenizer (BertNormalizer, BertPreTokenizer, ##)."""
    from tokenizers import trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False
    )
    backend.train_from_iterator(texts, trainer)
    return Tokenizer(backend, kind="wordpiece", options={"do_lower_case": lowercase})
