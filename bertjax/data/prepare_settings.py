"""`PrepareSettings`: how `prepare` (prepare.py) makes shards, checked when made, and the
settings key that a shard is reused under (a re-run after an interruption, or of a
finished run, skips the shards made under the same key from the same chunk text).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from bertjax.data import instances as instances_lib
from bertjax.data.manifest import RECORD_FORMATS, VERSION

# Bump when the bytes written for the same inputs and settings change (resume then
# rewrites old shards instead of mixing them with new ones).
ALGORITHM_REVISION = 1
DUPE_MODES = ("rebuild", "remask")
# Settings that decide the bytes of the shards (the others only decide speed).
_OUTPUT_SETTINGS = (
    "instances",
    "max_seq_length",
    "short_seq_prob",
    "masking",
    "masking_config",
    "dupe_factor",
    "dupe_mode",
    "nsp_single_sentence",
    "record_format",
    "docs_per_shard",
    "validation_every",
    "seed",
)


@dataclasses.dataclass(frozen=True)
class PrepareSettings:
    """How `prepare` makes shards; checked when made (ValueError naming the setting).

    Values are kept as given (they are written to the manifest as they are), except
    masking_config, kept as a dict for static masking (None for dynamic), and
    dupe_factor, 1 for dynamic masking.
    """

    instances: str  # nsp | sop | full_sentences | doc_sentences | mlm (instances.py)
    max_seq_length: int  # no example is longer (special tokens included)
    short_seq_prob: float = 0.1  # nsp/sop: probability of a shorter target length per document
    # "static": masked copies written now (BERT); "dynamic": the pipeline masks (RoBERTa).
    masking: str = "dynamic"
    masking_config: Any = None  # static: a masking.MaskingConfig or its dict (default one)
    dupe_factor: int = 10  # static masking: how many passes over each chunk are written
    # static masking: "rebuild" builds every pass's instances anew (new target lengths,
    # split points, random next segments and truncation, as Google's
    # create_pretraining_data.py) and masks them; "remask" masks one set of instances
    # dupe_factor times (ten times fewer distinct pairs for the same size).
    dupe_mode: str = "rebuild"
    # nsp: a one-sentence chunk is cut inside ("split", labels stay 50/50) or always
    # gets a random next ("random_next", Google's rule; instances.py).
    nsp_single_sentence: str = "split"
    # "bertjax": variable-length examples (what `train` reads); "google" (static
    # masking, nsp/sop): the fixed-length features of create_pretraining_data.py.
    record_format: str = "bertjax"
    # Non-empty documents per chunk (= per shard). NSP draws random next segments from
    # the same chunk, so keep it well above 1.
    docs_per_shard: int = 1000
    validation_every: int = 0  # every Nth chunk goes to the "validation" split (0: none)
    num_workers: int = 1  # worker processes (spawned); 0: this one. The output is the same.
    seed: int = 0  # the seed of every random choice
    # Most estimated memory (MB) of the chunks read but not yet written (their text in
    # this process and what the workers build from it; prepare.py's docstring). With the
    # 2 * num_workers chunk limit it bounds memory whatever the corpus.
    max_inflight_mb: float = 256.0

    def __post_init__(self) -> None:
        instances_lib.check_kind(self.instances, self.max_seq_length)
        if self.masking not in ("static", "dynamic"):
            raise ValueError(f"masking={self.masking!r} must be 'static' or 'dynamic'")
        for name, least in (
            ("docs_per_shard", 1),
            ("validation_every", 0),
            ("num_workers", 0),
            ("dupe_factor", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}={value!r} must be an integer >= {least}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"short_seq_prob={self.short_seq_prob!r} must be in [0, 1]")
        self._check_choices()
        if not self.max_inflight_mb > 0:
            raise ValueError(f"max_inflight_mb={self.max_inflight_mb!r} must be positive")
        config = None
        if self.masking == "static":
            from bertjax.data import masking as masking_lib

            config = self.masking_config
            if config is None:
                config = masking_lib.MaskingConfig()
            elif isinstance(config, Mapping):
                config = masking_lib.MaskingConfig(**config)
            config = dataclasses.asdict(config)
        else:
            object.__setattr__(self, "dupe_factor", 1)  # one unmasked copy; the pipeline masks
        object.__setattr__(self, "masking_config", config)

    def _check_choices(self) -> None:
        if self.record_format not in RECORD_FORMATS:
            raise ValueError(
                f"format={self.record_format!r} must be one of {', '.join(RECORD_FORMATS)}"
            )
        if self.record_format == "google" and (
            self.masking != "static" or self.instances not in instances_lib.PAIR_KINDS
        ):
            raise ValueError(
                "format='google' needs static masking and nsp or sop instances "
                f"(got masking={self.masking!r}, instances={self.instances!r}): "
                "Google's records hold masks and a pair label"
            )
        if self.dupe_mode not in DUPE_MODES:
            raise ValueError(f"dupe_mode={self.dupe_mode!r} must be one of {', '.join(DUPE_MODES)}")
        if self.nsp_single_sentence not in instances_lib.SINGLE_SENTENCE:
            raise ValueError(
                f"nsp_single_sentence={self.nsp_single_sentence!r} must be one "
                f"of {', '.join(instances_lib.SINGLE_SENTENCE)}"
            )

    def output_settings(self) -> dict[str, Any]:
        """The settings that decide the shards' bytes (what the workers get)."""
        return {k: getattr(self, k) for k in _OUTPUT_SETTINGS}

    def key(self, tokenizer_sha256: str) -> str:
        """The manifest's settings_key: sha256 of the output settings, the tokenizer and
        the algorithm's revision; a shard is reused only under the same key."""
        key_obj = self.output_settings()
        key_obj.update(
            tokenizer_sha256=tokenizer_sha256, revision=ALGORITHM_REVISION, version=VERSION
        )
        return hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()

    def split_of(self, chunk: int) -> str:
        every = self.validation_every
        return "validation" if every and chunk % every == every - 1 else "train"
