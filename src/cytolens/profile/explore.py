"""``cytolens profile explore``: look inside a trained GAN (CytoGAN section 4, figures 1-3) and check what it shows.

- Samples: a grid of generated cells.
- Interpolation: the same random pairs of noise vectors, joined linearly and spherically (slerp keeps the norm a
  100-d Gaussian sample has, so midpoints are not the atypically short vectors a straight line passes through).
- Vector algebra: generate a pool of cells, measure an attribute on each (mean tubulin intensity, nucleus area
  from thresholding the DNA channel, ...), take the mean noise vector of the top and of the bottom ``fraction``
  of the pool, and add ``k · (z_high − z_low)`` to new noise vectors. The attribute is measured again along
  every strip: its rank correlation with k is reported, next to the same strips along a random direction of the
  same length (the control), so the figure is checked, not just shown.
- Treatment map: if treatment profiles exist (``profile embed``), a 2-D PCA of them coloured by MOA.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from cytolens.core.atomic import atomic_path, write_text_atomic
from cytolens.core.errors import CytolensError, check_choice
from cytolens.core.files import read_json_object, read_parquet_table
from cytolens.profile.gan.models import GAN, load_gan, tensor_to_images
from cytolens.profile.gan.figures import plot_image_strips, save_image_grid
from cytolens.report.figures import new_figure, save_figure

__all__ = [
    "ATTRIBUTES", "attribute_direction", "explore_run", "generator_function", "interpolate", "measure_attributes",
    "plot_treatment_map", "slerp", "walk_attribute",
]

Generate = Callable[[np.ndarray], np.ndarray]
DEFAULT_KS = (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5)


# --- attributes measured on generated cells (images (n, S, S, 3) in [0, 1]: R = DNA, G = tubulin, B = actin) ---


def _channel_mean(channel: int) -> Callable[[np.ndarray, float], np.ndarray]:
    def measure(images: np.ndarray, dna_threshold: float) -> np.ndarray:
        return images[..., channel].reshape(len(images), -1).mean(axis=1)

    return measure


def _nucleus_area(images: np.ndarray, dna_threshold: float) -> np.ndarray:
    # Pixels whose DNA intensity is above one threshold shared by every image (Otsu on the pool's DNA channel):
    # a per-image threshold would find "a nucleus" even in an image that has none.
    return (images[..., 0] > dna_threshold).reshape(len(images), -1).sum(axis=1).astype(np.float64)


#: Attribute name → (function of images and the pool's DNA threshold, unit shown in figures).
ATTRIBUTES: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], str]] = {
    "tubulin": (_channel_mean(1), "mean tubulin (G) intensity"),
    "nucleus_area": (_nucleus_area, "nucleus area (px, DNA above threshold)"),
    "actin": (_channel_mean(2), "mean actin (B) intensity"),
    "dna": (_channel_mean(0), "mean DNA (R) intensity"),
}


def dna_threshold(images: np.ndarray) -> float:
    """Otsu's threshold of the DNA (R) channel over all ``images`` (the nucleus-area threshold)."""
    from skimage.filters import threshold_otsu

    values = images[..., 0].ravel()
    if values.max() - values.min() < 1e-6:
        return float(values.max())
    return float(threshold_otsu(values[:: max(1, len(values) // 2_000_000)]))


def measure_attributes(images: np.ndarray, names: Sequence[str], *, threshold: float) -> pd.DataFrame:
    """One column per attribute in ``names``, one row per image."""
    for name in names:
        check_choice("attribute", name, list(ATTRIBUTES))
    return pd.DataFrame({name: ATTRIBUTES[name][0](images, threshold) for name in names})


# --- the latent space ---


def generator_function(gan: GAN, *, batch_size: int = 64, device: torch.device | None = None) -> Generate:
    """``z`` (n, noise_size) → images (n, S, S, 3) in [0, 1], batched, BatchNorm in inference mode."""
    from cytolens.engine import EngineOptions

    device = device or torch.device(EngineOptions().device_type())
    generator = gan.generator.to(device).eval()

    def generate(z: np.ndarray) -> np.ndarray:
        parts = []
        with torch.no_grad():
            for start in range(0, len(z), batch_size):
                batch = torch.as_tensor(np.asarray(z[start : start + batch_size]), dtype=torch.float32, device=device)
                parts.append(tensor_to_images(generator(batch)))
        return np.concatenate(parts)

    return generate


def slerp(z0: np.ndarray, z1: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between rows of ``z0`` and ``z1`` (n, d) at fraction ``t``; linear if parallel."""
    u0 = z0 / np.linalg.norm(z0, axis=1, keepdims=True)
    u1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    omega = np.arccos(np.clip((u0 * u1).sum(axis=1, keepdims=True), -1.0, 1.0))
    sin = np.sin(omega)
    safe = np.where(sin < 1e-6, 1.0, sin)
    spherical = (np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / safe
    return np.where(sin < 1e-6, (1 - t) * z0 + t * z1, spherical)


def interpolate(z0: np.ndarray, z1: np.ndarray, steps: int, *, method: str = "linear") -> np.ndarray:
    """Paths from ``z0`` to ``z1`` (n, d): (n, steps, d), linear or spherical (``slerp``)."""
    check_choice("method", method, ("linear", "spherical"))
    ts = np.linspace(0.0, 1.0, steps)
    if method == "linear":
        return np.stack([(1 - t) * z0 + t * z1 for t in ts], axis=1)
    return np.stack([slerp(z0, z1, t) for t in ts], axis=1)


def attribute_direction(
    generate: Generate, attribute: str, *, pool: np.ndarray, threshold: float | None = None,
    fraction: float = 0.15, images: np.ndarray | None = None,
) -> dict:
    """The noise-space direction of "more ``attribute``": mean z of the top minus mean z of the bottom cells.

    Parameters
    ----------
    generate : callable
        ``z`` → images in [0, 1].
    attribute : str
        A key of :data:`ATTRIBUTES`.
    pool : (n, d) ndarray
        Noise vectors to generate and rank.
    threshold : float, optional
        DNA threshold for ``nucleus_area``; default Otsu's on the pool.
    fraction : float
        Share of the pool in each of the top and bottom groups (0 < fraction <= 0.5).
    images : ndarray, optional
        ``generate(pool)`` if already computed (it is the expensive part).

    Returns
    -------
    dict
        ``direction``, ``z_high``, ``z_low``, ``scores`` (the pool's attribute values), ``high_mean`` and
        ``low_mean`` (the attribute's mean in each group), ``threshold``.
    """
    if not 0 < fraction <= 0.5:
        raise ValueError(f"`fraction` must be in (0, 0.5], got {fraction!r}")
    images = generate(pool) if images is None else images
    threshold = dna_threshold(images) if threshold is None else threshold
    scores = measure_attributes(images, [attribute], threshold=threshold)[attribute].to_numpy()
    k = max(1, int(round(fraction * len(pool))))
    order = np.argsort(scores, kind="stable")
    low, high = order[:k], order[-k:]
    z_high, z_low = pool[high].mean(axis=0), pool[low].mean(axis=0)
    return {
        "direction": z_high - z_low, "z_high": z_high, "z_low": z_low, "scores": scores, "threshold": threshold,
        "high_mean": float(scores[high].mean()), "low_mean": float(scores[low].mean()),
    }


def walk_attribute(
    generate: Generate, base: np.ndarray, direction: np.ndarray, attribute: str, *, threshold: float,
    ks: Sequence[float] = DEFAULT_KS,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``base + k · direction`` for every row of ``base`` and every k; measure ``attribute``.

    Returns
    -------
    images : (rows, len(ks), S, S, 3) ndarray
    values : (rows, len(ks)) ndarray
    """
    z = np.stack([base + k * direction for k in ks], axis=1)  # rows, ks, d
    flat = generate(z.reshape(-1, z.shape[-1]))
    values = measure_attributes(flat, [attribute], threshold=threshold)[attribute].to_numpy()
    return flat.reshape(*z.shape[:2], *flat.shape[1:]), values.reshape(z.shape[:2])


def monotonicity(ks: Sequence[float], values: np.ndarray) -> dict[str, float]:
    """How monotone ``values`` (rows, len(ks)) are in k: per-row Spearman ρ (mean, share > 0) and pooled ρ."""
    ks = np.asarray(ks, dtype=float)
    rhos = []
    for row in values:
        rho = spearmanr(ks, row).statistic if np.ptp(row) > 0 else 0.0
        rhos.append(float(rho))
    pooled = spearmanr(np.tile(ks, len(values)), values.ravel()).statistic if np.ptp(values) > 0 else 0.0
    return {
        "mean_row_spearman": float(np.mean(rhos)), "rows_increasing": float(np.mean(np.asarray(rhos) > 0)),
        "pooled_spearman": float(pooled),
        "change_per_unit_k": float(np.polyfit(np.tile(ks, len(values)), values.ravel(), 1)[0]),
    }


# --- the run-level command ---


def explore_run(
    run: str | Path,
    out: str | Path | None = None,
    *,
    profiles: str | Path | None = None,
    seed: int = 0,
    samples: int = 64,
    pairs: int = 4,
    interpolation_steps: int = 9,
    pool: int = 512,
    fraction: float = 0.15,
    strips: int = 4,
    attributes: Sequence[str] = ("tubulin", "nucleus_area"),
    ks: Sequence[float] = DEFAULT_KS,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Write a GAN run's exploration figures into ``out`` (default ``RUN/explore``); return the summary.

    The summary (also ``explore.json``) lists the files written and, per attribute, the direction's
    monotonicity next to the random-direction control's.
    """
    gan, config, step = load_gan(run)
    out = Path(out) if out is not None else Path(run) / "explore"
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda message: None)
    generate = generator_function(gan)
    rng = np.random.default_rng(seed)
    d = gan.noise_size
    files: dict[str, str] = {}
    label = f"{config.model}, step {step}"

    generated = generate(rng.standard_normal((samples, d)))
    files["samples"] = str(save_image_grid(generated, out / "samples.png"))
    real = _real_cells(Path(run), min(samples, 32), seed)
    if real is not None:
        files["real_vs_generated"] = str(plot_image_strips(
            [real[:8], real[8:16], generated[:8], generated[8:16]], out / "real_vs_generated.png",
            row_labels=["real", "real", "generated", "generated"],
            title=f"cells from the training store (top) and generated ({label})",
        ))
    z0, z1 = rng.standard_normal((pairs, d)), rng.standard_normal((pairs, d))
    for method in ("linear", "spherical"):
        path = interpolate(z0, z1, interpolation_steps, method=method)
        flat = generate(path.reshape(-1, d))
        images = flat.reshape(pairs, interpolation_steps, *flat.shape[1:])
        files[f"interpolation_{method}"] = str(plot_image_strips(
            list(images), out / f"interpolation_{method}.png",
            column_labels=[f"t={t:.2f}" for t in np.linspace(0, 1, interpolation_steps)],
            title=f"{method} interpolation between random noise pairs ({label})",
        ))
    say(f"wrote samples and interpolations to {out}")

    pool_z = rng.standard_normal((pool, d))
    pool_images = generate(pool_z)
    threshold = dna_threshold(pool_images)
    base = rng.standard_normal((strips, d))
    results, rows = {}, []
    for attribute in attributes:
        found = attribute_direction(generate, attribute, pool=pool_z, threshold=threshold, fraction=fraction,
                                    images=pool_images)
        direction = found["direction"]
        random_direction = rng.standard_normal(d)
        random_direction *= np.linalg.norm(direction) / np.linalg.norm(random_direction)
        images, values = walk_attribute(generate, base, direction, attribute, threshold=threshold, ks=ks)
        _, control = walk_attribute(generate, base, random_direction, attribute, threshold=threshold, ks=ks)
        results[attribute] = {
            "description": ATTRIBUTES[attribute][1], "pool_high_mean": found["high_mean"],
            "pool_low_mean": found["low_mean"], "direction_norm": float(np.linalg.norm(direction)),
            "learned": monotonicity(ks, values), "random_control": monotonicity(ks, control),
            "mean_along_k": values.mean(axis=0).tolist(), "control_mean_along_k": control.mean(axis=0).tolist(),
        }
        for kind, table in (("learned", values), ("random", control)):
            rows += [{"attribute": attribute, "direction": kind, "row": r, "k": k, "value": float(table[r, c])}
                     for r in range(len(table)) for c, k in enumerate(ks)]
        fmt = "{:.0f}" if attribute == "nucleus_area" else "{:.3f}"
        files[f"algebra_{attribute}"] = str(plot_image_strips(
            list(images), out / f"algebra_{attribute}.png", column_labels=[f"k={k:+.1f}" for k in ks],
            cell_labels=[[fmt.format(v) for v in row] for row in values],
            title=f"z + k·(z_high − z_low) for {ATTRIBUTES[attribute][1]}; value under each cell "
                  f"(Spearman ρ {results[attribute]['learned']['pooled_spearman']:+.2f}, random direction "
                  f"{results[attribute]['random_control']['pooled_spearman']:+.2f})",
        ))
    table = pd.DataFrame(rows)
    if len(table):
        with atomic_path(out / "attributes.csv") as tmp:
            table.to_csv(tmp, index=False)
        files["attributes_csv"] = str(out / "attributes.csv")
        files["attribute_checks"] = str(_plot_attribute_checks(table, out / "attribute_checks.png", title=label))

    treatments = _find_treatments(profiles)
    if treatments is not None:
        files["treatment_map"] = str(plot_treatment_map(treatments, out / "treatment_map.png"))
        say(f"wrote the treatment map of {treatments}")
    elif profiles is not None:
        say(f"no treatments.parquet at {profiles}; treatment map skipped")
    summary = {"run": str(run), "gan": config.model, "step": step, "seed": seed, "dna_threshold": threshold,
               "fraction": fraction, "ks": list(ks), "attributes": results, "files": files}
    write_text_atomic(out / "explore.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _plot_attribute_checks(table: pd.DataFrame, path: Path, *, title: str) -> Path:
    names = list(pd.unique(table["attribute"]))
    fig, axes = new_figure(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False, constrained_layout=True)
    for ax, name in zip(axes[0], names, strict=True):
        for kind, colour in (("learned", "C0"), ("random", "C7")):
            part = table[(table["attribute"] == name) & (table["direction"] == kind)]
            for _, row in part.groupby("row"):
                ax.plot(row["k"], row["value"], color=colour, alpha=0.35, linewidth=0.8)
            mean = part.groupby("k")["value"].mean()
            ax.plot(mean.index, mean.to_numpy(), color=colour, linewidth=2.2,
                    label="z_high − z_low" if kind == "learned" else "random direction (control)")
        ax.set_xlabel("k")
        ax.set_ylabel(ATTRIBUTES[name][1])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"attribute measured along the strips ({title})", fontsize=10)
    save_figure(fig, path, dpi=110)
    return path


def _real_cells(run: Path, n: int, seed: int) -> np.ndarray | None:
    # The store a run trained on, if done.json names it and it is still there: for side-by-side figures.
    from cytolens.profile.crops.cell_store import CellStore

    try:
        path = Path(read_json_object(run / "done.json")["cells_path"])
        store = CellStore(path)
    except (OSError, KeyError, ValueError, CytolensError):
        return None
    rows = np.random.default_rng(seed).choice(len(store), size=min(n, len(store)), replace=False)
    crops = store.crops(np.sort(rows))
    return crops if len(crops) >= 16 else None


def _find_treatments(profiles: str | Path | None) -> Path | None:
    if profiles is None:
        return None
    path = Path(profiles)
    if path.is_dir():
        path = path / "treatments.parquet"
    return path if path.is_file() else None


def plot_treatment_map(treatments: str | Path, path: str | Path, *, aggregation: str = "bbbc021") -> Path:
    """A 2-D PCA of treatment profiles (``Metadata_`` columns + features), one point per row, coloured by MOA.

    Features are standardised first (classical features have different units). Writes the PNG and, beside it,
    the coordinates as CSV. ``treatments.parquet`` holds several aggregations marked by
    ``Metadata_Aggregation``; only ``aggregation`` is drawn (the BBBC021 protocol's by default).
    """
    from sklearn.decomposition import PCA

    table = read_parquet_table(treatments)
    if "Metadata_Aggregation" in table:
        available = sorted(map(str, pd.unique(table["Metadata_Aggregation"])))
        if aggregation not in available:
            raise CytolensError(f"no {aggregation!r} aggregation (found {', '.join(available)})", path=treatments)
        table = table[table["Metadata_Aggregation"] == aggregation].reset_index(drop=True)
    meta = [c for c in table.columns if c.startswith("Metadata_")]
    features = [c for c in table.columns if c not in meta and pd.api.types.is_numeric_dtype(table[c])]
    if "Metadata_MOA" not in table or len(features) < 2 or len(table) < 3:
        raise CytolensError("treatment profiles need Metadata_MOA, at least 2 feature columns and 3 rows",
                            path=treatments)
    x = table[features].to_numpy(np.float64)
    x = np.nan_to_num((x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0))
    pca = PCA(n_components=2, random_state=0)
    coords = pca.fit_transform(x)
    path = Path(path)
    frame = table[meta].copy()
    frame["PC1"], frame["PC2"] = coords[:, 0], coords[:, 1]
    with atomic_path(path.with_suffix(".csv")) as tmp:
        frame.to_csv(tmp, index=False)
    moas = sorted(map(str, pd.unique(table["Metadata_MOA"].fillna("unknown"))))
    colours = matplotlib.colormaps["tab20"]
    fig, ax = new_figure(figsize=(8.5, 6), constrained_layout=True)
    moa = table["Metadata_MOA"].fillna("unknown").astype(str).to_numpy()
    for i, name in enumerate(moas):
        chosen = moa == name
        control = name.upper() in ("DMSO", "CONTROL", "UNKNOWN")
        ax.scatter(coords[chosen, 0], coords[chosen, 1], s=28 if not control else 18, alpha=0.85,
                   color="0.6" if control else colours(i % 20), label=f"{name} ({int(chosen.sum())})",
                   edgecolors="none")
    ratio = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%} of variance)")
    ax.set_title(f"{len(table)} treatment profiles, {len(features)} features, coloured by MOA")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=110)
    return path
