"""GLUE's metrics over a whole split: accuracy, binary F1, Matthews correlation (CoLA),
Pearson and Spearman correlation (STS-B). Inputs are 1-D arrays of equal length."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def _pair(labels: ArrayLike, predictions: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(labels), np.asarray(predictions)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must be equal 1-D")
    if not len(y):
        raise ValueError("no examples to score")
    return y, p


def accuracy(labels: ArrayLike, predictions: ArrayLike) -> float:
    y, p = _pair(labels, predictions)
    return float(np.mean(y == p))


def f1(labels: ArrayLike, predictions: ArrayLike, positive: int = 1) -> float:
    """F1 of the `positive` class (MRPC, QQP: 1); 0 when it is never predicted or present."""
    y, p = _pair(labels, predictions)
    tp = float(np.sum((p == positive) & (y == positive)))
    fp = float(np.sum((p == positive) & (y != positive)))
    fn = float(np.sum((p != positive) & (y == positive)))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Matthews correlation coefficient, multiclass (Gorodkin's R_K); 0 when undefined
    (a constant prediction or label), as scikit-learn returns it."""
    y, p = _pair(labels, predictions)
    classes = np.unique(np.concatenate([y, p]))
    index = {c: i for i, c in enumerate(classes.tolist())}
    confusion = np.zeros((len(classes), len(classes)), np.float64)
    for a, b in zip(y.tolist(), p.tolist(), strict=True):
        confusion[index[a], index[b]] += 1
    t, q = confusion.sum(axis=1), confusion.sum(axis=0)  # true, predicted per class
    c, s = np.trace(confusion), confusion.sum()
    cov_yp = c * s - t @ q
    cov_yy, cov_pp = s * s - t @ t, s * s - q @ q
    denominator = np.sqrt(cov_yy * cov_pp)
    return float(cov_yp / denominator) if denominator else 0.0


def pearson(labels: ArrayLike, predictions: ArrayLike) -> float:
    y, p = _pair(labels, predictions)
    y, p = y.astype(np.float64) - np.mean(y), p.astype(np.float64) - np.mean(p)
    denominator = np.sqrt(np.sum(y * y) * np.sum(p * p))
    return float(np.sum(y * p) / denominator) if denominator else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given the mean of the ranks they span (scipy's 'average')."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # mean of start+1 .. end
            start = end
    return ranks


def spearman(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Pearson correlation of the ranks (ties averaged)."""
    y, p = _pair(labels, predictions)
    return pearson(_ranks(y), _ranks(p))
