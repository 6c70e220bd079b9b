"""The XGBoost baseline of Shpilman et al. 2017: gradient-boosted trees on hand-crafted features.

The paper compared its CNN with XGBoost on image features; here the features are the named columns of
:func:`cytolens.classify.features.feature_table` (or any numeric table). A fitted baseline remembers its
feature names, so predicting on a table with other columns fails loudly instead of silently mixing features.

A saved baseline is a folder with XGBoost's own JSON model (``model.json``, readable by any XGBoost) and a
small JSON sidecar (``baseline.json``) with the feature names and classes; nothing is pickled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost
from numpy.typing import NDArray

from cytolens.core.atomic import atomic_path, write_text_atomic
from cytolens.classify.config import XGBoostConfig
from cytolens.core.errors import CytolensError, OptionError

__all__ = ["XGBoostBaseline", "feature_importance", "fit_xgboost"]

_MODEL_FILE = "model.json"
_SIDECAR_FILE = "baseline.json"
_FORMAT = "cytolens-xgboost-baseline"
_FORMAT_VERSION = 1


def _as_matrix(features: pd.DataFrame, name: str = "features") -> NDArray[np.float64]:
    if not isinstance(features, pd.DataFrame):
        raise OptionError(f"`{name}` must be a pandas DataFrame with named columns, got {type(features).__name__}.")
    try:
        matrix = features.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"`{name}` must hold only numeric columns ({exc}).") from exc
    if np.isinf(matrix).any():
        raise OptionError(f"`{name}` contains infinite values.")  # NaN is fine: XGBoost treats it as missing
    return matrix


@dataclass
class XGBoostBaseline:
    """A fitted XGBoost classifier with the names of the features it was trained on.

    Attributes
    ----------
    model : xgboost.XGBClassifier
        The fitted classifier; it sees the features as an unnamed matrix in ``feature_names`` order.
    feature_names : list of str
        Column names, in training order.
    num_classes : int
        K; labels are 0..K-1.
    class_names : list of str
        Names of the K classes (``"0"``, ``"1"``, … unless given).
    features_version : str or None
        ``attrs["features_version"]`` of the training table, if it had one (see
        :data:`cytolens.classify.features.FEATURES_VERSION`).
    """

    model: xgboost.XGBClassifier
    feature_names: list[str]
    num_classes: int
    class_names: list[str]
    features_version: str | None = None

    def _matrix(self, features: pd.DataFrame) -> NDArray[np.float64]:
        if not isinstance(features, pd.DataFrame):
            raise OptionError(f"`features` must be a pandas DataFrame, got {type(features).__name__}.")
        columns = [str(c) for c in features.columns]
        missing = [name for name in self.feature_names if name not in columns]
        extra = [name for name in columns if name not in self.feature_names]
        if missing or extra:
            raise OptionError(
                "`features` columns do not match the baseline's features: "
                f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}, "
                f"unexpected {extra[:5]}{' …' if len(extra) > 5 else ''}."
            )
        # Same names in another order are reordered: the model only knows positions.
        return _as_matrix(features.set_axis(columns, axis=1)[self.feature_names])

    def predict_proba(self, features: pd.DataFrame) -> NDArray[np.float64]:
        """Class probabilities.

        Parameters
        ----------
        features : pandas.DataFrame
            N rows; exactly the columns of :attr:`feature_names`, in any order.

        Returns
        -------
        (N, K) float64 ndarray
            Rows sum to 1; binary tasks also give two columns.

        Raises
        ------
        OptionError
            If a column is missing, unexpected, non-numeric or infinite.
        """
        matrix = self._matrix(features)
        if matrix.shape[0] == 0:
            return np.zeros((0, self.num_classes), dtype=np.float64)
        proba = np.asarray(self.model.predict_proba(matrix), dtype=np.float64)
        return proba / proba.sum(axis=1, keepdims=True)  # float32 softmax rounding: make rows sum to 1 exactly

    def predict(self, features: pd.DataFrame) -> NDArray[np.int64]:
        """Most probable class per row, ``(N,)`` int64 in 0..K-1."""
        return np.argmax(self.predict_proba(features), axis=1).astype(np.int64)

    def save(self, path: str | Path) -> Path:
        """Write the baseline to the folder ``path`` (created if needed) and return it.

        Both files are written atomically; the sidecar last, so a folder with a sidecar is always complete.
        """
        folder = Path(path)
        with atomic_path(folder / _MODEL_FILE) as tmp:  # the temp name keeps ".json": XGBoost picks JSON
            self.model.save_model(tmp)
        sidecar = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "xgboost_version": xgboost.__version__,
            "feature_names": self.feature_names,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "features_version": self.features_version,
        }
        write_text_atomic(folder / _SIDECAR_FILE, json.dumps(sidecar, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | Path) -> XGBoostBaseline:
        """Read a baseline written by :meth:`save`.

        Raises
        ------
        CytolensError
            Naming the folder, if it is not a saved baseline or its files are damaged.
        """
        folder = Path(path)
        try:
            sidecar = json.loads((folder / _SIDECAR_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            message = f"not a saved XGBoost baseline (cannot read {_SIDECAR_FILE}: {exc})"
            raise CytolensError(message, path=folder) from exc
        if sidecar.get("format") != _FORMAT:
            raise CytolensError(f"{_SIDECAR_FILE} is not a {_FORMAT} file", path=folder)
        model = xgboost.XGBClassifier()
        try:
            model.load_model(folder / _MODEL_FILE)
        except (OSError, ValueError, xgboost.core.XGBoostError) as exc:
            raise CytolensError(f"cannot read {_MODEL_FILE} ({str(exc).splitlines()[0]})", path=folder) from exc
        return cls(
            model=model,
            feature_names=list(sidecar["feature_names"]),
            num_classes=int(sidecar["num_classes"]),
            class_names=list(sidecar["class_names"]),
            features_version=sidecar.get("features_version"),
        )


def fit_xgboost(
    features: pd.DataFrame,
    labels: np.ndarray,
    *,
    config: XGBoostConfig,
    seed: int,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> XGBoostBaseline:
    """Fit the gradient-boosted-tree baseline.

    Parameters
    ----------
    features : pandas.DataFrame
        (N, F) numeric table with unique column names (e.g. from
        :func:`cytolens.classify.features.feature_table`); NaN counts as missing. Trees need no scaling.
    labels : (N,) array_like of int
        Classes in 0..K-1; every class must occur.
    config : XGBoostConfig
        Trees, depth, learning rate and subsampling. ``config.enabled`` is the caller's business.
    seed : int
        Random state of the row and column subsampling.
    num_classes : int
        K ≥ 2.
    class_names : sequence of str, optional
        Names of the K classes, stored with the model.

    Returns
    -------
    XGBoostBaseline

    Raises
    ------
    OptionError
        If the table and labels do not fit together, a class is absent, or an option is out of range.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise OptionError(f"`num_classes` must be an integer ≥ 2, got {num_classes!r}.")
    matrix = _as_matrix(features)
    names = [str(c) for c in features.columns]
    if len(set(names)) != len(names):
        raise OptionError("`features` has duplicate column names.")
    y = np.asarray(labels)
    if y.shape != (matrix.shape[0],):
        raise OptionError(f"`labels` must have shape ({matrix.shape[0]},) to match `features`, got {y.shape!r}.")
    if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
        raise OptionError("`labels` must be integers 0..K-1.")
    y = y.astype(np.int64)
    absent = sorted(set(range(int(num_classes))) - set(y.tolist()))
    if y.size == 0 or y.min() < 0 or y.max() >= num_classes or absent:
        raise OptionError(
            f"`labels` must be integers in 0..{num_classes - 1} with every class present; "
            f"absent: {absent}, found {sorted(set(y.tolist()))[:10]}."
        )
    if class_names is None:
        class_names = [str(k) for k in range(num_classes)]
    if len(class_names) != num_classes:
        raise OptionError(f"`class_names` must have {num_classes} entries, got {len(class_names)}.")
    binary = num_classes == 2
    model = xgboost.XGBClassifier(
        n_estimators=config.n_estimators,
        max_depth=config.max_depth,
        learning_rate=config.learning_rate,
        subsample=config.subsample,
        colsample_bytree=config.colsample_bytree,
        objective="binary:logistic" if binary else "multi:softprob",
        tree_method="hist",
        n_jobs=1,  # folds/tasks are parallelised by the caller; one thread each keeps runs reproducible
        random_state=int(seed),
    )
    # A plain matrix: XGBoost rejects some characters in feature names, and the names live in the baseline.
    model.fit(matrix, y)
    version = features.attrs.get("features_version")
    return XGBoostBaseline(
        model=model,
        feature_names=names,
        num_classes=int(num_classes),
        class_names=[str(c) for c in class_names],
        features_version=None if version is None else str(version),
    )


def feature_importance(baseline: XGBoostBaseline, top: int = 20) -> pd.DataFrame:
    """Features ranked by gain (how much splitting on them reduced the training loss).

    Parameters
    ----------
    baseline : XGBoostBaseline
        A fitted baseline.
    top : int, optional
        How many features to return (at most the number of features).

    Returns
    -------
    pandas.DataFrame
        Columns ``feature`` (str), ``total_gain`` (loss reduction summed over all splits on the feature),
        ``gain`` (XGBoost's "gain": the mean per split) and ``gain_fraction`` (share of the summed total
        gain); sorted by total gain, descending, ties in feature order. Features never split on have 0.
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise OptionError(f"`top` must be a positive integer, got {top!r}.")
    booster = baseline.model.get_booster()
    # Keys are "f<i>" because the model was trained on an unnamed matrix.
    keys = [f"f{i}" for i in range(len(baseline.feature_names))]
    total = booster.get_score(importance_type="total_gain")
    mean = booster.get_score(importance_type="gain")
    total_gain = np.array([float(total.get(key, 0.0)) for key in keys])
    overall = float(total_gain.sum())
    table = pd.DataFrame(
        {
            "feature": baseline.feature_names,
            "total_gain": total_gain,
            "gain": [float(mean.get(key, 0.0)) for key in keys],
            "gain_fraction": total_gain / overall if overall > 0 else np.zeros_like(total_gain),
        }
    )
    table = table.sort_values("total_gain", ascending=False, kind="stable").head(int(top))
    return table.reset_index(drop=True)
