"""`prepare`: documents -> tokenized, sharded TFRecords of instances + manifest.json.

Design (each point is a property the tests check):

  * The main process reads the source sequentially and cuts the documents into chunks
    of `docs_per_shard` non-empty documents, or fewer when their text reaches
    MAX_CHUNK_BYTES (a corpus of huge documents; chunks.py). Chunk c becomes one shard:
    the validation split's if validation_every > 0 and c % validation_every ==
    validation_every - 1, else the train split's. Chunks go to `num_workers` spawned
    processes (0: this process; workers.py), which build, check and write the shard
    (shards.py): a pure function of (chunk, settings), so the output is byte-identical
    for any num_workers.
  * Memory is bounded: at most 2 * max(num_workers, 1) chunks are in flight (read but
    not yet written), and no more than `max_inflight_mb` of their estimated memory (one
    chunk is always allowed): the main process's copy of the chunk (its text as UTF-8,
    chunks.PackedChunk), the copy being sent, and what a worker allocates to build it
    (`chunks.worker_memory`, an upper bound for any text). A worker holds one chunk at a
    time and hands its memory back when the shard is written. What preparation holds
    beyond that is fixed: the processes themselves and each worker's tokenizer
    (docs/data.md gives the bound with measured figures).
  * Writes are atomic and resumable: shards and their metadata are written to
    DATA/.shards under temporary names and renamed. When all chunks are done, shards
    are renamed to SPLIT-NNNNN-of-MMMMM.tfrecord and manifest.json is written last
    (temp + rename); DATA/.shards is then removed. A re-run (after an interruption, or
    of a finished run) skips every shard whose file exists with the checksum recorded
    for the same chunk content (sha256 of the chunk's text) and the same settings
    (`PrepareSettings.key`); a changed corpus or setting rewrites only what changed.
  * DATA may be a gs:// URL. Object stores have no rename, so there each shard is built
    in a local temporary directory and uploaded as one object to DATA/.shards when
    finished, followed by a small metadata object that records it as published (its
    size, sha256, chunk text and settings); the tokenizer is uploaded first, and when
    every chunk is done the shards get their final names (copy + delete) and
    manifest.json is written last. A re-run finds finished shards by those published
    records, never by local files, and ends with the same bytes as an uninterrupted run.
    An earlier manifest.json is moved aside before anything changes, so data without
    manifest.json is never read as prepared.
  * Every example is checked while writing: ids in [0, vocab_size) and length <=
    max_seq_length (masked copies included). An example that fails is dropped and
    counted; the manifest's "vocab_check" is "ok" only when none failed.
  * Bad input never crashes a run: non-string sentences, empty documents, empty or
    untokenizable sentences, huge sentences are skipped or split and counted in the
    manifest ("input_stats", "instance_stats", and the source's own "source_stats").
    Input that is mostly not text (source_base.NotTextError) and a source that yields no
    training example stop the run instead, leaving nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

from bertjax import paths
from bertjax.data import instances as instances_lib
from bertjax.data import shards as shards_lib
from bertjax.data import tokenizers as tokenizers_lib
from bertjax.data import workers as workers_lib
from bertjax.data.chunks import InputStats, chunk_memory, read_chunks
from bertjax.data.finished_shards import Resume, publish
from bertjax.data.manifest import (
    FORMAT,
    MANIFEST,
    SPLITS,
    TOKENIZER_DIR,
    VERSION,
    Manifest,
    save_tokenizer,
)
from bertjax.data.prepare_settings import PrepareSettings
from bertjax.data.shard_files import PARTS, remove_partial_files
from bertjax.data.source_base import NotTextError


def prepare(
    source: Any, tokenizer: Any, out_dir: str, settings: PrepareSettings, *, progress: bool = True
) -> Manifest:
    """Tokenizes `source` into instances and writes shards + manifest.json to `out_dir`.

    Args:
      source: a spec string for `sources.open_source` ("demo", "bert:GLOB", ...), a
        Source, or any iterable of documents (lists of sentence strings).
      tokenizer: a `Tokenizer` or a directory `load_tokenizer` reads (local or a URL);
        copied to out_dir/tokenizer, from where every worker loads it.
      out_dir: the data directory (created; an earlier run's shards are reused), local
        or a URL (gs://...: built locally, uploaded shard by shard, manifest.json last).
      settings: how to make the shards.
      progress: show documents/s and MB/s on stderr.

    Returns:
      the Manifest (also written to out_dir/manifest.json).

    Raises:
      ValueError: the source yields no training example (nothing is left behind).
      RuntimeError: a shard could not be written; finished shards are kept for resume.
      OSError: a shard could not be written or uploaded (naming it); the same.
    """
    if paths.is_remote(out_dir):
        with tempfile.TemporaryDirectory(prefix="bertjax-prepare-") as work_dir:
            return _prepare(
                source, tokenizer, paths.absolute(out_dir), work_dir, settings, progress
            )
    out_dir = os.path.abspath(out_dir)
    return _prepare(source, tokenizer, out_dir, out_dir, settings, progress)


def _prepare(
    source: Any,
    tokenizer: Any,
    out_dir: str,
    work_dir: str,
    settings: PrepareSettings,
    progress: bool,
) -> Manifest:
    """`prepare`, the shards built under local `work_dir`: `out_dir` itself, or a local
    temporary directory when `out_dir` is a URL (then uploaded; module docstring)."""
    remote = work_dir != out_dir
    parts_dir = paths.join(out_dir, PARTS)  # finished shards, found on resume
    build_dir = os.path.join(work_dir, PARTS)  # where the workers write
    fresh = not paths.exists(out_dir)  # removed again if nothing comes of it
    os.makedirs(build_dir, exist_ok=True)
    remove_partial_files(build_dir)
    if isinstance(tokenizer, str):
        with paths.local_copy(tokenizer) as local:
            tokenizer = tokenizers_lib.load_tokenizer(local)
    tok_entry = save_tokenizer(tokenizer, work_dir)
    spec, documents, source_obj = _open_source(source)
    key = settings.key(tok_entry["sha256"])
    if remote:
        _unpublish(out_dir, parts_dir)
        _upload_tokenizer(work_dir, out_dir)
        resume = Resume(out_dir, parts_dir, key)
    else:
        resume = Resume(out_dir, parts_dir, key)
        manifest_path = os.path.join(out_dir, MANIFEST)
        if os.path.exists(manifest_path):  # it no longer describes the directory
            os.replace(manifest_path, os.path.join(parts_dir, "previous-manifest.json"))
    where = {"parts_dir": build_dir, **({"publish_dir": parts_dir} if remote else {})}

    in_stats, metas = InputStats(), []
    tok_dir = os.path.join(work_dir, tok_entry["dir"])
    try:
        _build_shards(
            documents, settings, key, resume, where, tok_dir, out_dir, progress, in_stats, metas
        )
    except NotTextError:
        _discard(out_dir, parts_dir, fresh)
        raise

    _check_not_empty(metas, spec, in_stats, source_obj, out_dir, parts_dir, fresh)
    raw = _manifest(
        {"source": spec, **dataclasses.asdict(settings)},
        key,
        tok_entry,
        *publish(out_dir, metas, SPLITS),
        in_stats,
        source_obj,
    )
    manifest = Manifest(out_dir, raw)
    manifest.write()
    paths.rmtree(parts_dir)
    return manifest


def _build_shards(
    documents: Any,
    settings: PrepareSettings,
    key: str,
    resume: Resume,
    where: dict[str, str],
    tok_dir: str,
    out_dir: str,
    progress: bool,
    in_stats: InputStats,
    metas: list[dict],
) -> None:
    """Cuts `documents` into chunks and has the workers write a shard of each (one that an
    earlier run finished from the same input, found by `resume`, is reused); `metas`
    collects the shards' metadata, `in_stats` counts the input and the shards."""
    shard_count = dict.fromkeys(SPLITS, 0)

    def written(meta: dict) -> None:
        metas.append(meta)
        in_stats.shards_written += 1

    bar = workers_lib.Progress(
        progress, lambda: (in_stats.documents, in_stats.bytes, len(metas), in_stats.chunks)
    )
    output_settings = settings.output_settings()
    with (
        bar,
        workers_lib.Workers(
            shards_lib.process_chunk,
            settings.num_workers,
            shards_lib.init_worker,
            (tok_dir, output_settings),
            settings.max_inflight_mb * (1 << 20),
            written,
            f"preparing a shard in {out_dir}",
        ) as pool,
    ):
        for chunk, input_sha in read_chunks(documents, settings.docs_per_shard, in_stats, bar.tick):
            c, split = in_stats.chunks, settings.split_of(in_stats.chunks)
            in_stats.chunks += 1
            k, shard_count[split] = shard_count[split], shard_count[split] + 1
            found = resume.find(split, k, input_sha)
            if found is not None:
                metas.append({**found, "chunk": c, "split": split, "shard": k})
                in_stats.shards_reused += 1
                continue
            pool.submit(
                {
                    "split": split,
                    "shard": k,
                    "chunk": c,
                    "documents": chunk,
                    "input_sha256": input_sha,
                    "settings_key": key,
                    **where,
                },
                chunk_memory(chunk, output_settings),
            )
            del chunk
        pool.drain(bar.show)


def _unpublish(out_dir: str, parts_dir: str) -> None:
    """Moves an earlier DATA/manifest.json (a URL) aside, to DATA/.shards, before
    anything else in DATA changes: it no longer describes the directory."""
    manifest = paths.join(out_dir, MANIFEST)
    if paths.exists(manifest):
        paths.copy(manifest, paths.join(parts_dir, "previous-manifest.json"))
        paths.remove(manifest)


def _upload_tokenizer(work_dir: str, out_dir: str) -> None:
    """Uploads work_dir/tokenizer to DATA/tokenizer (a URL), removing files of another
    tokenizer there."""
    local, remote = os.path.join(work_dir, TOKENIZER_DIR), paths.join(out_dir, TOKENIZER_DIR)
    names = sorted(os.listdir(local))
    for name in sorted(set(paths.sizes(remote)) - set(names)):
        paths.remove(paths.join(remote, name))
    for name in names:
        paths.upload(os.path.join(local, name), paths.join(remote, name))


def _open_source(source: Any) -> tuple[str, Iterator[Any], Any]:
    """(spec, document iterator, object with .stats or None)."""
    if isinstance(source, str):
        from bertjax.data import sources

        source = sources.open_source(source)
    if hasattr(source, "documents") and callable(source.documents):
        return str(getattr(source, "spec", type(source).__name__)), iter(source.documents()), source
    if isinstance(source, Iterable):
        return "<iterable>", iter(source), None
    raise TypeError(
        f"source must be a spec string, a Source or an iterable of documents, "
        f"got {type(source).__name__}"
    )


def _check_not_empty(
    metas: list[dict],
    spec: str,
    in_stats: InputStats,
    source_obj: Any,
    out_dir: str,
    parts_dir: str,
    fresh: bool,
) -> None:
    """ValueError naming the source and what it yielded when the train split would have
    no example; nothing is left behind (the directory, when this run created it)."""
    if sum(m["examples"] for m in metas if m["split"] == "train"):
        return
    st = getattr(source_obj, "stats", None)
    counts = {
        "files": getattr(st, "files", None),
        "documents": in_stats.documents,
        "sentences": in_stats.sentences,
        "bad records": getattr(st, "bad_records", None),
        "empty documents": in_stats.empty_documents + getattr(st, "empty_documents", 0),
        "invalid documents": in_stats.invalid_documents or None,
    }
    read = ", ".join(f"{k}: {v:,}" for k, v in counts.items() if v is not None)
    _discard(out_dir, parts_dir, fresh)
    raise ValueError(f"{spec}: no training examples ({read}); nothing written")


def _discard(out_dir: str, parts_dir: str, fresh: bool) -> None:
    """Undoes a run that will not finish: removes the data directory when this run
    created it, else this run's DATA/.shards, putting an earlier manifest.json back."""
    previous = paths.join(parts_dir, "previous-manifest.json")
    if fresh:
        paths.rmtree(out_dir)
    else:
        if paths.exists(previous):  # the directory's earlier data stay as they were
            if paths.is_remote(previous):
                paths.copy(previous, paths.join(out_dir, MANIFEST))
            else:
                os.replace(previous, os.path.join(out_dir, MANIFEST))
        paths.rmtree(parts_dir)


def _manifest(
    settings: dict[str, Any],
    settings_key: str,
    tok_entry: dict[str, Any],
    splits: dict[str, dict],
    total_stats: instances_lib.InstanceStats,
    dropped: int,
    in_stats: InputStats,
    source_obj: Any,
) -> dict[str, Any]:
    """The manifest's JSON (manifest.py describes its entries)."""
    if source_obj is not None and hasattr(source_obj, "stats"):
        st = source_obj.stats
        source_stats = dataclasses.asdict(st) if dataclasses.is_dataclass(st) else dict(st)
    else:
        source_stats = {
            "documents": in_stats.documents,
            "sentences": in_stats.sentences,
            "bytes": in_stats.bytes,
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "settings": settings,
        "settings_key": settings_key,
        "tokenizer": tok_entry,
        "masking": settings["masking"],
        "max_seq_length": settings["max_seq_length"],
        "splits": splits,
        "source_stats": source_stats,
        "input_stats": dataclasses.asdict(in_stats),
        "instance_stats": total_stats.asdict(),
        "vocab_check": "ok"
        if dropped == 0
        else f"dropped {dropped} examples with an id outside [0, vocab_size) or too long",
    }
