"""What a Pipeline (pipeline.py) reads and how: PipelineConfig, checked when made, and
the masks a pipeline uses (the static ones stored in the shards or a dynamic Masker),
checked against what the manifest says the shards hold."""

from __future__ import annotations

import dataclasses
import numbers
from typing import TYPE_CHECKING, Any

from bertjax.data.manifest import Manifest
from bertjax.data.records import DataFormatError

if TYPE_CHECKING:
    from bertjax.data.masking import Masker, MaskingConfig

# One error type for unusable prepared data across bertjax.data; the one-line message
# names the file.
DataError = DataFormatError


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
