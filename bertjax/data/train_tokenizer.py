r"""Trains a tokenizer vocabulary on a text source and writes a standard tokenizer directory.

  python -m bertjax prepare tokenizer --source=SPEC --kind=KIND --vocab_size=N --out=DIR \
      [--lowercase]

  --source      a source spec (bertjax/data/sources.py): demo, bert:GLOB, text:GLOB,
                jsonl:GLOB#FIELD, tfds:NAME[:SPLIT][#FEATURE]
  --kind        wordpiece              BERT, DistilBERT, ELECTRA: vocab.txt
                                       [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4
                sentencepiece-unigram  ALBERT: spiece.model (the ALBERT spm_train recipe)
                                       <pad>=0 <unk>=1 [CLS]=2 [SEP]=3 [MASK]=4
                sentencepiece-bpe      SentencePiece with BPE pieces: spiece.model, same ids
                                       (loads as a generic fast tokenizer: transformers'
                                       AlbertTokenizer only takes Unigram models)
                bpe                    RoBERTa byte-level BPE: vocab.json + merges.txt
                                       <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4
                bpe-modernbert         ModernBERT: byte-level BPE after NFC, BERT's
                                       specials and [CLS] A [SEP] (B [SEP]), as the
                                       released checkpoints' tokenizer.json
                                       [UNK]=0 [CLS]=1 [SEP]=2 [PAD]=3 [MASK]=4
  --vocab_size  the vocabulary size to aim for, special tokens included; the result may
                be smaller (small corpora), never larger
  --out         output directory, written atomically (a temporary directory renamed;
                on gs://, uploaded file by file with tokenizer.json last)
  --lowercase   lowercase (and strip accents) before tokenizing; default: uncased for
                WordPiece and SentencePiece (as bert-base-uncased and ALBERT), cased for
                byte-level BPE, which cannot be lowercased (RoBERTa, ModernBERT are cased)

The directory holds the legacy file above plus tokenizer.json, tokenizer_config.json and
special_tokens_map.json (`Tokenizer.save`), so `bertjax.data.tokenizers.load_tokenizer`
and `transformers.AutoTokenizer.from_pretrained` both load it and give the same ids.
Training text goes through the same normalizer as encoding will (BERT's for WordPiece,
ALBERT's accent stripping / lowercasing before SentencePiece's own NFKC), so the
vocabulary fits what the tokenizer will see. SentencePiece's training is
train_sentencepiece.py's.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from bertjax import paths
from bertjax.data import tokenizers as tok_lib
from bertjax.data.source_base import Source
from bertjax.data.sources import open_source
from bertjax.data.train_sentencepiece import SPM_BPE_CLASS, _train_sentencepiece

KINDS = ("wordpiece", "sentencepiece-unigram", "sentencepiece-bpe", "bpe")
# One more kind, a family's own: byte-level BPE with BERT's specials, in the order the
# released ModernBERT numbers them (50280-50284 there, after OLMo's vocabulary).
MODERNBERT_KIND = "bpe-modernbert"
MODERNBERT_SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
_BYTE_KINDS = ("bpe", MODERNBERT_KIND)  # cased, all 256 bytes in the alphabet
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BPE_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
_DEFAULT_CLASS = {
    "wordpiece": "BertTokenizer",
    "sentencepiece-unigram": "AlbertTokenizer",
    "sentencepiece-bpe": SPM_BPE_CLASS,
    "bpe": "RobertaTokenizer",
    MODERNBERT_KIND: "PreTrainedTokenizerFast",  # what the released checkpoints name
}
_MIN_VOCAB = {
    "wordpiece": 100,
    "sentencepiece-unigram": 50,
    "sentencepiece-bpe": 50,
    "bpe": 300,
    MODERNBERT_KIND: 300,
}
_BATCH = 1000  # sentences per batch handed to the Rust trainers


def train(
    source: Source | str | Iterable[list[str] | str],
    kind: str,
    vocab_size: int,
    out_dir: str,
    lowercase: bool | None = None,
    family: str | None = None,
    *,
    overwrite: bool = False,
    seed: int = 0,
) -> tok_lib.Tokenizer:
    """Trains a `kind` vocabulary of at most `vocab_size` tokens on `source` and writes
    it to `out_dir` (see the module docstring for kinds and files).

    Args:
      source: a `Source`, a source spec string, or an iterable of documents (lists of
        sentences) or of plain strings.
      kind: 'wordpiece' | 'sentencepiece-unigram' | 'sentencepiece-bpe' | 'bpe' |
        'bpe-modernbert'.
      vocab_size: the target size including special tokens.
      out_dir: the directory to write (local or gs://); it must not exist unless
        `overwrite`.
      lowercase: lowercase (and strip accents); None: True except for byte-level BPE.
      family: model family ('bert', 'albert', ...), which picks the transformers class
        written (BertTokenizer, ElectraTokenizer, ...); it must fit `kind`.
      overwrite: replace an existing `out_dir`.
      seed: seeds SentencePiece's sentence sampling (only used past
        train_sentencepiece.SPM_MAX_SENTENCES).

    Returns:
      The trained tokenizer, as `load_tokenizer(out_dir)` loads it.

    Raises:
      ValueError: an unknown kind or family, a family that does not take `kind`, a
        vocab_size too small for the kind, lowercase=True for byte-level BPE, or a
        corpus without text.
    """
    if kind not in _DEFAULT_CLASS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {list(_DEFAULT_CLASS)}")
    tokenizer_class = _DEFAULT_CLASS[kind]
    if family is not None:
        from bertjax.models.registry import family as family_record

        record = family_record(family)  # ValueError naming the families
        tokenizer_class = record.tokenizer_class
        if kind != record.tokenizer_kind:
            raise ValueError(f"family {family} uses {record.tokenizer_kind} tokenizers, not {kind}")
    if vocab_size < _MIN_VOCAB[kind]:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for {kind} (at least {_MIN_VOCAB[kind]})"
        )
    if lowercase is None:
        lowercase = kind not in _BYTE_KINDS
    if lowercase and kind in _BYTE_KINDS:
        raise ValueError(f"byte-level BPE ({kind}) is cased: lowercase=True is not supported")
    if isinstance(source, str):
        source = open_source(source)

    remote = paths.is_remote(out_dir)
    # Built locally; on an object store tokenizer.json (what load_tokenizer looks for)
    # is uploaded last.
    with paths.atomic_directory(out_dir, overwrite=overwrite, marker="tokenizer.json") as tmp:
        if kind == "wordpiece":
            tok = _train_wordpiece(_sentences(source), vocab_size, lowercase, tmp)
        elif kind == "bpe":
            tok = _train_byte_bpe(_sentences(source), vocab_size, tmp)
        elif kind == MODERNBERT_KIND:
            tok = _train_modernbert_bpe(_sentences(source), vocab_size)
        else:
            tok = _train_sentencepiece(
                _sentences(source), kind.split("-")[1], vocab_size, lowercase, tmp, seed
            )
        tok.tokenizer_class = tokenizer_class
        tok.save(tmp)
        if remote:
            loaded = tok_lib.load_tokenizer(tmp)
    return loaded if remote else tok_lib.load_tokenizer(out_dir)


def _sentences(source: Source | Iterable[list[str] | str]) -> Iterator[str]:
    """Every sentence of every document, in order."""
    docs = source.documents() if isinstance(source, Source) else source
    for doc in docs:
        if isinstance(doc, str):
            if doc.strip():
                yield doc
        else:
            yield from (s for s in doc if s.strip())


class _Counted:
    """Wraps the sentence stream for the Rust trainers (batches of _BATCH) and counts
    what went through, so an empty corpus fails with a clear message."""

    def __init__(self, sentences: Iterator[str]) -> None:
        self.sentences, self.count = sentences, 0

    def batches(self) -> Iterator[list[str]]:
        batch: list[str] = []
        for s in self.sentences:
            batch.append(s)
            if len(batch) == _BATCH:
                self.count += len(batch)
                yield batch
                batch = []
        if batch:
            self.count += len(batch)
            yield batch

    def check(self) -> None:
        if not self.count:
            raise ValueError("the source holds no text to train a tokenizer on")


def _train_wordpiece(
    sentences: Iterator[str], vocab_size: int, lowercase: bool, out: str
) -> tok_lib.Tokenizer:
    """A WordPiece vocabulary for BERT's pipeline (BertNormalizer, BertPreTokenizer),
    learnt as `tokenizers`' WordPieceTrainer does (BPE merges; a "##" piece continues a
    word) but deterministically: that trainer numbers the "##" pieces in hash-map order,
    which changes which merges win ties, so two runs give different vocabularies. Here
    continuation characters are coded as distinct characters (Unicode planes 15-16)
    before a plain BPE trainer sees them, so every symbol is in its sorted alphabet.
    The vocabulary goes to vocab.txt in id order."""
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )  # what load_tokenizer builds for vocab.txt: strips accents exactly when lowercasing
    pre = pre_tokenizers.BertPreTokenizer()
    counted = _Counted(sentences)
    words: Counter[str] = Counter()
    for batch in counted.batches():
        # Both steps act per character/word, so a batch can go through in one call.
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str("\n".join(batch))))
    counted.check()

    # The alphabet: the most frequent characters (ties: lower code point), at most a
    # quarter of the vocabulary (BERT's 30,522 tokens have ~1,000); others are dropped
    # from the training words, as WordPieceTrainer's limit_alphabet does, and map to
    # [UNK] when encoding. Characters that the coding below cannot hold are dropped too.
    chars: Counter[str] = Counter()
    for w, n in words.items():
        for c in w:
            chars[c] += n
    ranked = sorted((c for c in chars if ord(c) < _CODED_RANGE), key=lambda c: (-chars[c], c))
    alphabet = set(ranked[: min(1000, vocab_size // 4)])
    coded: Counter[str] = Counter()
    for w, n in words.items():
        kept = [c for c in w if c in alphabet]
        if kept:
            coded[kept[0] + "".join(chr(_CODED + ord(c)) for c in kept[1:])] += n
    del words

    def feed() -> Iterator[str]:
        for w in sorted(coded):
            n = coded[w]
            while n > 0:
                k = min(n, 10_000)
                yield " ".join([w] * k)
                n -= k

    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(WORDPIECE_SPECIALS), show_progress=False
    )
    backend.train_from_iterator(feed(), trainer)
    vocab = sorted(backend.get_vocab().items(), key=lambda kv: kv[1])
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.writelines(_decode_piece(token) + "\n" for token, _ in vocab)
    return tok_lib.load_tokenizer(out, lowercase=lowercase)


# A character that continues a word is coded as chr(_CODED + its code point) while the
# WordPiece vocabulary is learnt: planes 15-16 (private use) hold code points < 0x20000.
_CODED = 0xF0000
_CODED_RANGE = 0x20000


def _decode_piece(token: str) -> str:
    """A learnt piece in WordPiece notation: coded continuation characters -> "##..."."""
    if token in WORDPIECE_SPECIALS:
        return token
    plain = "".join(chr(ord(c) - _CODED) if ord(c) >= _CODED else c for c in token)
    return "##" + plain if ord(token[0]) >= _CODED else plain


def _byte_trainer(vocab_size: int, specials: list) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )


def _train_byte_bpe(sentences: Iterator[str], vocab_size: int, out: str) -> tok_lib.Tokenizer:
    """RoBERTa's byte-level BPE (GPT-2 pre-tokenization, all 256 bytes in the alphabet,
    no normalizer); vocab.json + merges.txt."""
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = _byte_trainer(vocab_size, list(BPE_SPECIALS))
    counted = _Counted(sentences)
    backend.train_from_iterator(counted.batches(), trainer)
    counted.check()
    backend.model.save(out)  # vocab.json, merges.txt
    return tok_lib.load_tokenizer(out)


def _train_modernbert_bpe(sentences: Iterator[str], vocab_size: int) -> tok_lib.Tokenizer:
    """The released ModernBERT's tokenizer.json pipeline (OLMo's GPT-NeoX-style BPE with
    BERT's specials): NFC, byte-level pre-tokenization (GPT-2 regex, no prefix space),
    all 256 bytes in the alphabet, [MASK] taking the space before it (lstrip), and
    TemplateProcessing [CLS] A [SEP] / [CLS] A [SEP] B [SEP]. [CLS]/[SEP] double as
    bos/eos, as the released config.json's bos_token_id / eos_token_id do. One step
    more than the released file: a ByteLevel post-processor before the template trims
    the space before a word from its offsets (as RoBERTa's does), so SQuAD answers fall
    on token boundaries; ids are the same."""
    unk, cls, sep, pad, mask = MODERNBERT_SPECIALS
    backend = tokenizers.Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = [
        tokenizers.AddedToken(t, special=True, normalized=False, lstrip=t == mask)
        for t in MODERNBERT_SPECIALS
    ]
    counted = _Counted(sentences)
    backend.train_from_iterator(counted.batches(), _byte_trainer(vocab_size, specials))
    counted.check()
    ids = {t: backend.token_to_id(t) for t in (cls, sep)}
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(
                single=f"{cls}:0 $A:0 {sep}:0",
                pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
                special_tokens=list(ids.items()),
            ),
        ]
    )
    return tok_lib.Tokenizer(
        backend,
        kind="bpe",
        tokenizer_class=_DEFAULT_CLASS[MODERNBERT_KIND],
        special_tokens=dict(bos=cls, eos=sep, unk=unk, sep=sep, pad=pad, cls=cls, mask=mask),
        options={"add_prefix_space": False, "trim_offsets": True},
    )
