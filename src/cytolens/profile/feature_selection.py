"""Feature selection for the classical-feature baseline, with pycytominer's ``feature_select``.

The CellProfiler-like features (:mod:`cytolens.profile.features`) include near-constant and strongly
correlated measurements (e.g. a compartment's integrated intensity beside its mean intensity × area). Left in,
they weigh a few morphological aspects several times in the cosine similarity. The JUMP / pycytominer recipe
removes them on the normalised well profiles before profiles are compared: ``variance_threshold`` (variance
below ``min_variance``), ``correlation_threshold`` (one of each pair with Pearson |r| above 0.9) and
``blocklist`` (pycytominer's list of CellProfiler features known to be unreliable). The kept columns are then
the only ones aggregated into the classical baseline's profiles.

pycytominer is optional (the ``eval`` extra). Without it the features are kept unselected and
:class:`FeatureSelection` says so (``applied=False`` with the reason), which the profiles folder records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from cytolens.core.errors import CytolensError, OptionError

__all__ = ["OPERATIONS", "FeatureSelection", "select_features"]

OPERATIONS = ("variance_threshold", "correlation_threshold", "blocklist")
MISSING_PYCYTOMINER = ("feature selection needs pycytominer (pip install 'cytolens[eval]'): the classical features "
                       "are kept unselected")


@dataclass
class FeatureSelection:
    """Which features were kept, which dropped, and by what.

    Attributes
    ----------
    features : list of str
        The kept features, in their original order.
    dropped : list of str
        The removed ones, in their original order.
    applied : bool
        False when pycytominer was missing (``features`` is then every feature).
    tool : str
        ``"pycytominer <version>"``, or why nothing was selected.
    operations : tuple of str
    settings : dict
    """

    features: list[str]
    dropped: list[str]
    applied: bool
    tool: str
    operations: tuple[str, ...] = OPERATIONS
    settings: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What ``profile.json`` keeps of it."""
        return {"applied": self.applied, "tool": self.tool, "operations": list(self.operations),
                "settings": self.settings, "n_features_before": len(self.features) + len(self.dropped),
                "n_features_after": len(self.features), "dropped": self.dropped}


def _import_pycytominer() -> Any:
    """``pycytominer.feature_select`` and pycytominer's version, or None when pycytominer is not installed."""
    import warnings

    try:
        with warnings.catch_warnings():
            # pycytominer sets a pandas option that pandas 3 deprecated when it is imported; not ours to fix.
            warnings.filterwarnings("ignore", message="The 'mode.copy_on_write' option is deprecated")
            from pycytominer import feature_select
    except ImportError:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("pycytominer")
    except PackageNotFoundError:  # imported from a source tree
        found = "?"
    return feature_select, found


def select_features(
    profiles: pd.DataFrame,
    features: list[str],
    *,
    operations: tuple[str, ...] | list[str] = OPERATIONS,
    min_variance: float = 1e-6,
    corr_threshold: float = 0.9,
) -> FeatureSelection:
    """Choose the features to keep with ``pycytominer.feature_select`` (see the module docstring).

    Parameters
    ----------
    profiles : DataFrame
        One row per sample (normalised well profiles), metadata and ``features``; not modified.
    features : list of str
        The feature columns to select among.
    operations : sequence of str
        A subset of :data:`OPERATIONS`, applied in order.
    min_variance : float, default 1e-6
        ``variance_threshold``'s cut (pycytominer's default).
    corr_threshold : float, default 0.9
        ``correlation_threshold``'s cut on |Pearson r| (pycytominer's default).

    Returns
    -------
    FeatureSelection
        With ``applied=False`` and every feature kept when pycytominer is not installed.
    """
    unknown = [name for name in operations if name not in OPERATIONS]
    if unknown:
        raise OptionError(f"`operations` must be among {', '.join(OPERATIONS)}, got {', '.join(unknown)}")
    if not 0 < corr_threshold < 1:
        raise OptionError(f"`corr_threshold` must be in (0, 1), got {corr_threshold!r}")
    missing = [name for name in features if name not in profiles.columns]
    if missing:
        raise CytolensError(f"profiles have no feature column {missing[0]!r}")
    settings = {"min_variance": min_variance, "corr_threshold": corr_threshold}
    imported = _import_pycytominer()
    if imported is None:
        return FeatureSelection(list(features), [], False, MISSING_PYCYTOMINER, tuple(operations), settings)
    feature_select, found = imported
    if len(profiles) < 3:  # a correlation or variance over fewer samples is meaningless
        return FeatureSelection(list(features), [], False, f"too few profiles to select on ({len(profiles)})",
                                tuple(operations), settings)
    selected = feature_select(profiles[list(features)], features=list(features), operation=list(operations),
                              min_variance=min_variance, corr_threshold=corr_threshold)
    kept = set(selected.columns)
    return FeatureSelection([f for f in features if f in kept], [f for f in features if f not in kept], True,
                            f"pycytominer {found}", tuple(operations), settings)
