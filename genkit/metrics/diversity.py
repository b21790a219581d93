"""Within-class spread: how much a class's images differ from each other, in the FD feature space.

FD with a class cycle (seed s draws class s mod K) compares the pooled features, where the spread *between*
classes dominates: a generator that ignores its noise and draws one image per class keeps most of the pooled
covariance and loses little FD. This catches it: the mean over classes of the trace of the within-class
covariance, near 0 for such a generator. Read it against the teacher's samples on the same seeds and classes.
"""

from __future__ import annotations

import numpy as np


def within_class_spread(features: np.ndarray, labels) -> float:
    """features (n, d), labels (n,): mean over the classes with >= 2 images of trace(unbiased covariance of that
    class's features). Unbiased for any count per class, so 4 images per class estimate what 10 do."""
    features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"features {features.shape} and labels {labels.shape}: (n, d) and (n,) are needed")
    traces = [features[labels == k].var(axis=0, ddof=1).sum() for k in np.unique(labels)
              if (labels == k).sum() >= 2]
    if not traces:
        raise ValueError("within_class_spread needs a class with at least 2 images")
    return float(np.mean(traces))
