"""The numpy stage of a Pipeline (pipeline.py), run in its background thread: the
checks of a parsed host batch (ids, lengths, stored masks), then dynamic masking,
packing and filling a last partial batch up to the host batch size.

`NumpyStage` is a base class of `Pipeline`: its methods read the pipeline's manifest,
config, sizes and masker, and report a bad batch at `Pipeline._locate`'s location.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bertjax.data.pipeline_config import DataError

_BATCH_KEYS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "pair_labels",
)


def _fill_rows(x: np.ndarray, rows: int, value: int | float = 0) -> np.ndarray:
    out = np.full((rows,) + x.shape[1:], value, dtype=x.dtype)
    out[: x.shape[0]] = x
    return out


class NumpyStage:
    """The checks and masking of parsed host batches (a base class of Pipeline)."""

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
