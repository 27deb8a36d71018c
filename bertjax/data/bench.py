"""`bench data`: the input pipeline's throughput next to transformers' MLM collator.

    python -m bertjax bench data --config=configs/pretrain.py:bert_base [--seconds=10]

Times, in one run on this machine:

  preparation  (only when it prepares the data itself) `prepare.prepare` on the
               built-in demo corpus: MB of text per second;
  ours         `Pipeline` with dynamic masking: reading the shards, parsing, padding,
               masking and checks, as training consumes it (examples/s, tokens/s);
  reference    transformers' `DataCollatorForLanguageModeling` (mlm_probability
               0.15; `whole_word_mask=True` for word-level strategies) on the SAME
               examples, pre-tokenized and held in memory as lists of ids: only
               padding and masking, which flatters the reference.

A gs:// data directory is read as training reads it, through the pipeline's local shard
cache (its first pass includes the downloads). Without a data directory it prepares a
temporary one from the demo corpus (or, when
`prepare` is unavailable, writes synthetic token ids) and says which. The last line is
machine-readable: `ratio=R ours=X reference=Y unit=seq/s`. transformers and torch are
imported only for the reference (bench_reference.py); they are not runtime dependencies.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from bertjax import paths
from bertjax.data.bench_reference import time_reference, transformers_version
from bertjax.data.manifest import Manifest
from bertjax.data.masking import MaskingConfig
from bertjax.data.pipeline import Pipeline, PipelineConfig


def bench_data(
    data_dir: str | None = None,
    seq_len: int = 128,
    batch_size: int = 256,
    seconds: float = 10.0,
    strategy: str = "token",
    *,
    max_predictions_per_seq: int | None = None,
    demo_mb: float = 4.0,
    prepare_workers: int = 2,
    reference: bool = True,
    also: tuple[str, ...] = ("token", "whole_word"),
    print_fn: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Prints and returns throughput figures; see the module docstring.

    Args:
      data_dir: a prepared directory with dynamic masking; None prepares a temporary
        one (removed afterwards) from `demo_mb` MB of the demo corpus.
      seq_len: max_seq_length when preparing (a given directory's manifest decides).
      batch_size: examples per batch, for ours and the reference.
      seconds: how long to time each side (after a short warm-up).
      strategy: token | whole_word | ngram | span.
      max_predictions_per_seq: P of the masking; default ceil(0.15 * seq_len).
      demo_mb: text to prepare when there is no data_dir.
      prepare_workers: preparation processes (0: this process).
      reference: also time the transformers collator.
      also: further strategies timed in the same run (token and whole word by default,
        so both collator variants appear side by side); the last line is `strategy`'s.
      print_fn: where the lines go.

    Returns:
      dict with ours/reference sequences and tokens per second, ratio, data facts.
    """
    result: dict[str, Any] = {"strategy": strategy, "batch_size": batch_size}
    tmp = None
    try:
        if data_dir is None:
            tmp = tempfile.mkdtemp(prefix="bertjax-bench-data-")
            data_dir = os.path.join(tmp, "data")
            result.update(_make_data(data_dir, seq_len, demo_mb, prepare_workers, print_fn))
        else:
            result["data"] = "given"
            print_fn(f"data: {data_dir} (given)")
        manifest = Manifest.read(data_dir)
        seq_len = manifest.max_seq_length
        p = max_predictions_per_seq or max(1, math.ceil(0.15 * seq_len))
        static = manifest.masking == "static"
        if static:
            print_fn("note: the shards are statically masked; timing static masks, not dynamic")
        # The configured strategy first (its figures make the last line), then the
        # others of `also`, each against the collator's matching variant.
        for name in dict.fromkeys([strategy, *([] if static else also)]):
            figures = _bench_one(
                manifest,
                name,
                None if static else MaskingConfig(max_predictions_per_seq=p, strategy=name),
                batch_size,
                seq_len,
                seconds,
                reference,
                print_fn,
            )
            result.setdefault("strategies", {})[name] = figures
            if name == strategy:
                result.update(seq_len=seq_len, **figures)
        result["packing"] = _packing_efficiency(manifest, batch_size, print_fn)
        ours, ref_rate = result["ours"], result.get("reference", {}).get("seq_per_s", float("nan"))
        ratio = result["ratio"]
        print_fn(
            f"ratio={ratio:.2f} ours={ours['seq_per_s']:.0f} reference={ref_rate:.0f} unit=seq/s"
        )
        return result
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _bench_one(
    manifest: Manifest,
    strategy: str,
    masking: MaskingConfig | None,
    batch_size: int,
    seq_len: int,
    seconds: float,
    reference: bool,
    print_fn: Callable[[str], None],
) -> dict[str, Any]:
    """Times ours and (optionally) the collator for one masking strategy; prints both."""
    pipe = Pipeline(manifest, PipelineConfig("train", batch_size, seed=0, masking=masking))
    ours = _time_pipeline(pipe, seconds)
    mode = f"dynamic {strategy} masking" if masking else "static masks"
    print_fn(
        f"ours: bertjax Pipeline ({mode}, seq_len {seq_len}, batch {batch_size}; "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}): "
        f"{ours['seq_per_s']:,.0f} examples/s, "
        f"{ours['tokens_per_s']:,.0f} tokens/s ({ours['batches']} batches in "
        f"{ours['seconds']:.1f} s)"
    )
    figures: dict[str, Any] = {"ours": ours}
    ref_rate = float("nan")
    if reference:
        examples = _read_examples(pipe, max(20 * batch_size, 4096))
        with paths.local_copy(manifest.tokenizer_dir) as tokenizer_dir:  # gs:// data too
            ref = time_reference(examples, tokenizer_dir, batch_size, strategy, seconds)
        figures["reference"] = ref
        ref_rate = ref["seq_per_s"]
        print_fn(
            f"reference: transformers {transformers_version()} {ref['name']} "
            f"(return_tensors={ref['tensors']!r}; the same examples, in memory, as "
            f"{ref['form']}): {ref['seq_per_s']:,.0f} examples/s, "
            f"{ref['tokens_per_s']:,.0f} tokens/s"
        )
    figures["ratio"] = ours["seq_per_s"] / ref_rate if ref_rate > 0 else float("nan")
    return figures


# ---------------------------------------------------------------------------- data


def _make_data(
    data_dir: str, seq_len: int, demo_mb: float, workers: int, print_fn: Callable[[str], None]
) -> dict[str, Any]:
    """Prepares the demo corpus into data_dir (synthetic ids if prepare is missing)."""
    try:
        from bertjax.data import prepare, sources
        from bertjax.data.prepare_settings import PrepareSettings
    except ImportError:
        prepare = None
    if prepare is None:
        n = _write_synthetic(data_dir, seq_len)
        print_fn(
            f"data: {n:,} synthetic examples (random ids; bertjax.data.prepare unavailable) "
            f"in {data_dir}"
        )
        return {"data": "synthetic", "examples": n}

    from bertjax.data.tokenizers import train_wordpiece

    limit = int(demo_mb * (1 << 20))
    docs = list(_take_bytes(sources.open_source("demo").documents(), limit))
    t0 = time.perf_counter()
    tokenizer = train_wordpiece((" ".join(d) for d in docs), vocab_size=8000)
    t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    settings = PrepareSettings(
        instances="full_sentences",
        max_seq_length=seq_len,
        masking="dynamic",
        docs_per_shard=max(1, len(docs) // 4),
        num_workers=workers,
    )
    manifest = prepare.prepare(docs, tokenizer, data_dir, settings, progress=False)
    elapsed = time.perf_counter() - t0
    mb = manifest["input_stats"]["bytes"] / 1e6
    train = manifest["splits"]["train"]
    print_fn(
        f"data: demo corpus ({mb:.1f} MB of text, {len(docs):,} documents) prepared into "
        f"{train['examples']:,} examples in {len(train['shards'])} shards: "
        f"{mb / elapsed:.2f} MB/s preprocessing ({elapsed:.1f} s, {workers} worker processes; "
        f"WordPiece vocabulary trained first in {t_tok:.1f} s)"
    )
    return {
        "data": "demo",
        "examples": train["examples"],
        "prepare_mb_per_s": mb / elapsed,
        "prepare_seconds": elapsed,
    }


def _take_bytes(documents: Iterable[list[str]], limit: int) -> Iterable[list[str]]:
    total = 0
    for doc in documents:
        yield doc
        total += sum(len(s.encode("utf-8")) for s in doc)
        if total >= limit:
            return


def _write_synthetic(data_dir: str, seq_len: int, n: int = 16_384, shards: int = 4) -> int:
    """Random-id examples (90% full length) and a synthetic WordPiece vocabulary."""
    import tensorflow as tf
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, normalizers, pre_tokenizers

    from bertjax.data.manifest import FORMAT, VERSION
    from bertjax.data.tokenizers import Tokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = 20_000
    tokens = specials + [f"t{i}" for i in range(words)] + [f"##t{i}" for i in range(10_000)]
    backend = Backend(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = Tokenizer(backend, kind="wordpiece", options={"do_lower_case": True})
    tok.save(os.path.join(data_dir, "tokenizer"))
    rng = np.random.default_rng(0)
    entries = []
    for s in range(shards):
        name = f"train-{s:05d}-of-{shards:05d}.tfrecord"
        count = total = 0
        with tf.io.TFRecordWriter(os.path.join(data_dir, name)) as writer:
            for _ in range(n // shards):
                length = seq_len if rng.random() < 0.9 else int(rng.integers(8, seq_len))
                ids = [tok.cls_id, *rng.integers(5, len(tokens), length - 2).tolist(), tok.sep_id]
                feats = {"input_ids": ids, "token_type_ids": [0] * length, "pair_label": [-1]}
                ex = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            k: tf.train.Feature(int64_list=tf.train.Int64List(value=v))
                            for k, v in feats.items()
                        }
                    )
                )
                writer.write(ex.SerializeToString())
                count += 1
                total += length
        entries.append({"file": name, "examples": count, "tokens": total, "sha256": ""})
    tok_sha = paths.sha256(os.path.join(data_dir, "tokenizer", "tokenizer.json"))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "settings": {
            "source": "synthetic",
            "max_seq_length": seq_len,
            "instances": "mlm",
            "masking": "dynamic",
            "seed": 0,
        },
        "tokenizer": {
            "kind": "wordpiece",
            "class": "BertTokenizer",
            "vocab_size": tok.vocab_size,
            "sha256": tok_sha,
        },
        "masking": "dynamic",
        "max_seq_length": seq_len,
        "splits": {
            "train": {
                "examples": sum(e["examples"] for e in entries),
                "tokens": sum(e["tokens"] for e in entries),
                "shards": entries,
            }
        },
        "source_stats": {},
        "vocab_check": "ok",
    }
    Manifest(data_dir, manifest).write()
    return n


# ---------------------------------------------------------------------------- ours


def _time_pipeline(pipe: Pipeline, seconds: float, warmup: int = 5) -> dict[str, float]:
    it = iter(pipe)
    for _ in range(warmup):
        next(it)
    batches = rows = tokens = 0
    t0 = time.perf_counter()
    while True:
        batch = next(it)
        batches += 1
        rows += batch["input_ids"].shape[0]
        tokens += int((batch["attention_mask"] > 0).sum())  # real tokens (packed: segments)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    it.close()
    return {
        "seq_per_s": rows / elapsed,
        "tokens_per_s": tokens / elapsed,
        "batches": batches,
        "seconds": elapsed,
    }


def _packing_efficiency(
    manifest: Manifest, batch_size: int, print_fn: Callable[[str], None], batches: int = 20
) -> dict[str, float]:
    """The share of real tokens among the rows' positions over the first `batches`
    batches, padded (one sequence per row) and packed (data.packing=best_fit over each
    batch: packer.py); printed on one line."""
    from bertjax.data import packer

    pipe = Pipeline(
        manifest,
        PipelineConfig(
            "train",
            batch_size,
            seed=0,
            masking=None
            if manifest.masking == "static"
            else MaskingConfig(max_predictions_per_seq=1),
        ),
    )
    real = rows = packed_rows = 0
    it = iter(pipe)
    for _, batch in zip(range(batches), it, strict=False):
        lengths = (batch["attention_mask"] > 0).sum(axis=1)
        real, rows = real + int(lengths.sum()), rows + len(lengths)
        packed_rows += len(packer.pack(lengths[lengths > 0], batch["input_ids"].shape[1]))
    it.close()
    positions = manifest.max_seq_length
    out = {"padded": real / (rows * positions), "packed": real / (packed_rows * positions)}
    print_fn(
        f"packing: real tokens are {out['padded']:.1%} of the positions padded, "
        f"{out['packed']:.1%} packed (best_fit over each batch of {batch_size}; "
        f"{rows / max(1, packed_rows):.2f}x fewer rows)"
    )
    return out


def _read_examples(pipe: Pipeline, n: int) -> list[list[int]]:
    """The first n examples of the train shards, unpadded ids, as the reference's input."""
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(pipe.local_files()).take(n).batch(1024)
    features = {"input_ids": tf.io.RaggedFeature(tf.int64)}
    out: list[list[int]] = []
    for raw in ds:
        out.extend(tf.io.parse_example(raw, features)["input_ids"].to_list())
    return out
