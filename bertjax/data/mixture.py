"""Data mixtures: the rows of several prepared datasets mixed into each batch by weight.

A mixture (a plan phase's `mixture`, bertjax/tasks/plan.py) names its sources and either
weights or a temperature:

  mixture=dict(sources=("/data/en", "/data/fr"), weights=(0.7, 0.3))
  mixture=dict(sources=(...), temperature=0.5)   # weight_i ~ rows_i ** temperature

`temperature` samples by size, flattened below 1 (mmBERT's "inverse temperature": 0.7,
0.5, then 0.3 over its three phases; XLM-R's alpha = 0.3); rows_i is the number of train
examples source i holds. `names` (optional) label the sources in the metrics.

Which source each row comes from is a function of the seed, the step and the sources'
content only, never their paths: the sources are put in the order of their manifest
digests (bertjax/data/manifest.py `digest`), and the rows each source gives to host
batch s are counts_s ~ Multinomial(b, weights), drawn from one Philox stream keyed by
(seed, the digests, the weights, the host). So the same data at another path mixes the
same way, and a run resumed at step S replays the S count draws (vectorised: about a
second per million steps) to find how many rows it has taken from each source, reopens
each source there (its pipeline at batch rows // b, the first rows % b rows of that
batch skipped) and yields exactly the batches an uninterrupted run would. The rows of a
batch are shuffled by a generator keyed by (seed, digests, host, step).

Every source must share the first's tokenizer (its sha256), sequence length and masking
(one line naming the source otherwise). `metrics()` gives the rows taken from each
source so far on this host (`mixture_rows/NAME`), which the training log writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

_REPLAY_CHUNK = 1 << 16  # count draws replayed at a time on resume


def mixture_weights(key: str, mixture: Mapping[str, Any], rows: Sequence[int]) -> np.ndarray:
    """The normalised weights of `mixture` (its weights, or rows ** temperature); one-line
    ValueError naming `key` (e.g. phases[1].mixture) for a bad mixture."""
    sources = tuple(mixture.get("sources") or ())
    weights, temperature = mixture.get("weights"), mixture.get("temperature")
    unknown = sorted(set(mixture) - {"sources", "weights", "temperature", "names"})
    if unknown:
        raise ValueError(
            f"{key}.{unknown[0]}: unknown mixture key (expected sources, "
            "weights or temperature, names)"
        )
    if len(sources) < 1:
        raise ValueError(f"{key}.sources: empty; name the prepared data directories to mix")
    names = mixture.get("names")
    if names and len(tuple(names)) != len(sources):
        raise ValueError(f"{key}.names: {len(tuple(names))} names for {len(sources)} sources")
    if (weights is None) == (temperature is None):
        raise ValueError(f"{key}: give weights or temperature (one of them)")
    if weights is not None:
        w = np.asarray(weights, np.float64)
        if w.shape != (len(sources),):
            raise ValueError(f"{key}.weights: {len(w)} weights for {len(sources)} sources")
        bad = [i for i, x in enumerate(w) if not x >= 0]
        if bad:
            raise ValueError(
                f"{key}.weights[{bad[0]}]={weights[bad[0]]}: must be >= 0 "
                f"(source {sources[bad[0]]})"
            )
    else:
        if not float(temperature) > 0:
            raise ValueError(f"{key}.temperature={temperature}: must be positive")
        w = np.asarray(rows, np.float64) ** float(temperature)
    if not w.sum() > 0:
        raise ValueError(f"{key}.weights: all zero")
    return w / w.sum()


def check_sources(key: str, sources: Sequence[str], manifests: Sequence[Any]) -> None:
    """Every source has the first's tokenizer, length and masking; no source twice."""
    first = manifests[0]
    seen: dict[str, str] = {}
    for path, m in zip(sources, manifests, strict=True):
        digest = m.digest()
        if digest in seen:
            raise ValueError(f"{key}.sources: {path} holds the same data as {seen[digest]}")
        seen[digest] = path
        if m.raw["tokenizer"].get("sha256") != first.raw["tokenizer"].get("sha256"):
            raise ValueError(
                f"{key}.sources: {path} has another tokenizer than "
                f"{sources[0]}; a mixture's sources must share one"
            )
        for what, mine, theirs in (
            ("max_seq_length", m.max_seq_length, first.max_seq_length),
            ("masking", m.masking, first.masking),
        ):
            if mine != theirs:
                raise ValueError(
                    f"{key}.sources: {path} was prepared with {what}={mine}, "
                    f"{sources[0]} with {theirs}"
                )


def _entropy(seed: int, digests: Sequence[str], weights: np.ndarray) -> list[int]:
    h = hashlib.sha256(
        repr((int(seed), list(digests), [float(x) for x in weights])).encode()
    ).digest()
    return [int.from_bytes(h[i : i + 4], "little") for i in range(0, 32, 4)]


class Mixture:
    """Host batches of `host_batch` rows mixed from several sources (module docstring).

    open_source(i, start_batch): an iterator of source i's host batches (dicts of [b, ...]
    numpy arrays, b = host_batch) from its batch start_batch on.
    """

    def __init__(
        self,
        names: Sequence[str],
        digests: Sequence[str],
        weights: np.ndarray,
        host_batch: int,
        seed: int,
        process_index: int,
        open_source: Callable[[int, int], Iterator[dict[str, np.ndarray]]],
        start_step: int = 0,
    ) -> None:
        order = sorted(range(len(digests)), key=lambda i: digests[i])  # by content
        self.names = [names[i] for i in order]
        self.weights = np.asarray(weights, np.float64)[order]
        self.b, self.step = int(host_batch), int(start_step)
        base = _entropy(seed, [digests[i] for i in order], self.weights)
        self._shuffle_key = [*base, int(process_index)]
        self._counts = np.random.Generator(
            np.random.Philox(np.random.SeedSequence([*base, int(process_index), 0]))
        )
        self.rows = np.zeros(len(order), np.int64)  # taken from each source so far
        done = 0
        while done < self.step:  # replay the draws of the steps already trained
            n = min(_REPLAY_CHUNK, self.step - done)
            self.rows += self._counts.multinomial(self.b, self.weights, size=n).sum(0)
            done += n
        self._iters, self._buffers = [], []
        for k, i in enumerate(order):
            start, skip = divmod(int(self.rows[k]), self.b)
            it = open_source(i, start)
            self._iters.append(it)
            self._buffers.append([None, 0])  # a batch of source k and its next row
            if skip:
                self._buffers[k] = [next(it), skip]

    def _take(self, k: int, n: int) -> list[dict[str, np.ndarray]]:
        parts, buffer = [], self._buffers[k]
        while n:
            if buffer[0] is None or buffer[1] == self.b:
                buffer[:] = [next(self._iters[k]), 0]
            batch, at = buffer
            m = min(n, self.b - at)
            parts.append({key: v[at : at + m] for key, v in batch.items()})
            buffer[1], n = at + m, n - m
        return parts

    def __iter__(self) -> Mixture:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        counts = self._counts.multinomial(self.b, self.weights)
        parts = [p for k, n in enumerate(counts) for p in self._take(k, int(n))]
        order = np.random.default_rng([*self._shuffle_key, self.step, 1]).permutation(self.b)
        self.rows += counts
        self.step += 1
        return {key: np.concatenate([p[key] for p in parts])[order] for key in parts[0]}

    def metrics(self) -> dict[str, int]:
        """Rows taken from each source so far, on this host."""
        return {f"mixture_rows/{n}": int(r) for n, r in zip(self.names, self.rows, strict=True)}

    def close(self) -> None:
        for it in self._iters:
            close = getattr(it, "close", None)
            if close is not None:
                close()
