"""Simulated single-cell images of immunostained microtubules under paclitaxel (Shpilman et al. 2017).

The paper imaged fixed CV-1 cells stained with anti-α-tubulin (DM1A + FITC) through a 63× PlanApo objective on
a 14-bit Olympus XM10 CCD, after 0, 0.1 or 1 paclitaxel, and classified single-cell crops. The real images were
never published; this module writes a dataset with the same layout (one folder per class of 16-bit TIFFs
holding 14-bit data) from a model of the biology, so that every pipeline can run end to end on it.

Biological model (geometry in :mod:`cytolens.synthetic.microtubules.geometry`)
----------------------------------------------------------------------------
* **Cell.** A spread interphase cell with a smooth lobed outline, an off-centre nucleus (dim in the tubulin
  channel: no cytoplasmic tubulin there, and microtubules pass above it out of focus) and a perinuclear
  centrosome (MTOC). Free (unpolymerised) tubulin gives a diffuse haze, brighter where the cell is thick.
* **Network.** Semi-flexible microtubules (worm-like chains, persistence length ``persistence_length_um``)
  radiate from the MTOC; those that reach the cortex stop or bend to run along it.
* **Paclitaxel.** The drug stabilises microtubules. Its effect on a cell is ``stabilisation`` =
  ``x / (x + 0.2)`` with ``x = dose × sensitivity``; ``sensitivity`` is lognormal per cell (σ = 1.2 ×
  difficulty in log space), so the 0.1 and 1 classes overlap, as the experts in the paper found (an oracle
  that knows each cell's stabilisation separates 0.1 from 1 in about 86 % of cells at difficulty 1, 0 from 1
  in about 98 %). With stabilisation the polymer mass rises (more and
  longer microtubules: ``n_microtubules``, ``length_factor``), microtubules coalesce into bright bundles
  (``bundling_fraction`` of them, ``mean_bundle_size`` per cable), curl near the periphery (``curl``, lower
  persistence), lose their radial order (``radial_disorder``: share nucleated away from the centrosome with
  random headings) and the free-tubulin haze drops (``free_tubulin``).
* **difficulty** scales the cell-to-cell spread (sensitivity and every phenotype parameter) up and the drug's
  effect size down; at 0 the classes are nearly deterministic and the imaging nuisances are off.

Imaging model
-------------
Lines about one pixel wide are blurred by a Gaussian approximation of the widefield PSF (σ ≈ 1.2 px at 512 px,
0.1 µm per px); ``out_of_focus`` cells (about 12 %) get an extra ``defocus_sigma_px``; ``frame_cut`` cells
(about 10 %) are shifted partly out of the frame; uneven illumination (``vignetting``), a per-cell
``exposure``, sample ``background`` and camera ``offset``; shot noise (``gain`` electrons per ADU) and read
noise (``read_noise_e``); quantisation to 0..16383 stored as uint16.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage as ndi

from cytolens.core.atomic import write_text_atomic
from cytolens.core.errors import OptionError
from cytolens.data.io import write_tiff
from cytolens.synthetic.camera import read_out
from cytolens.synthetic.microtubules.geometry import (
    GROWTH_STEP,
    REF_FRAME,
    UM_PER_REF_PX,
    CellGeometry,
    NetworkParameters,
    draw_cell_geometry,
    free_tubulin_haze,
    grow_network,
    render_network,
)

MICROTUBULE_CLASSES: tuple[str, ...] = ("0", "0.1", "1")
MAX_ADU = 16383  # 14-bit camera
#: Dose at which a cell of sensitivity 1 reaches half of the maximal stabilisation.
HALF_EFFECT_DOSE = 0.2
#: Integral across one microtubule (ADU·px per px of length) at size 512 and exposure 1; with σ = 1.2 px this
#: puts a single microtubule at roughly 1000 ADU above its surroundings.
_LINE_DENSITY = 3600.0
_FREE_TUBULIN_ADU = 1600.0

HiddenParameters = dict[str, float | int | bool | str]


def _check_common(size: Any, difficulty: Any) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 64 <= size <= 4096:
        raise OptionError(f"`size` must be an integer between 64 and 4096, got {size!r}.")
    if isinstance(difficulty, bool) or not isinstance(difficulty, (int, float, np.number)) or not (
        0.0 <= float(difficulty) <= 3.0
    ):
        raise OptionError(f"`difficulty` must be a number between 0 and 3, got {difficulty!r}.")


def _lognormal(rng: np.random.Generator, sigma: float) -> float:
    return float(np.exp(rng.normal(0.0, sigma))) if sigma > 0 else 1.0


def _plan_cell(
    rng: np.random.Generator, *, dose: float, size: int, difficulty: float
) -> tuple[HiddenParameters, CellGeometry]:
    """Draw every hidden parameter and the cell geometry, in a fixed order (so results are reproducible)."""
    nuisance = min(1.0, difficulty)  # at difficulty 0 the data set is a clean toy problem
    out_of_focus = bool(rng.random() < 0.12 * nuisance)
    frame_cut = bool(rng.random() < 0.10 * nuisance)
    scale = size / REF_FRAME
    psf_sigma = max(1.2 * scale, 0.5)
    defocus = rng.uniform(2.5, 5.5) if out_of_focus else rng.uniform(0.0, 0.6)
    imaging: HiddenParameters = {
        "out_of_focus": out_of_focus,
        "frame_cut": frame_cut,
        "psf_sigma_px": psf_sigma,
        "defocus_sigma_px": float(defocus * scale),
        "exposure": _lognormal(rng, 0.25),
        "gain": float(rng.uniform(1.0, 1.5)),
        "read_noise_e": float(rng.uniform(5.0, 9.0)),
        "offset": float(rng.uniform(100.0, 300.0)),
        "background": float(rng.uniform(40.0, 160.0)),
        "vignetting": float(rng.uniform(0.05, 0.3)),
        "illumination_x": float(rng.uniform(0.2, 0.8)),
        "illumination_y": float(rng.uniform(0.2, 0.8)),
    }
    geometry, shift_x, shift_y = draw_cell_geometry(rng, frame_cut=frame_cut)

    spread = difficulty
    sensitivity = _lognormal(rng, 1.2 * spread)
    x = dose * sensitivity
    effect_scale = 1.2 / (1.0 + 0.2 * difficulty)
    stab = min(1.0, effect_scale * x / (x + HALF_EFFECT_DOSE))
    area = (geometry.radius / 172.0) ** 2

    def jitter(sd: float) -> float:
        return float(rng.normal(0.0, sd * spread)) if spread > 0 else 0.0

    phenotype: HiddenParameters = {
        "sensitivity": sensitivity,
        "stabilisation": stab,
        "n_microtubules": int(round(240 * area * (1.0 + 0.8 * stab) * _lognormal(rng, 0.12 * spread))),
        "length_factor": (0.85 + 0.6 * stab) * _lognormal(rng, 0.1 * spread),
        "bundling_fraction": float(np.clip(0.03 + 0.85 * stab + jitter(0.06), 0.0, 0.95)),
        "mean_bundle_size": 2.5 + 5.0 * stab,
        "curl": float(np.clip(1.1 * stab**1.5 + jitter(0.08), 0.0, 1.5)),
        "persistence_length_um": 60.0 / (1.0 + 1.2 * stab) * _lognormal(rng, 0.15 * spread),
        "radial_disorder": float(np.clip(0.05 + 0.55 * stab + jitter(0.05), 0.0, 0.95)),
        "free_tubulin": float(np.clip(1.0 - 0.6 * stab + jitter(0.08), 0.2, 1.3)),
        "edge_stop_fraction": float(np.clip(0.75 * (1.0 - stab), 0.0, 1.0)),
    }
    cell: HiddenParameters = {
        "cell_radius_um": geometry.radius * UM_PER_REF_PX,
        "nucleus_major_um": geometry.nucleus_a * UM_PER_REF_PX,
        "nucleus_minor_um": geometry.nucleus_b * UM_PER_REF_PX,
        "frame_shift_x_px": shift_x * scale,
        "frame_shift_y_px": shift_y * scale,
        # Output-pixel coordinates of the centrosome (col = x, row = y), e.g. to check a centre estimate.
        "mtoc_x_px": geometry.mtoc_x * scale,
        "mtoc_y_px": geometry.mtoc_y * scale,
    }
    params: HiddenParameters = {"dose": float(dose), "size": int(size), "difficulty": float(difficulty)}
    for part in (phenotype, cell, imaging):
        params.update({k: (float(v) if isinstance(v, np.floating) else v) for k, v in part.items()})
    return params, geometry


def draw_cell_parameters(
    rng: np.random.Generator, *, dose: float, size: int = 512, difficulty: float = 1.0
) -> HiddenParameters:
    """Draw a cell's hidden parameters without rendering it (for statistics over many cells).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    dose : float
        Paclitaxel dose (0, 0.1 or 1 in the paper).
    size : int, optional
        Output image side in pixels.
    difficulty : float, optional
        Overlap between classes, 0..3.

    Returns
    -------
    dict
        The same keys :func:`simulate_cell` returns, except those measured on the grown network
        (``polymer_mass_um`` and friends).
    """
    _check_common(size, difficulty)
    return _plan_cell(rng, dose=float(dose), size=int(size), difficulty=float(difficulty))[0]


def _network_parameters(
    rng: np.random.Generator, geometry: CellGeometry, params: HiddenParameters
) -> tuple[NetworkParameters, NDArray[np.int64]]:
    """Split the cell's microtubules into tracks (singles and bundles) and draw per-track growth parameters."""
    n_mt = int(params["n_microtubules"])
    bundled = float(params["bundling_fraction"])
    mean_size = float(params["mean_bundle_size"])
    # Choose the share q of tracks that are bundles so that a fraction `bundled` of microtubules is in one.
    q = bundled / (mean_size - bundled * (mean_size - 1.0))
    sizes = np.where(rng.random(n_mt) < q, 2 + rng.poisson(mean_size - 2.0, n_mt), 1)
    sizes = sizes[: max(1, int(np.searchsorted(np.cumsum(sizes), n_mt, side="right")))]
    n = sizes.size
    free = rng.random(n) < float(params["radial_disorder"])
    r0 = geometry.radius
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    spot = rng.normal(0.0, 6.0, (2, n))  # pericentriolar material is about a micrometre across
    # Non-centrosomal microtubules start anywhere in the cytoplasm (uniform over the star-shaped area).
    reach = np.sqrt(rng.random(n)) * 0.85 * geometry.outline_radius(angle)
    start_x = np.where(free, geometry.center_x + reach * np.cos(angle), geometry.mtoc_x + spot[0])
    start_y = np.where(free, geometry.center_y + reach * np.sin(angle), geometry.mtoc_y + spot[1])
    length_factor = float(params["length_factor"])
    mean_length = np.where(free, 0.45, 1.0) * length_factor * r0 * np.where(sizes > 1, 1.3, 1.0)
    length = np.minimum(rng.gamma(2.5, 1.0 / 2.5, n) * mean_length, 2.2 * r0)
    persistence = float(params["persistence_length_um"]) / UM_PER_REF_PX * np.exp(rng.normal(0.0, 0.3, n))
    # Radius of curvature of a fully curled microtubule: about 7 µm, either handedness.
    curvature = rng.choice([-1.0, 1.0], n) * float(params["curl"]) / 70.0 * rng.uniform(0.5, 1.5, n)
    stops = rng.random(n) < float(params["edge_stop_fraction"])
    # Dynamic microtubules slide a short way along the cortex; stabilised ones keep growing around it.
    edge_run = rng.exponential(0.15 + 0.6 * float(params["stabilisation"]), n) * r0
    network = NetworkParameters(
        start_x, start_y, rng.uniform(0.0, 2.0 * np.pi, n), np.maximum(length, GROWTH_STEP),
        persistence, curvature, stops, edge_run,
    )
    return network, sizes


def _expose(signal: NDArray[np.float32], params: HiddenParameters, rng: np.random.Generator) -> NDArray[np.uint16]:
    """Illumination, exposure, shot and read noise, offset and 14-bit quantisation."""
    size = signal.shape[0]
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    # Full-frame temporaries are costly (fresh pages each time), so everything below works in place.
    scale = np.float32(-float(params["vignetting"]) / 0.5)
    illumination = np.add.outer(
        scale * (axis - float(params["illumination_y"])) ** 2, scale * (axis - float(params["illumination_x"])) ** 2
    )
    illumination += 1.0
    photons = signal  # the caller hands over its buffer
    photons *= float(params["exposure"])
    photons += float(params["background"])
    photons *= illumination
    return read_out(
        photons, gain=float(params["gain"]), read_noise_e=float(params["read_noise_e"]),
        offset=float(params["offset"]), max_adu=MAX_ADU, rng=rng,
    )


def simulate_cell(
    rng: np.random.Generator, *, dose: float, size: int = 512, difficulty: float = 1.0
) -> tuple[NDArray[np.uint16], HiddenParameters]:
    """Simulate one immunostained CV-1 cell after paclitaxel treatment.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; the same generator state gives the same cell.
    dose : float
        Paclitaxel dose; the paper used 0, 0.1 and 1.
    size : int, optional
        Side of the square image in pixels (64..4096). The cell model scales with it: 512 px is 0.1 µm per px.
    difficulty : float, optional
        0..3: higher means more cell-to-cell spread in drug sensitivity and phenotype, and weaker drug effects.

    Returns
    -------
    image : (size, size) uint16 ndarray
        14-bit data (0..16383) as a 16-bit camera stores it.
    params : dict of str to float, int, bool or str
        Hidden parameters of the cell (see the module docstring), plus ``polymer_mass_um`` (total length of
        polymer), ``n_tracks`` (singles plus bundles) and ``mean_mt_length_um`` measured on the grown network.

    Raises
    ------
    OptionError
        If ``dose``, ``size`` or ``difficulty`` is out of range.
    """
    _check_common(size, difficulty)
    if isinstance(dose, bool) or not isinstance(dose, (int, float, np.number)) or not 0.0 <= float(dose) < 1e6:
        raise OptionError(f"`dose` must be a non-negative number, got {dose!r}.")
    size, difficulty = int(size), float(difficulty)
    params, geometry = _plan_cell(rng, dose=float(dose), size=size, difficulty=difficulty)
    network, sizes = _network_parameters(rng, geometry, params)
    nodes, n_nodes = grow_network(geometry, network, rng)

    lengths_um = (n_nodes - 1) * GROWTH_STEP * UM_PER_REF_PX
    params["n_tracks"] = int(sizes.size)
    params["polymer_mass_um"] = float(np.sum(lengths_um * sizes))
    params["mean_mt_length_um"] = float(np.sum(lengths_um * sizes) / max(1, int(sizes.sum())))
    params["n_microtubules"] = int(sizes.sum())

    signal = render_network(geometry, network, sizes, nodes, n_nodes, rng, size, _LINE_DENSITY)
    signal += free_tubulin_haze(geometry, size, _FREE_TUBULIN_ADU * float(params["free_tubulin"]))
    sigma = float(np.hypot(params["psf_sigma_px"], params["defocus_sigma_px"]))
    signal = ndi.gaussian_filter(signal, sigma, output=np.float32, mode="constant", truncate=3.5)
    image = _expose(signal, params, rng)
    params["saturated_fraction"] = float(np.mean(image >= MAX_ADU))
    return image, params


def cell_rng(seed: int, class_index: int, cell_index: int) -> np.random.Generator:
    """The generator of one cell: cell k of a class is the same whatever the number of cells per class."""
    return np.random.default_rng(np.random.SeedSequence([seed, class_index, cell_index]))


def simulate_microtubule_dataset(
    out_dir: str | Path,
    *,
    per_class: int,
    size: int = 512,
    seed: int = 0,
    difficulty: float = 1.0,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Write a folder-per-class data set of simulated single-cell microtubule images.

    Parameters
    ----------
    out_dir : str or Path
        Output folder; created if needed. Receives ``0/``, ``0.1/`` and ``1/`` with one 16-bit TIFF per cell
        (``0/cell_0000.tif`` …) and ``cells.csv``. Existing files of the same names are replaced.
    per_class : int
        Cells per class (≥ 1).
    size : int, optional
        Image side in pixels (64..4096).
    seed : int, optional
        Non-negative seed. Cell ``k`` of class ``c`` uses ``SeedSequence([seed, c, k])``, so the same seed gives
        byte-identical files and a larger ``per_class`` extends a data set without changing its first cells.
    difficulty : float, optional
        0..3, see :func:`simulate_cell`.
    progress : callable, optional
        Called with 1 after each cell is written.

    Returns
    -------
    pandas.DataFrame
        One row per cell: ``path`` (relative to ``out_dir``, POSIX), ``class``, ``dose``, ``seed``,
        ``cell_index`` and every hidden parameter. The same table is written to ``out_dir/cells.csv`` (last,
        atomically, so its presence means the data set is complete).

    Raises
    ------
    OptionError
        If an argument is out of range.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise OptionError(f"`per_class` must be an integer of at least 1, got {per_class!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OptionError(f"`seed` must be a non-negative integer, got {seed!r}.")
    _check_common(size, difficulty)
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for class_index, name in enumerate(MICROTUBULE_CLASSES):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for cell_index in range(int(per_class)):
            rng = cell_rng(int(seed), class_index, cell_index)
            image, params = simulate_cell(rng, dose=float(name), size=int(size), difficulty=float(difficulty))
            relative = f"{name}/cell_{cell_index:04d}.tif"
            write_tiff(out / relative, image)
            params.pop("dose")
            rows.append({"path": relative, "class": name, "dose": float(name), "seed": int(seed),
                         "cell_index": cell_index, **params})
            if progress is not None:
                progress(1)
    table = pd.DataFrame(rows)
    write_text_atomic(out / "cells.csv", table.to_csv(index=False))
    return table
