"""SentencePiece vocabularies for `prepare tokenizer` (train_tokenizer.py): ALBERT's
spm_train recipe for the unigram and BPE kinds, on text normalized as transformers'
AlbertTokenizer (and load_tokenizer) will normalize it, and a SentencePiece BPE model
turned into a `tokenizers` pipeline (transformers' AlbertTokenizer only takes unigram
models).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from bertjax.data import tokenizers as tok_lib

SENTENCEPIECE_SPECIALS = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")
# The class a sentencepiece-bpe directory names: a generic fast tokenizer.
SPM_BPE_CLASS = "PreTrainedTokenizerFast"
# SentencePiece keeps its training sentences in memory: past this many it samples them
# (reservoir sampling, seeded), as ALBERT's recipe did (--input_sentence_size=10000000).
SPM_MAX_SENTENCES = 10_000_000
_SPM_MAX_SENTENCE_BYTES = 1 << 16  # sources cap sentences at 10,000 characters


def _spm_prenormalizer(lowercase: bool) -> normalizers.Normalizer:
    """The normalization transformers' AlbertTokenizer (and load_tokenizer) apply before
    SentencePiece's own: `` and '' -> ", NFKD + accent stripping, optional lowercase."""
    steps = [
        normalizers.Replace("``", '"'),
        normalizers.Replace("''", '"'),
        normalizers.NFKD(),
        normalizers.StripAccents(),
    ]
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


def _train_sentencepiece(
    sentences: Iterator[str],
    model_type: str,
    vocab_size: int,
    lowercase: bool,
    out: str,
    seed: int,
) -> tok_lib.Tokenizer:
    """ALBERT's spm_train recipe: pad_id=0 unk_id=1, no bos/eos, control symbols [CLS]
    [SEP] [MASK] (ids 2, 3, 4), character_coverage 0.99995, sampled input past
    SPM_MAX_SENTENCES. `model_type` is 'unigram' or 'bpe'."""
    import sentencepiece as spm

    norm = _spm_prenormalizer(lowercase)
    count = 0

    def normalized() -> Iterator[str]:
        nonlocal count
        for s in sentences:
            count += 1
            yield norm.normalize_str(s)

    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=normalized(),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # a small corpus gives a smaller vocabulary, not an error
            pad_id=0,
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            pad_piece=SENTENCEPIECE_SPECIALS[0],
            unk_piece=SENTENCEPIECE_SPECIALS[1],
            control_symbols=list(SENTENCEPIECE_SPECIALS[2:]),
            character_coverage=0.99995,
            input_sentence_size=SPM_MAX_SENTENCES,
            shuffle_input_sentence=True,
            max_sentence_length=_SPM_MAX_SENTENCE_BYTES,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        if not count:
            raise ValueError("the source holds no text to train a tokenizer on") from e
        raise ValueError(f"SentencePiece training failed: {' '.join(str(e).split())}") from e
    data = model.getvalue()
    with open(os.path.join(out, "spiece.model"), "wb") as f:
        f.write(data)
    if model_type == "unigram":
        return tok_lib.load_tokenizer(out, lowercase=lowercase)
    return _spm_bpe_tokenizer(data, lowercase)


def _spm_bpe_tokenizer(data: bytes, lowercase: bool) -> tok_lib.Tokenizer:
    """A SentencePiece BPE model as a `tokenizers` pipeline: ALBERT's normalizer and
    pre-tokenizer, and BPE merges recovered from the piece scores, as transformers'
    SentencePiece converter does (a pair merges into a piece; lower id = earlier)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(data)
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    normal = [p.piece for p in proto.pieces if p.type == 1]  # NORMAL pieces merge
    merges = []
    for piece in normal:
        pairs = [
            (piece[:i], piece[i:])
            for i in range(1, len(piece))
            if piece[:i] in vocab and piece[i:] in vocab
        ]
        merges += sorted(pairs, key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
    merges.sort(key=lambda lr: vocab[lr[0] + lr[1]])
    backend = tokenizers.Tokenizer(
        models.BPE(
            vocab,
            merges,
            unk_token=SENTENCEPIECE_SPECIALS[1],
            fuse_unk=True,
            byte_fallback=False,
            dropout=None,
        )
    )
    steps = [_spm_prenormalizer(lowercase)]
    if proto.normalizer_spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap))
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always"),
        ]
    )
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    pad, unk, cls, sep, mask = SENTENCEPIECE_SPECIALS
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    return tok_lib.Tokenizer(
        backend,
        kind="bpe",
        tokenizer_class=SPM_BPE_CLASS,
        special_tokens=dict(bos=cls, eos=sep, unk=unk, sep=sep, pad=pad, cls=cls, mask=mask),
        options={"add_prefix_space": True, "trim_offsets": True},
        source_files={"spiece.model": data},
    )
