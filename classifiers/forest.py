"""Tree ensembles as plain arrays: the safe on-disk form of a random forest, and its own predictor.

A fitted scikit-learn forest is converted once (:meth:`TreeEnsemble.from_sklearn`) into five flat arrays over all
nodes of all trees (child indices are global) and the predictor below is what the estimators use from then on,
before and after saving. So a model predicts exactly the same numbers after save -> load, and no pickled
scikit-learn object is ever needed. The predictor follows scikit-learn's semantics: inputs are cast to float32,
a sample goes left when ``x[feature] <= threshold``, a tree's output is the class distribution of its leaf, and
the forest averages the trees (summed in tree order, then divided by the number of trees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ARRAY_NAMES = ("roots", "left", "right", "feature", "threshold", "value")


@dataclass
class TreeEnsemble:
    """All trees of a forest. ``value`` [nodes, n_classes] holds each node's class distribution (rows sum to 1)."""

    roots: np.ndarray       # [trees] int64: index of each tree's root node
    left: np.ndarray        # [nodes] int64: left child (global index), -1 at leaves
    right: np.ndarray       # [nodes] int64: right child, -1 at leaves
    feature: np.ndarray     # [nodes] int64: split feature, -1 at leaves
    threshold: np.ndarray   # [nodes] float64
    value: np.ndarray       # [nodes, n_classes] float64

    def __post_init__(self):
        self.validate()

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.left.shape[0])

    def validate(self, n_features: int | None = None) -> None:
        """Check that the arrays describe trees a predictor can walk (sizes, index ranges, no cycles by depth)."""
        n = self.left.shape[0]
        for name in ("left", "right", "feature", "threshold"):
            a = getattr(self, name)
            if a.ndim != 1 or a.shape[0] != n:
                raise ValueError(f"tree array {name!r} has shape {a.shape}, expected ({n},)")
        if self.value.ndim != 2 or self.value.shape[0] != n:
            raise ValueError(f"tree array 'value' has shape {self.value.shape}, expected ({n}, n_classes)")
        if self.roots.ndim != 1 or self.roots.shape[0] < 1:
            raise ValueError("a tree ensemble needs at least one tree")
        if ((self.roots < 0) | (self.roots >= n)).any():
            raise ValueError("tree roots point outside the node arrays")
        leaf = self.left < 0
        if ((self.right < 0) != leaf).any():
            raise ValueError("tree nodes must have either two children or none")
        inner = ~leaf
        for name in ("left", "right"):
            c = getattr(self, name)[inner]
            if ((c < 0) | (c >= n)).any():
                raise ValueError(f"tree {name} children point outside the node arrays")
        # children always come after their parent in scikit-learn's depth-first layout: this rules out cycles
        idx = np.nonzero(inner)[0]
        if (self.left[inner] <= idx).any() or (self.right[inner] <= idx).any():
            raise ValueError("tree children must come after their parent node (corrupt tree arrays)")
        if (self.feature[inner] < 0).any():
            raise ValueError("a split node has a negative feature index")
        if n_features is not None and (self.feature[inner] >= n_features).any():
            raise ValueError(f"a split node uses a feature index >= {n_features}, the number of features")
        if not np.isfinite(self.value).all():
            raise ValueError("tree leaf values must be finite")

    # ------------------------------------------------------------------------------------------- conversion
    @classmethod
    def from_sklearn(cls, estimators) -> TreeEnsemble:
        """From the fitted trees (``forest.estimators_``) of a scikit-learn forest classifier."""
        roots, left, right, feature, threshold, value = [], [], [], [], [], []
        offset = 0
        for est in estimators:
            t = est.tree_
            lc = t.children_left.astype(np.int64)
            rc = t.children_right.astype(np.int64)
            is_leaf = lc < 0
            roots.append(offset)
            left.append(np.where(is_leaf, -1, lc + offset))
            right.append(np.where(is_leaf, -1, rc + offset))
            feature.append(np.where(is_leaf, -1, t.feature.astype(np.int64)))
            threshold.append(np.where(is_leaf, 0.0, t.threshold.astype(np.float64)))
            v = np.asarray(t.value, dtype=np.float64)[:, 0, :]  # [nodes, n_classes], single output
            s = v.sum(axis=1, keepdims=True)
            value.append(v / np.where(s == 0, 1.0, s))  # counts (old scikit-learn) or fractions: both normalised
            offset += t.node_count
        return cls(np.asarray(roots, dtype=np.int64), np.concatenate(left), np.concatenate(right),
                   np.concatenate(feature), np.concatenate(threshold), np.concatenate(value))

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": np.ascontiguousarray(getattr(self, k)) for k in ARRAY_NAMES}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> TreeEnsemble:
        missing = [f"{prefix}{k}" for k in ARRAY_NAMES if f"{prefix}{k}" not in arrays]
        if missing:
            raise ValueError(f"tree arrays missing: {missing}")
        get = {k: arrays[f"{prefix}{k}"] for k in ARRAY_NAMES}
        return cls(get["roots"].astype(np.int64), get["left"].astype(np.int64), get["right"].astype(np.int64),
                   get["feature"].astype(np.int64), get["threshold"].astype(np.float64),
                   get["value"].astype(np.float64))

    # ------------------------------------------------------------------------------------------- prediction
    def leaves(self, X: np.ndarray) -> np.ndarray:
        """[n, trees] global index of the leaf each sample reaches in each tree."""
        X32 = np.asarray(X, dtype=np.float32)
        n = X32.shape[0]
        node = np.broadcast_to(self.roots, (n, self.n_trees)).copy()
        rows = np.arange(n)[:, None]
        active = self.left[node] >= 0
        while active.any():
            nd = node[active]
            f = self.feature[nd]
            r = np.broadcast_to(rows, node.shape)[active]
            go_left = X32[r, f].astype(np.float64) <= self.threshold[nd]
            node[active] = np.where(go_left, self.left[nd], self.right[nd])
            active = self.left[node] >= 0
        return node

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """[n, n_classes] mean of the trees' leaf distributions."""
        leaves = self.leaves(X)
        out = np.zeros((leaves.shape[0], self.value.shape[1]), dtype=np.float64)
        for t in range(self.n_trees):  # in tree order, like scikit-learn's accumulation
            out += self.value[leaves[:, t]]
        out /= self.n_trees
        return out
