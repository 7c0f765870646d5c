"""PCA tags of useful heads (docs/reference_facts.md F7 step 9): does a head's output separate the tricase questions?

For a useful head and an answer digit d, take the head's output (its `z` through its rows of W_O: a d_model
vector) at the node's position over the tricase questions of (d, op) (cases 8, 9, 10: the digit pair sums to
less than, exactly or more than 9; for subtraction x < y, =, >). Fit a 6-component PCA; cluster the standardised
PCA outputs with KMeans for k = 2 and 3 (n_init 10, random_state 42); score the clusterings by silhouette (x100),
Calinski-Harabasz and label agreement (the mean over clusters of the share of the most common true case, x100).
The head gets `Math.Add:A{d}.SP` (addition) or `Math.Sub:A{d}.MP` (subtraction) when the first component explains
more than 30% of the variance, the best silhouette is at least 20, the best Calinski-Harabasz at least 50 and the
best agreement above 50. The metrics are returned as numbers, so the tags are a pure function of them.
"""

from __future__ import annotations

import numpy as np

from arith.vocab import ADD

N_COMPONENTS = 6
SEED = 42
METRICS = ("evr0", "silhouette", "calinski_harabasz", "agreement")


def metrics(outputs: np.ndarray, cases: np.ndarray) -> np.ndarray:
    """[evr0 (%), best silhouette (x100), best Calinski-Harabasz, best agreement (%)] of one head's outputs
    [N, d_model] over tricase questions with true cases [N]."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import calinski_harabasz_score, silhouette_score
    from sklearn.preprocessing import StandardScaler

    outputs = np.asarray(outputs, dtype=np.float64)
    k = min(N_COMPONENTS, outputs.shape[0], outputs.shape[1])
    pca = PCA(n_components=k)
    reduced = pca.fit_transform(outputs)
    evr0 = float(pca.explained_variance_ratio_[0]) * 100 if k else 0.0
    scaled = StandardScaler().fit_transform(reduced)
    best = [0.0, 0.0, 0.0]
    for n_clusters in (2, 3):
        if len(np.unique(scaled, axis=0)) <= n_clusters:
            continue
        labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=SEED).fit_predict(scaled)
        if len(np.unique(labels)) < 2:
            continue
        agree = np.mean([np.bincount(cases[labels == c]).max() / (labels == c).sum() for c in np.unique(labels)])
        best = [
            max(best[0], silhouette_score(scaled, labels) * 100),
            max(best[1], calinski_harabasz_score(scaled, labels)),
            max(best[2], agree * 100),
        ]
    return np.array([evr0, *best], dtype=np.float64)


def tag(values: np.ndarray, digit: int, op: int) -> str | None:
    """The PCA tag of one (head, digit, operation) from its metrics, or None."""
    evr0, sil, ch, agree = (float(v) for v in values)
    if evr0 > 30 and sil >= 20 and ch >= 50 and agree > 50:
        return f"Math.Add:A{digit}.SP" if op == ADD else f"Math.Sub:A{digit}.MP"
    return None
