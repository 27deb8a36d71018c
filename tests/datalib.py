"""Prepared data written here exactly per the data contract (docs/data.md), for the
pipeline's tests and the tests that read a pipeline (packing, Google records, bench):
`write_data` writes shards and a manifest whose every example carries a unique id in
its tokens 1 and 2 (`uid_tokens`); `take` reads the first batches of a pipeline.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from bertjax.data.masking import MaskingConfig

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, CLS, SEP, MASK = 0, 2, 3, 4
_WORDS = 400
VOCAB = len(_SPECIALS) + 2 * _WORDS  # w0..w399 then ##w0..##w399
BASE = 2 * _WORDS  # id digits 5 .. VOCAB-1


def _save_tokenizer(directory: str) -> None:
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    from bertjax.data.tokenizers import Tokenizer

    tokens = _SPECIALS + [f"w{i}" for i in range(_WORDS)] + [f"##w{i}" for i in range(_WORDS)]
    backend = Backend(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    tok = Tokenizer(backend, kind="wordpiece", options={"do_lower_case": True})
    assert tok.vocab_size == VOCAB and (tok.pad_id, tok.cls_id, tok.mask_id) == (PAD, CLS, MASK)
    tok.save(directory)


def uid_tokens(uid: int) -> list[int]:
    return [5 + uid // BASE, 5 + uid % BASE]


def _example_ids(uid: int, length: int, rng: np.random.Generator) -> list[int]:
    body = rng.integers(5, VOCAB, size=length - 4).tolist()
    return [CLS, *uid_tokens(uid), *body, SEP]


def write_data(
    directory: str,
    n_examples: int,
    n_shards: int,
    max_seq_length: int = 16,
    static: bool = False,
    max_predictions: int = 3,
    split: str = "train",
    mutate=None,
    seed: int = 0,
) -> dict[int, dict[str, list[int]]]:
    """Writes a prepared directory per the contract; returns uid -> features written.

    Shard i gets examples i, i + n_shards, ... (so shard sizes differ by at most one).
    `mutate(uid, features)` may alter an example's features before it is written.
    """
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    _save_tokenizer(os.path.join(directory, "tokenizer"))
    rng = np.random.default_rng(seed)
    examples: dict[int, dict[str, list[int]]] = {}
    shards = []
    for s in range(n_shards):
        name = f"{split}-{s:05d}-of-{n_shards:05d}.tfrecord"
        count = tokens = 0
        with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
            for uid in range(s, n_examples, n_shards):
                length = int(rng.integers(5, max_seq_length + 1))
                ids = _example_ids(uid, length, rng)
                feats = {
                    "input_ids": ids,
                    "token_type_ids": [0] * (length // 2) + [1] * (length - length // 2),
                    "pair_label": [uid % 2],
                }
                if static:
                    k = int(rng.integers(1, min(max_predictions, length - 4) + 1))
                    pos = sorted(rng.choice(np.arange(3, length - 1), size=k, replace=False))
                    feats["masked_lm_positions"] = [int(p) for p in pos]
                    feats["masked_lm_ids"] = [ids[p] for p in pos]
                    for p in pos:
                        ids[p] = MASK
                if mutate is not None:
                    mutate(uid, feats)
                examples[uid] = feats
                proto = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            key: tf.train.Feature(int64_list=tf.train.Int64List(value=v))
                            for key, v in feats.items()
                        }
                    )
                )
                writer.write(proto.SerializeToString())
                count += 1
                tokens += len(ids)
        with open(os.path.join(directory, name), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        shards.append({"file": name, "examples": count, "tokens": tokens, "sha256": digest})
    with open(os.path.join(directory, "tokenizer", "tokenizer.json"), "rb") as f:
        tok_sha = hashlib.sha256(f.read()).hexdigest()
    manifest = {
        "format": "bertjax-data",
        "version": 1,
        "settings": {
            "seed": seed,
            "source": "synthetic",
            "max_seq_length": max_seq_length,
            "instances": "nsp",
            "masking": {"max_predictions_per_seq": max_predictions, "strategy": "token"},
        },
        "tokenizer": {
            "kind": "wordpiece",
            "class": "BertTokenizer",
            "vocab_size": VOCAB,
            "sha256": tok_sha,
        },
        "masking": "static" if static else "dynamic",
        "splits": {
            split: {
                "examples": n_examples,
                "tokens": sum(s["tokens"] for s in shards),
                "shards": shards,
            }
        },
        "source_stats": {},
        "vocab_check": "ok",
    }
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return examples


DYN = MaskingConfig(max_predictions_per_seq=3)


def take(pipe, n: int) -> list[dict[str, np.ndarray]]:
    out = []
    for batch in pipe:
        out.append(batch)
        if len(out) == n:
            break
    return out
