"""Input pipeline: prepared shards -> per-host masked batches of numpy arrays.

`Pipeline(manifest, PipelineConfig(split, global_batch_size, seed, ...))` reads what
`prepare data` wrote (its Manifest, DATA/tokenizer, SPLIT-xxxxx-of-yyyyy.tfrecord) and
yields this host's share of every global batch as numpy arrays (`train.global_batch`
makes jax.Arrays of them).

Stages (TensorFlow for reading, numpy for masking, overlapped by a background thread):

  epoch e = 0, 1, 2, ...                     every epoch is a pure function of (seed, e)
    this host's shard files, ordered by a fingerprint of (file, seed, e)
    -> interleave the files record by record (deterministic)
    -> take this host's examples for one epoch (hosts.py)
    -> shuffle buffer of raw records, seeded from (seed, e, process_index)
  -> concatenate the epochs (repeat), skip to the start position
  -> batch RAW records (host batch = global batch / process_count)
  -> tf.io.parse_example on the whole batch, pad to max_seq_length, attention mask
  -> prefetch
  -> numpy, in a thread: check ids and lengths, dynamic masking with the Masker and
     rng = np.random.default_rng([seed, k, process_index]) for global batch k
     (or the static masks stored in the shards), into a small queue.

Position: `state()` is {"step": k}, the number of batches consumed. A pipeline made
with `start_step=k` (or `Pipeline.restore(state, ...)`) starts at epoch
k * host_batch // epoch_examples, skips the remaining records of that epoch raw
(before parsing), and so yields exactly the batches k+1, k+2, ... (1-based) of an
uninterrupted run, masks included: nothing but k is needed. Skipping costs reading at
most one epoch of this host's records (about 100k records/s on a 2-core CPU).

Determinism holds for a fixed TensorFlow version as long as nothing sets TensorFlow's
global random seed (`tf.random.set_seed`), which the shuffle buffer's seed combines with.

Data in a bucket (DATA = gs://...): the manifest and tokenizer are read through
bertjax.paths, and tf.data reads local copies of the shards from a bounded local cache
(cache.py; PipelineConfig.cache_dir, cache_gb): a shard is downloaded when the
interleave first needs it (the next ones in the epoch's order fetched ahead while there
is room), checked against the manifest's sha256 as it arrives, and evicted least
recently used when the bound needs room. The order depends on the shards' names only,
so a bucket copy of local data yields exactly the same batches. Local data is read in
place.

PipelineConfig and the choice of masks are in pipeline_config.py, the numpy stage's
checks and masking in numpy_stage.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from bertjax import paths
from bertjax.data.hosts import CYCLE_LENGTH, HostReader, parse_fn, plan_hosts
from bertjax.data.manifest import Manifest
from bertjax.data.numpy_stage import NumpyStage
from bertjax.data.pipeline_config import DataError, PipelineConfig, _is_int, _masking
from bertjax.data.tfsetup import tensorflow
from bertjax.errors import one_line

_tf = tensorflow  # TensorFlow, imported on first use with accelerators hidden


class Pipeline(NumpyStage):
    """Deterministic, resumable per-host batches from a prepared data directory.

    Iterating yields dicts of numpy arrays, this host's rows of one global batch
    (b = global_batch_size / process_count, L = max_seq_length from the manifest,
    P = max_predictions_per_seq):

      input_ids, attention_mask, token_type_ids  [b, L] int32 (ids padded with pad id)
      masked_lm_positions, masked_lm_ids         [b, P] int32 (0-padded)
      masked_lm_weights                          [b, P] float32 (1 real, 0 padding)
      pair_labels                                [b] int32 (NSP/SOP label; -1: none)

    With repeat=False the split is read once; a last partial batch is filled up to b
    with empty rows (attention_mask, masked_lm_weights 0; pair_labels -1) so shapes
    stay static and every host yields the same number of batches.

    With `packing` the batch's sequences are packed into R <= b rows before masking
    (packer.pack_batch; docs/packing.md): attention_mask holds segment numbers,
    pair_labels is [R, packing_max_sequences], and num_sequences [R] is added.
    """

    def __init__(self, manifest: Manifest, config: PipelineConfig) -> None:
        """Checks that `manifest`'s data fit `config` (DataError naming the file)."""
        self.manifest, self.config = manifest, config
        shards = manifest.shards(config.split)
        self.files = [paths.join(manifest.data_dir, s["file"]) for s in shards]
        self.max_seq_length = manifest.max_seq_length
        self.vocab_size = int(manifest.vocab_size)
        self.examples = sum(s["examples"] for s in shards)
        self.plan = plan_hosts(
            [s["examples"] for s in shards], config.process_index, config.process_count
        )
        if self.plan.epoch_examples == 0:
            raise DataError(
                f"{manifest.path}: split {config.split!r} has {self.examples} "
                f"examples, too few for {config.process_count} host(s)"
            )
        self.epoch_examples = self.plan.epoch_examples
        self.dropped_per_epoch = self.plan.dropped_per_epoch
        self._verified: set[str] = set()  # shards whose sha256 matched (`_check_shard`)
        # Each shard's sha256 from the manifest ("": not checked, written before digests)
        # is checked the first time this pipeline opens it (in a bucket: as the cache
        # downloads it). The shards' names within the data directory (not their paths)
        # decide the order: the same data at another path is read in the same order.
        self._cache = None
        check, release = self._check_shard, None
        if paths.is_remote(manifest.data_dir):
            self._cache, check, release = self._shard_cache(shards), self._fetch, self._release
        self.reader = HostReader(
            [self.files[i] for i in self.plan.files],
            [str(shards[i].get("sha256", "")) for i in self.plan.files],
            [paths.relative(self.files[i], manifest.data_dir) for i in self.plan.files],
            self.plan,
            config.seed,
            config.process_index,
            config.process_count,
            config.shuffle_buffer,
            check,
            release,
        )
        tokenizer = manifest.load_tokenizer()
        self.pad_id = int(tokenizer.pad_id)
        self._google = manifest.record_format == "google"
        self._static = config.masking is None
        self.max_predictions_per_seq, self._masker = _masking(manifest, config.masking, tokenizer)
        self._max_length = config.max_length(self.max_seq_length)
        self._step = config.start_step

    @classmethod
    def restore(
        cls, state: Mapping[str, Any], manifest: Manifest, config: PipelineConfig
    ) -> Pipeline:
        """A pipeline (the saved run's manifest and config) whose next batch is batch k+1."""
        step = state.get("step") if isinstance(state, Mapping) else None
        if not _is_int(step, 0):
            raise ValueError(f"pipeline state {state!r} must be {{'step': <int >= 0>}}")
        return cls(manifest, dataclasses.replace(config, start_step=int(step)))

    # ------------------------------------------------------------------ position

    def state(self) -> dict[str, int]:
        """{"step": k}: batches consumed so far (JSON-able)."""
        return {"step": self._step}

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (the last partial one counted when repeat=False)."""
        if self.config.repeat:
            return self.epoch_examples // self.config.host_batch_size
        return -(-self.epoch_examples // self.config.host_batch_size)

    # ------------------------------------------------------------------ tf.data

    def dataset(self, start_step: int):
        """The tf.data stage: parsed, padded host batches from batch `start_step` on.

        Elements: input_ids, token_type_ids, attention_mask [b, L] int32, lengths,
        type_lengths, pair_labels [b] int32, and for static masks masked_lm_positions,
        masked_lm_ids [b, P] int32 and mlm_counts [b] int32.
        """
        tf = _tf()
        b = self.config.host_batch_size
        ds = self.reader.records(tf, start_step * b, self.config.repeat)
        ds = ds.batch(b, drop_remainder=self.config.repeat)
        ds = ds.map(self._parse_fn(tf), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.prefetch(2)
        options = tf.data.Options()
        options.deterministic = True
        return ds.with_options(options)

    def _check_shard(self, path: Any, digest: Any) -> Any:
        """The shard's path, once its sha256 matched the manifest's (first open only);
        else a DataError naming the file (tf.data carries it to `_produce`)."""
        path, digest = path.numpy().decode(), digest.numpy().decode()
        if digest and path not in self._verified:
            if paths.sha256(path) != digest:
                raise DataError(
                    f"{_SHARD_MARK}{path}: its sha256 differs from "
                    f"{self.manifest.path}; the shard is damaged or was replaced. "
                    "Prepare the data again"
                )
            self._verified.add(path)
        return path

    # ------------------------------------------------------------------ a bucket's shards

    def _shard_cache(self, shards: list[dict[str, Any]]) -> Any:
        """The process's shard cache (cache.py), checked to hold this host's interleave
        cycle: its largest shards, as many as it reads at once."""
        from bertjax.data import cache as cache_lib

        self._owner = next(_OWNERS)
        # (sha256, bytes) per URL; "" / None where an older manifest lacks them.
        self._shards = {
            self.files[i]: (str(s.get("sha256", "")), s.get("bytes")) for i, s in enumerate(shards)
        }
        sizes = sorted((self._shards[self.files[i]][1] or 0 for i in self.plan.files), reverse=True)
        return cache_lib.shared(
            self.config.cache_dir, float(self.config.cache_gb), sum(sizes[:CYCLE_LENGTH])
        )

    def _fetch(self, url: Any, digest: Any, epoch: Any, index: Any, ordered: Any) -> str:
        """tf.data's check for a shard in a bucket: its local copy (downloaded and checked
        if needed), the next ones in the epoch's order fetched ahead."""
        from bertjax.data.cache import ChecksumMismatch

        url, epoch, index = url.numpy().decode(), int(epoch), int(index)
        self._cache.release_before(self._owner, epoch)
        sha256, size = self._shards[url]
        try:
            local = self._cache.acquire(url, sha256, size, self._owner, epoch)
        except ChecksumMismatch:
            raise DataError(
                f"{_SHARD_MARK}{url}: its sha256 differs from "
                f"{self.manifest.path}; the shard is damaged or was replaced. "
                "Prepare the data again"
            ) from None
        upcoming = [u.decode() for u in ordered.numpy()[index + 1 : index + 1 + CYCLE_LENGTH]]
        self._cache.prefetch([(u, *self._shards[u]) for u in upcoming])
        return local

    def _release(self, local: Any) -> Any:
        self._cache.release(local.numpy().decode(), self._owner)
        return local

    def _local_path(self, i: int) -> str:
        """Shard i's path for TensorFlow (a bucket's: its local copy, held until the
        pipeline's iteration ends)."""
        if self._cache is None:
            return self.files[i]
        return self._cache.acquire(self.files[i], *self._shards[self.files[i]], self._owner)

    def local_files(self) -> list[str]:
        """The split's shard files as TensorFlow can open them: `files` themselves, or
        for data in a bucket their local copies (downloaded and checked if needed, held
        until an iteration of this pipeline ends)."""
        return [self._local_path(i) for i in range(len(self.files))]

    def _parse_fn(self, tf):
        return parse_fn(
            tf,
            self.max_seq_length,
            self.max_predictions_per_seq,
            self.pad_id,
            google=self._google,
            static=self._static,
        )

    def _locate(self, budget_s: float = 20.0) -> str:
        """'FILE, record R' of the first invalid example of this host's shards, found
        by scanning them (error path only; gives up after budget_s seconds)."""
        tf = _tf()
        parse = self._parse_fn(tf)
        deadline = time.monotonic() + budget_s
        for i in self.plan.files:
            path = self.files[i]
            try:
                ds = tf.data.TFRecordDataset(self._local_path(i)).batch(1024).map(parse)
            except DataError:
                return path
            try:
                for j, element in enumerate(ds):
                    problem = self._problem({key: v.numpy() for key, v in element.items()})
                    if problem is not None:
                        return f"{path}, record {j * 1024 + int(np.argmax(problem[0]))}"
                    if time.monotonic() > deadline:
                        break
            except tf.errors.OpError:
                return path
            if time.monotonic() > deadline:
                break
        return paths.join(self.manifest.data_dir, f"{self.config.split}-*.tfrecord")

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Batches from the current position on; `state()` counts the consumed ones.

        Use one iterator at a time; a new one continues from `state()`.
        """
        start = self._step
        q: queue.Queue = queue.Queue(maxsize=self.config.queue_size)
        stop = threading.Event()
        thread = threading.Thread(
            target=self._produce, args=(start, q, stop), name="bertjax-pipeline", daemon=True
        )
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                self._step += 1
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass
            if self._cache is not None:
                self._cache.release_owner(self._owner)

    def _produce(self, start: int, q: queue.Queue, stop: threading.Event) -> None:
        """Background thread: tf.data batches -> checks and masking -> queue."""

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    pass
            return False

        try:
            tf = _tf()
            iterator = iter(self.dataset(start))
            k = start
            while not stop.is_set():
                try:
                    element = next(iterator)
                except StopIteration:
                    break
                except tf.errors.OpError as e:
                    if _SHARD_MARK in e.message:
                        raise DataError(
                            e.message.split(_SHARD_MARK, 1)[1].splitlines()[0]
                        ) from None
                    if "expected to contain" in e.message:
                        raise DataError(
                            f"{self.manifest.path}: the {self.config.split!r} shards hold fewer "
                            "examples than it lists; prepare the data again"
                        ) from None
                    where = f"{self.manifest.data_dir}/{self.config.split}-*.tfrecord"
                    raise DataError(
                        f"{where}: cannot read the records ({one_line(e.message)})"
                    ) from None
                raw = {key: v.numpy() for key, v in element.items()}
                if not put(self._finish(raw, k)):
                    return
                k += 1
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
            put(_Failure(e))


_SHARD_MARK = "bertjax-shard-check: "  # finds _check_shard's message in tf.data's error
_OWNERS = itertools.count()  # one per pipeline reading a bucket: what it holds in the cache


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()
