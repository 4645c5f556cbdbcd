"""Shrinkage LDA on standardised features, and cross-validation grouped by marked segment.

Why LDA with shrinkage: band-power features are few, strongly correlated across neighbouring
bands/channels, and calibration recordings are short, so the pooled covariance is poorly
estimated. Shrinking it towards a scaled identity (Ledoit-Wolf intensity, computed in closed form)
keeps the inverse stable without a tuning loop. LDA is multi-class and yields calibrated-enough
posteriors through a softmax of its discriminant scores, which the output stream carries.

Why grouped folds: epochs cut from the same state segment are strongly correlated, so ordinary
k-fold would report optimistic accuracy. Folds are built from whole segments, stratified by class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def ledoit_wolf_shrinkage(x: np.ndarray) -> float:
    """Shrinkage intensity in [0, 1] towards ``mean(eig) * I`` for centred samples ``x`` (n, p)."""
    n, p = x.shape
    if n < 2:
        return 1.0
    s = x.T @ x / n
    mu = np.trace(s) / p
    target_dist = np.sum((s - mu * np.eye(p)) ** 2)  # how far S is from the target
    if target_dist <= 0:
        return 0.0
    # Estimated squared error of S itself: average spread of the rank-one terms around S.
    sq = x**2
    spread = np.sum(sq.T @ sq) / n - np.sum(s**2)
    err = min(max(spread / n, 0.0), target_dist)
    return float(err / target_dist)


@dataclass
class LdaModel:
    """A fitted classifier: standardisation, then ``softmax(z @ weights.T + intercepts)``."""

    classes: list[str]
    mean: np.ndarray  # (p,) feature means
    scale: np.ndarray  # (p,) feature standard deviations
    weights: np.ndarray  # (K, p)
    intercepts: np.ndarray  # (K,)
    shrinkage: float

    def scores(self, feats: np.ndarray) -> np.ndarray:
        """Discriminant scores (n, K) for features (n, p)."""
        z = (np.atleast_2d(feats) - self.mean) / self.scale
        return z @ self.weights.T + self.intercepts

    def predict_proba(self, feats: np.ndarray) -> np.ndarray:
        """Class posteriors (n, K), columns in ``classes`` order."""
        s = self.scores(feats)
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, feats: np.ndarray) -> list[str]:
        """Most probable class name per row."""
        return [self.classes[i] for i in np.argmax(self.scores(feats), axis=1)]


def fit_lda(feats: np.ndarray, labels: list[str], shrinkage: float | None = None) -> LdaModel:
    """Fit shrinkage LDA with equal class priors.

    Equal priors because the class balance of a calibration run says nothing about the live
    session; ``shrinkage=None`` picks the Ledoit-Wolf intensity.
    """
    feats = np.asarray(feats, dtype=np.float64)
    labels_arr = np.asarray(labels)
    classes = sorted(set(labels_arr.tolist()))
    if len(classes) < 2:
        raise ValueError(f"need at least two classes, got {classes}")
    mean = feats.mean(axis=0)
    scale = feats.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = (feats - mean) / scale
    means = np.stack([z[labels_arr == c].mean(axis=0) for c in classes])
    centred = np.concatenate([z[labels_arr == c] - means[i] for i, c in enumerate(classes)])
    lam = ledoit_wolf_shrinkage(centred) if shrinkage is None else float(shrinkage)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"shrinkage must be within 0..1, got {lam}")
    p = z.shape[1]
    cov = centred.T @ centred / centred.shape[0]
    cov = (1.0 - lam) * cov + lam * (np.trace(cov) / p) * np.eye(p)
    cov += 1e-10 * np.eye(p)
    weights = np.linalg.solve(cov, means.T).T  # (K, p)
    intercepts = -0.5 * np.sum(weights * means, axis=1) + np.log(1.0 / len(classes))
    return LdaModel(classes, mean, scale, weights, intercepts, lam)


def grouped_folds(labels: list[str], groups: list[int], n_folds: int) -> list[np.ndarray]:
    """Test-index arrays for folds made of whole groups, each class's groups dealt round-robin."""
    labels_arr, groups_arr = np.asarray(labels), np.asarray(groups)
    fold_of_group: dict[int, int] = {}
    for c in sorted(set(labels_arr.tolist())):
        for i, g in enumerate(dict.fromkeys(groups_arr[labels_arr == c].tolist())):
            fold_of_group[g] = i % n_folds
    fold = np.array([fold_of_group[g] for g in groups_arr.tolist()])
    return [np.flatnonzero(fold == f) for f in range(n_folds)]


def cross_validate(
    feats: np.ndarray,
    labels: list[str],
    groups: list[int],
    n_folds: int = 5,
    shrinkage: float | None = None,
) -> tuple[float, list[float]]:
    """Mean and per-fold accuracy of shrinkage LDA over segment-grouped, class-stratified folds."""
    labels_arr = np.asarray(labels)
    accs = []
    for test in grouped_folds(labels, groups, n_folds):
        train = np.setdiff1d(np.arange(len(labels_arr)), test)
        if test.size == 0 or len(set(labels_arr[train].tolist())) < 2:
            continue
        model = fit_lda(feats[train], labels_arr[train].tolist(), shrinkage)
        pred = np.asarray(model.predict(feats[test]))
        accs.append(float(np.mean(pred == labels_arr[test])))
    if not accs:
        raise ValueError("no usable cross-validation fold")
    return float(np.mean(accs)), accs
