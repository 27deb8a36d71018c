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
RobertaTokenizer and AlbertTokenizer, so ids equal theirs on the same files (the
readers and builders: tokenizer_files.py).
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

from bertjax.data import tokenizer_files as files
from bertjax.data.tokenizer_files import TokenizerFileError

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
          options: family options, see `files.OPTION_KEYS`.
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
        named = [self.special_tokens[r] for r in files.ROLES if r in self.special_tokens]
        _add_special_tokens(backend, named, extra)
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
        known_kind = files.CLASS_KIND.get(self.tokenizer_class.removesuffix("Fast"))
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
    found = files.files_present(directory)
    if found is None:
        raise FileNotFoundError(
            f"no tokenizer files in {directory}: looked for tokenizer.json, vocab.txt, "
            "vocab.json + merges.txt, spiece.model"
        )
    fmt, names = found
    paths = [os.path.join(directory, n) for n in names]
    config, specials, extra = files.read_side_files(directory)
    sources: dict[str, bytes] = {}
    extra_tokens: list[str | AddedToken] = list(extra)

    if fmt == "json":
        backend, spec = files.load_tokenizer_json(paths[0])
        model_type = spec.get("model", {}).get("type") or type(backend.model).__name__
        if model_type not in files.MODEL_KIND:
            raise TokenizerFileError(
                f"{paths[0]}: unsupported model type {model_type!r}; "
                f"expected one of {list(files.MODEL_KIND)}"
            )
        kind = files.MODEL_KIND[model_type]
        specials = {**files.specials_from_json(spec), **specials}
        config_path = os.path.join(directory, "tokenizer_config.json")
        opts = files.json_options(kind, spec, config, config_path)
        files.settle_lowercase(opts, lowercase, directory)
        spm = os.path.join(directory, "spiece.model")  # cannot be rebuilt from the JSON
        if kind not in ("wordpiece", "bpe") and os.path.isfile(spm):
            sources = {"spiece.model": files.read_bytes(spm)}
    else:
        kind = fmt
        opts = files.legacy_options(kind, config)
        files.settle_lowercase(opts, lowercase, directory)
        sources = {n: files.read_bytes(p) for n, p in zip(names, paths, strict=True)}
        if kind == "wordpiece":
            unk = specials.get("unk", _FAMILY_DEFAULTS[kind][1]["unk"])
            backend = files.build_wordpiece(paths[0], opts, unk)
        elif kind == "bpe":
            backend = files.build_bpe(paths[0], paths[1], opts)
        else:
            proto = files.read_spm_proto(paths[0])
            backend = files.build_sentencepiece(proto, opts)
            extra_tokens = [*files.spm_added_tokens(proto), *extra_tokens]

    max_len = config.get("model_max_length")
    if not isinstance(max_len, int) or max_len >= files.UNBOUNDED_LENGTH:
        max_len = None
    return Tokenizer(
        backend,
        kind=kind,
        tokenizer_class=files.config_class(config, kind, directory),
        special_tokens=specials,
        options=opts,
        model_max_length=max_len,
        source_files=sources,
        extra_special_tokens=extra_tokens,
    )


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
