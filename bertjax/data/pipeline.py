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
"""

from __future__ import annotations

import dataclasses
import itertools
import numbers
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from bertjax import paths
from bertjax.data.hosts import CYCLE_LENGTH, HostReader, parse_fn, plan_hosts
from bertjax.data.manifest import Manifest
from bertjax.data.records import DataFormatError
from bertjax.data.tfsetup import tensorflow
from bertjax.errors import one_line

if TYPE_CHECKING:
    from bertjax.data.masking import Masker, MaskingConfig

_BATCH_KEYS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "pair_labels",
)

# One error type for unusable prepared data across bertjax.data; the one-line message
# names the file.
DataError = DataFormatError
_tf = tensorflow  # TensorFlow, imported on first use with accelerators hidden


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What a Pipeline reads and how; checked when made (ValueError naming the argument)."""

    split: str  # 'train', 'validation', ... (a key of the manifest's splits)
    global_batch_size: int  # examples per step over all hosts
    seed: int  # non-negative; decides file order, shuffling and dynamic masks
    # Dynamic masking settings; None to use the static masks stored in the shards (the
    # manifest must say which the shards hold).
    masking: MaskingConfig | None = None
    process_index: int = 0  # this host (jax.process_index())
    process_count: int = 1  # the number of hosts (jax.process_count())
    # Raw records in the shuffle buffer (<= 1: no buffer, only the file order changes
    # per epoch).
    shuffle_buffer: int = 10_000
    # Batches already consumed; the first batch yielded is batch start_step + 1 of an
    # uninterrupted run.
    start_step: int = 0
    repeat: bool = True  # loop over epochs forever (training) or read the split once (eval)
    # When given, every example must fit it: length + position_offset <= it.
    max_position_embeddings: int | None = None
    position_offset: int = 0  # first position id of a real token (RoBERTa: 2)
    queue_size: int = 4  # finished batches the background thread may hold ahead
    # Shards in a bucket are read from local copies in this directory ("": a temporary
    # one per process, removed at exit; a given one is kept for later runs).
    cache_dir: str = ""
    # Most GB of local copies (0: half the free disk there); it must hold the
    # interleave cycle (the 16 largest of this host's shards).
    cache_gb: float = 0.0
    # off | best_fit | first_fit: each host batch's sequences packed into fewer rows
    # (packer.pack_batch: the batch is the window, so a step holds the same sequences
    # as unpacked and resumes the same way); slots and row-count multiple of a row.
    packing: str = "off"
    packing_max_sequences: int = 16
    packing_row_multiple: int = 8

    def __post_init__(self) -> None:
        batch, index, count = self.global_batch_size, self.process_index, self.process_count
        if not _is_int(batch, 1):
            raise ValueError(f"global_batch_size={batch!r} must be an integer >= 1")
        if not _is_int(count, 1) or not _is_int(index, 0):
            raise ValueError(
                f"process_index={index!r}, process_count={count!r} must be "
                "integers with 0 <= process_index < process_count"
            )
        if index >= count:
            raise ValueError(f"process_index={index} must be < process_count={count}")
        if batch % count:
            raise ValueError(f"global_batch_size={batch} is not divisible by process_count={count}")
        if not _is_int(self.seed, 0):
            raise ValueError(f"seed={self.seed!r} must be a non-negative integer")
        if self.packing not in ("off", "best_fit", "first_fit"):
            raise ValueError(f"packing={self.packing!r}: off, best_fit or first_fit")
        if self.packing != "off" and count > 1:
            raise ValueError(
                "packing with several hosts is not supported yet: packed "
                "batches vary in rows per host"
            )
        if not _is_int(self.start_step, 0):
            raise ValueError(f"start_step={self.start_step!r} must be a non-negative integer")
        if self.max_position_embeddings is not None and (
            int(self.max_position_embeddings) - int(self.position_offset) < 1
        ):
            raise ValueError(
                f"max_position_embeddings={self.max_position_embeddings} leaves "
                f"no position after position_offset={self.position_offset}"
            )
        for name, kind in (
            ("global_batch_size", int),
            ("seed", int),
            ("process_index", int),
            ("process_count", int),
            ("shuffle_buffer", int),
            ("start_step", int),
            ("repeat", bool),
            ("position_offset", int),
        ):
            object.__setattr__(self, name, kind(getattr(self, name)))
        object.__setattr__(self, "queue_size", max(1, int(self.queue_size)))
        if not isinstance(self.cache_gb, numbers.Real) or self.cache_gb < 0:
            raise ValueError(
                f"cache_gb={self.cache_gb!r} must be a number >= 0 (0: half the free disk)"
            )

    @property
    def host_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    def max_length(self, max_seq_length: int) -> int:
        """The longest example allowed: max_seq_length, and what the positions allow."""
        if self.max_position_embeddings is None:
            return max_seq_length
        return min(int(self.max_position_embeddings) - self.position_offset, max_seq_length)


class Pipeline:
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

    # ------------------------------------------------------------------ numpy stage

    def _problem(self, raw: Mapping[str, np.ndarray]) -> tuple[np.ndarray, str] | None:
        """None if a parsed batch is valid, else ([rows] bool: the bad rows, what is
        wrong with the first). Scalar checks first: the valid case stays cheap."""
        lengths, ids = raw["lengths"], raw["input_ids"]
        if not lengths.size:
            return None
        longest = int(lengths.max())
        if longest > self._max_length:
            bad = lengths > self._max_length
            n = int(lengths[bad][0])
            if n > self.max_seq_length:
                limit = f"max_seq_length {self.max_seq_length} of {self.manifest.path}"
            else:
                limit = f"max_position_embeddings {self.config.max_position_embeddings}"
                if self.config.position_offset:
                    limit += f" - position_offset {self.config.position_offset}"
            return bad, f"an example has {n} tokens, more than {limit}"
        if "layout_ok" in raw and not raw["layout_ok"].all():
            from bertjax.data.google_records import LAYOUT_ERROR

            return ~raw["layout_ok"], LAYOUT_ERROR
        if not np.array_equal(raw["type_lengths"], lengths):
            bad = raw["type_lengths"] != lengths
            return bad, "token_type_ids and input_ids differ in length"
        if int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
            outside = (ids < 0) | (ids >= self.vocab_size)
            bad = outside.any(axis=1)
            return bad, (
                f"token id {int(ids[outside][0])} is outside the vocabulary "
                f"[0, {self.vocab_size}) of {self.manifest.tokenizer_dir}"
            )
        if self._static:
            counts, p = raw["mlm_counts"], self.max_predictions_per_seq
            if not np.array_equal(counts, raw["mlm_id_counts"]):
                bad = counts != raw["mlm_id_counts"]
                return bad, "masked_lm_positions and masked_lm_ids differ in length"
            if int(counts.max()) > p:
                bad = counts > p
                return bad, (
                    f"an example has {int(counts[bad][0])} masked positions, more than "
                    f"max_predictions_per_seq {p} of {self.manifest.path}"
                )
            positions, labels = raw["masked_lm_positions"], raw["masked_lm_ids"]
            real = np.arange(p) < counts[:, None]
            outside = real & ((positions < 0) | (positions >= lengths[:, None]))
            outside |= real & ((labels < 0) | (labels >= self.vocab_size))
            if outside.any():
                return outside.any(axis=1), (
                    "a masked_lm position lies outside its example or a masked_lm id "
                    "outside the vocabulary"
                )
        return None

    def _finish(self, raw: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
        """Checks one parsed host batch (global batch index k, 0-based), masks it and
        fills it up to the host batch size."""
        problem = self._problem(raw)
        if problem is not None:
            raise DataError(
                f"{self._locate()}: {problem[1]} (split {self.config.split!r}, batch {k + 1}, "
                f"host {self.config.process_index})"
            )
        ids = raw["input_ids"]
        rows = ids.shape[0]
        out = {
            "attention_mask": raw["attention_mask"],
            "token_type_ids": raw["token_type_ids"],
            "pair_labels": raw["pair_labels"],
        }
        if self._static:
            p = self.max_predictions_per_seq
            out.update(
                input_ids=ids,
                masked_lm_positions=raw["masked_lm_positions"],
                masked_lm_ids=raw["masked_lm_ids"],
                masked_lm_weights=(np.arange(p) < raw["mlm_counts"][:, None]).astype(np.float32),
            )
        b = self.config.host_batch_size
        if rows < b:  # last batch of a single pass: fill with empty rows
            out = {key: _fill_rows(v, b) for key, v in out.items()}
            out["pair_labels"][rows:] = -1
            ids = _fill_rows(ids, b, self.pad_id)
            if self._static:
                out["input_ids"] = ids
        if self.config.packing != "off":  # several sequences per row (packer.py)
            from bertjax.data import packer

            out = packer.pack_batch(
                {**out, "input_ids": ids},
                self.pad_id,
                self.config.packing,
                self.config.packing_max_sequences,
                self.max_predictions_per_seq,
                self.config.packing_row_multiple,
            )
            ids = out["input_ids"] if self._static else out.pop("input_ids")
        if not self._static:
            rng = np.random.default_rng([self.config.seed, k, self.config.process_index])
            out.update(self._masker(ids, out["attention_mask"], rng))
        keys = _BATCH_KEYS + (("num_sequences",) if self.config.packing != "off" else ())
        return {key: out[key] for key in keys}

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


def _masking(
    manifest: Manifest, masking: MaskingConfig | None, tokenizer: Any
) -> tuple[int, Masker | None]:
    """(max_predictions_per_seq, the dynamic Masker or None): the static masks stored
    in the shards when `masking` is None, else masks drawn with `masking`; DataError
    when the manifest says the shards hold the other kind."""
    if masking is None:
        if manifest.masking != "static":
            raise DataError(
                f"{manifest.path}: the shards are not masked (masking "
                "'dynamic'); pass masking=MaskingConfig(...) to mask them while "
                "reading"
            )
        p = manifest.setting("max_predictions_per_seq")
        if not _is_int(p, 1):
            raise DataError(
                f"{manifest.path}: settings.max_predictions_per_seq must be an "
                "integer >= 1 for statically masked shards"
            )
        return int(p), None
    if manifest.masking != "dynamic":
        raise DataError(
            f"{manifest.path}: the shards are already masked (masking "
            "'static'); pass masking=None to use their masks"
        )
    from bertjax.data.masking import masker_from_tokenizer

    return int(masking.max_predictions_per_seq), masker_from_tokenizer(tokenizer, masking)


_SHARD_MARK = "bertjax-shard-check: "  # finds _check_shard's message in tf.data's error
_OWNERS = itertools.count()  # one per pipeline reading a bucket: what it holds in the cache


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def _fill_rows(x: np.ndarray, rows: int, value: int | float = 0) -> np.ndarray:
    out = np.full((rows,) + x.shape[1:], value, dtype=x.dtype)
    out[: x.shape[0]] = x
    return out
