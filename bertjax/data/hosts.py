"""The pipeline's tf.data stage: which records each host reads, in what order, and how
a batch of them is parsed (`parse_fn`).

Hosts: shard j goes to host j % process_count when the shard count is a multiple of
process_count and the hosts' example totals then (nearly) agree; every host reads only
its own files. Otherwise (fewer shards than hosts, a count that does not divide, or
totals more than 1% apart) every host reads all shards in the same deterministic
interleaved order and keeps records i with i % process_count == process_index
(`ds.shard`). Either way every host yields the same number of examples per epoch, and
together the hosts read each example exactly once per epoch; to keep them in step,
hosts with more examples leave the excess out of that epoch (record level: the last
`examples % process_count` records of the epoch's order; shard level: the tail of
the host's interleaved order). As the order changes every epoch, so do those records.
`HostPlan.dropped_per_epoch` says how many.

Epoch e (`HostReader.records`) is a pure function of (seed, e): this host's shard
files ordered by a fingerprint of (shard name, seed, e), interleaved record by record,
cut to the host's examples for the epoch, then a shuffle buffer of raw records seeded
from (seed, process_index, e).

Shards in a bucket are read from local copies (cache.py): `check` is then also given
the epoch, the file's place in the epoch's order and that order (to fetch the next
files ahead), and returns the copy's path; `release` runs when the interleave has read
a copy to its end (an empty tail concatenated to each file, so no record moves). The
interleave is then sequential (the same order), so that exactly the cycle's files are
in use at any time, which is what the cache's bound must hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

# Interleave at most this many files at once: more mixing, more open read buffers.
CYCLE_LENGTH = 16
# Shard-level host assignment is kept while the examples it leaves out per epoch (to
# keep hosts in step) stay within this share of the split; else record level.
_MAX_SHARD_LEVEL_DROP = 0.01


@dataclasses.dataclass(frozen=True)
class HostPlan:
    """What one host reads each epoch.

    Attributes:
      mode: 'shard' (this host reads only `files`) or 'record' (every host reads all
        shards in one order and keeps every process_count-th record).
      files: indices into the split's shard list that this host opens.
      epoch_examples: examples this host yields per epoch (the same on every host).
      take: records of the epoch's interleaved stream to use before record sharding
        ('record': epoch_examples * process_count; 'shard': epoch_examples).
      dropped_per_epoch: examples of the split that no host reads in a given epoch.
    """

    mode: str
    files: tuple[int, ...]
    epoch_examples: int
    take: int
    dropped_per_epoch: int


def plan_hosts(shard_examples: Sequence[int], process_index: int, process_count: int) -> HostPlan:
    """Assigns shards (or records) to hosts; see the module docstring."""
    total = int(sum(shard_examples))
    n = len(shard_examples)
    if n >= process_count and n % process_count == 0:
        per_host = [
            sum(shard_examples[j] for j in range(h, n, process_count)) for h in range(process_count)
        ]
        epoch = min(per_host)
        dropped = total - epoch * process_count
        if epoch > 0 and dropped <= _MAX_SHARD_LEVEL_DROP * total:
            files = tuple(range(process_index, n, process_count))
            return HostPlan("shard", files, epoch, epoch, dropped)
    epoch = total // process_count
    return HostPlan(
        "record", tuple(range(n)), epoch, epoch * process_count, total - epoch * process_count
    )


@dataclasses.dataclass(frozen=True)
class HostReader:
    """This host's raw records, epoch after epoch, as tf.data.

    Attributes:
      files, digests, names: the host's shard paths, their sha256 ("": unchecked) and
        their names within the data directory (which decide the order, so the same
        data at another path is read in the same order).
      plan: the host's HostPlan.
      seed, process_index, process_count, shuffle_buffer: as the PipelineConfig's.
      check: (path, digest) tensors -> path tensor, run when a shard is opened; with
        `release`, (path, digest, epoch, index, ordered paths) -> local copy's path.
      release: None (local shards), or (local copy's path) -> it, run when a copy has
        been read to its end.
    """

    files: Sequence[str]
    digests: Sequence[str]
    names: Sequence[str]
    plan: HostPlan
    seed: int
    process_index: int
    process_count: int
    shuffle_buffer: int
    check: Callable[..., Any]
    release: Callable[[Any], Any] | None = None

    def records(self, tf: Any, start: int, repeat: bool) -> Any:
        """Serialized records from record `start` of the concatenated epochs on (one
        epoch when not `repeat`)."""
        first, skip = divmod(start, self.plan.epoch_examples)
        last = 2**62 if repeat else 1
        ds = tf.data.Dataset.range(first, max(first, last)).flat_map(self._epoch_fn(tf))
        if skip:
            ds = ds.skip(skip)
        return ds

    def _epoch_fn(self, tf: Any) -> Callable[[Any], Any]:
        files, digests = tf.constant(list(self.files)), tf.constant(list(self.digests))
        names = tf.constant(list(self.names))
        cycle = min(len(self.files), CYCLE_LENGTH)
        seed_str = str(self.seed)
        shuffle_tag = f"shuffle|{self.seed}|{self.process_index}|"
        shuffle_buffer, check, release = self.shuffle_buffer, self.check, self.release
        mode, take = self.plan.mode, self.plan.take
        p_count, p_index = self.process_count, self.process_index

        def epoch(e):
            e_str = tf.strings.as_string(e)
            # File order: sort by a stable 64-bit fingerprint of (shard name, seed, epoch).
            keys = tf.strings.to_hash_bucket_fast(
                tf.strings.join([names, seed_str, e_str], separator="|"), 2**62
            )
            order = tf.argsort(keys, stable=True)
            if release is None:
                ds = tf.data.Dataset.from_tensor_slices(
                    (tf.gather(files, order), tf.gather(digests, order))
                )
                ds = ds.map(lambda f, d: tf.py_function(check, [f, d], tf.string))
                ds = ds.interleave(
                    lambda f: tf.data.TFRecordDataset(f, buffer_size=1 << 20),
                    cycle_length=cycle,
                    block_length=1,
                    num_parallel_calls=min(cycle, 4),
                    deterministic=True,
                )
            else:
                ordered = tf.gather(files, order)
                ds = tf.data.Dataset.from_tensor_slices(
                    (ordered, tf.gather(digests, order), tf.range(tf.size(order)))
                )
                ds = ds.map(
                    lambda f, d, i: tf.ensure_shape(
                        tf.py_function(check, [f, d, e, i, ordered], tf.string), []
                    )
                )
                ds = ds.interleave(
                    lambda f: _read_then_release(tf, f, release), cycle_length=cycle, block_length=1
                )
            # An epoch that ends early (shards shorter than the manifest says) would
            # break the position arithmetic of resume: fail instead.
            ds = ds.take(take).apply(tf.data.experimental.assert_cardinality(take))
            if mode == "record":
                ds = ds.shard(p_count, p_index)
            if shuffle_buffer > 1:
                shuffle_seed = tf.strings.to_hash_bucket_fast(
                    tf.strings.join([shuffle_tag, e_str]), 2**62
                )
                ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed)
            return ds

        return epoch


def _read_then_release(tf: Any, path: Any, release: Callable[[Any], Any]) -> Any:
    """The records of `path`, then `release(path)` with no element of its own."""
    tail = tf.data.Dataset.from_tensors(path).map(
        lambda p: tf.ensure_shape(tf.py_function(release, [p], tf.string), [])
    )
    return tf.data.TFRecordDataset(path, buffer_size=1 << 20).concatenate(
        tail.filter(lambda _: tf.constant(False))
    )


def parse_fn(
    tf: Any, length: int, p: int, pad: int, *, google: bool, static: bool
) -> Callable[[Any], dict[str, Any]]:
    """[b] serialized records -> the pipeline's batch tensors: input_ids,
    token_type_ids, attention_mask [b, length] int32 (ids padded with `pad`), lengths,
    type_lengths, pair_labels [b] int32; with `static` masks also masked_lm_positions,
    masked_lm_ids [b, p] int32, mlm_counts, mlm_id_counts [b] int32 (Google-format
    records: google_records.unpad, which adds layout_ok [b])."""
    if google:  # fixed-length records: strip their padding
        from bertjax.data import google_records

        spec = google_records.feature_spec(tf, length, p)
        return lambda raw: google_records.unpad(tf, tf.io.parse_example(raw, spec), length, p, pad)
    features = {
        "input_ids": tf.io.RaggedFeature(tf.int64),
        "token_type_ids": tf.io.RaggedFeature(tf.int64),
        "pair_label": tf.io.FixedLenFeature([1], tf.int64, default_value=[-1]),
    }
    if static:
        features["masked_lm_positions"] = tf.io.RaggedFeature(tf.int64)
        features["masked_lm_ids"] = tf.io.RaggedFeature(tf.int64)

    def parse(raw):  # raw: [b] serialized tf.train.Example
        ex = tf.io.parse_example(raw, features)
        ids = ex["input_ids"]
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        out = {
            "input_ids": tf.cast(ids.to_tensor(pad, shape=[None, length]), tf.int32),
            "token_type_ids": tf.cast(
                ex["token_type_ids"].to_tensor(0, shape=[None, length]), tf.int32
            ),
            "attention_mask": tf.sequence_mask(lengths, length, dtype=tf.int32),
            "lengths": lengths,
            "type_lengths": tf.cast(ex["token_type_ids"].row_lengths(), tf.int32),
            "pair_labels": tf.cast(ex["pair_label"][:, 0], tf.int32),
        }
        if static:
            pos = ex["masked_lm_positions"]
            out["masked_lm_positions"] = tf.cast(pos.to_tensor(0, shape=[None, p]), tf.int32)
            out["masked_lm_ids"] = tf.cast(
                ex["masked_lm_ids"].to_tensor(0, shape=[None, p]), tf.int32
            )
            out["mlm_counts"] = tf.cast(pos.row_lengths(), tf.int32)
            out["mlm_id_counts"] = tf.cast(ex["masked_lm_ids"].row_lengths(), tf.int32)
        return out

    return parse
