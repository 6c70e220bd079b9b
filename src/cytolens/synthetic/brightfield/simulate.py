"""Simulated bright-field + DAPI + whole-cell-stain fields of HeLa cells at 20× (MIDL 2019, seed 003).

The paper predicted background / nucleus / cytoplasm from 1440 × 1920 bright-field images of adherent HeLa
cells at 20×; its labels came from unsupervised pixel classification of two fluorescence channels acquired with
each field (DAPI for nuclei, a whole-cell stain for cells). The data were never published, so this module writes
fields with the same channels and layout from a model of the biology and the optics; the true geometry is
written too, which the real data cannot offer.

Layout written by :func:`simulate_brightfield_dataset` (one 16-bit TIFF per field and channel, same stem)::

    OUT/brightfield/field_0000.tif   OUT/dapi/field_0000.tif   OUT/cellstain/field_0000.tif
    OUT/truth/field_0000.tif         (uint8: 0 background, 1 nucleus, 2 cytoplasm)
    OUT/truth/instances/field_0000.tif  (uint16 cell ids, 0 background)
    OUT/fields.csv                   (one row per field, hidden parameters; written last)

Geometry (cells, nuclei, nucleoli, heights) is in :mod:`cytolens.synthetic.brightfield.cells`.

Imaging model
-------------
* **Bright-field** is transmitted light, so unstained cells give WEAK contrast: a slight absorption
  (optical density ``od_cytoplasm`` per unit of relative height, more in the nucleus ``od_nucleus`` with granular
  chromatin, and in nucleoli ``od_nucleolus``; perinuclear granules; an organelle texture of strength
  ``od_texture`` throughout the cytoplasm), blurred by the objective, plus a
  defocus term: a slightly defocused thin phase object shows the Laplacian of its optical path, so a bright or
  dark fringe (halo) lines every cell edge and rounded mitotic cells shine. ``defocus_um`` is signed (above or
  below focus). Uneven Köhler illumination (``vignetting``, a linear ``gradient`` at ``gradient_angle``),
  a mean level ``bf_level`` well inside the 16-bit range, dark debris specks (``debris``), and sometimes air
  bubbles (``n_bubbles``): a circle with a dark rim and a bright interior that washes out the cells beneath it
  (the paper's failure case). Bubbles sit in the medium above the cells, so the epi-fluorescence channels and the
  truth are unaffected.
* **DAPI**: nuclei bright (per-cell DNA content ``dapi_cv``; condensed mitotic chromatin about twice as bright),
  granular chromatin, DAPI-poor nucleoli, a faint cytoplasmic signal, dim background.
* **Whole-cell stain**: proportional to cell height (bright around the nucleus, dim in the thin lamella),
  nuclei filled too (``stain_nucleus_ratio``), per-cell loading ``stain_cv``, some debris autofluorescent.
* **Camera**: both fluorescence channels are blurred by the point-spread function (``psf_fluo_um``) and get
  their own uneven excitation; every channel gets shot noise (``gain`` e⁻/ADU), read noise and an offset, and
  is quantised to uint16.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage as ndi

from cytolens.core.atomic import atomic_path
from cytolens.core.errors import OptionError
from cytolens.data.io import write_tiff
from cytolens.synthetic.camera import read_out
from cytolens.synthetic.brightfield.cells import CellField, CellFieldParameters, draw_cell_field
from cytolens.core.validation import check_int, check_number

#: 6.5 µm camera pixels behind a 20× objective.
DEFAULT_PIXEL_SIZE_UM = 0.325
CHANNELS: tuple[str, ...] = ("brightfield", "dapi", "cellstain")
MAX_ADU = 65535

HiddenParameters = dict[str, float | int | bool | str]
Image = NDArray[np.float32]


def _plan_field(
    rng: np.random.Generator, *, pixel_size_um: float, bubbles: int | None, bubble_probability: float
) -> tuple[HiddenParameters, CellFieldParameters]:
    """Draw every hidden parameter of a field, in a fixed order (so results are reproducible)."""
    cells = CellFieldParameters(
        pixel_size_um=pixel_size_um,
        # The paper's fields are dense (cytoplasm about ten times background), so confluence leans high.
        confluence=float(rng.uniform(0.35, 0.9)),
        cell_radius_um=float(rng.uniform(14.0, 19.0)),
        cluster_size=float(rng.uniform(4.0, 14.0)),
        cluster_spread_um=float(rng.uniform(25.0, 60.0)),
        isolated_fraction=float(rng.uniform(0.05, 0.25)),
        mitotic_fraction=float(rng.uniform(0.0, 0.06)),
    )
    n_bubbles = int(bubbles) if bubbles is not None else int(rng.random() < bubble_probability)
    params: HiddenParameters = {
        "pixel_size_um": pixel_size_um,
        "confluence": cells.confluence,
        "cell_radius_um": cells.cell_radius_um,
        "cluster_size": cells.cluster_size,
        "cluster_spread_um": cells.cluster_spread_um,
        "isolated_fraction": cells.isolated_fraction,
        "mitotic_fraction": cells.mitotic_fraction,
        "bf_level": float(rng.uniform(18000.0, 34000.0)),
        "od_cytoplasm": float(rng.uniform(0.012, 0.03)),
        "od_nucleus": float(rng.uniform(0.01, 0.025)),
        "od_nucleolus": float(rng.uniform(0.03, 0.06)),
        "od_texture": float(rng.uniform(0.01, 0.025)),
        "defocus_um": float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.5)),
        "psf_bf_um": float(rng.uniform(0.25, 0.45)),
        "vignetting": float(rng.uniform(0.04, 0.18)),
        "gradient": float(rng.uniform(0.0, 0.12)),
        "gradient_angle": float(rng.uniform(0.0, 2 * np.pi)),
        "debris_per_mm2": float(rng.uniform(20.0, 200.0)),
        "n_bubbles": n_bubbles,
        "dapi_level": float(rng.uniform(2500.0, 9000.0)),
        "dapi_cv": float(rng.uniform(0.15, 0.3)),
        "stain_level": float(rng.uniform(1200.0, 4000.0)),
        "stain_cv": float(rng.uniform(0.2, 0.4)),
        "stain_nucleus_ratio": float(rng.uniform(0.9, 1.4)),
        "fluo_background": float(rng.uniform(80.0, 400.0)),
        "fluo_vignetting": float(rng.uniform(0.1, 0.3)),
        "psf_fluo_um": float(rng.uniform(0.6, 1.0)),
        "gain": float(rng.uniform(0.6, 1.5)),
        "read_noise_e": float(rng.uniform(2.0, 8.0)),
        "offset": float(rng.uniform(90.0, 110.0)),
    }
    return params, cells


def _illumination(height: int, width: int, vignetting: float, gradient: float, angle: float) -> Image:
    """Smooth illumination: quadratic fall-off towards the corners and a linear ramp, mean about 1."""
    side = max(height, width)
    # Both terms are separable sums f(y) + g(x), so the frame is one outer addition of two vectors.
    y = (np.arange(height, dtype=np.float64) + 0.5 - height / 2) / side
    x = (np.arange(width, dtype=np.float64) + 0.5 - width / 2) / side
    column = 1.0 + vignetting * (0.17 - 2 * y * y) + gradient * np.sin(angle) * y
    row = -vignetting * 2 * x * x + gradient * np.cos(angle) * x
    return np.add.outer(column.astype(np.float32), row.astype(np.float32))


def _blur(image: Image, sigma: float) -> Image:
    """Gaussian blur in place; a 3σ kernel is plenty for optics and saves a third of the time."""
    return ndi.gaussian_filter(image, sigma, output=image, truncate=3.0)


def _camera(signal: Image, params: HiddenParameters, rng: np.random.Generator) -> NDArray[np.uint16]:
    """Shot and read noise, offset and 16-bit quantisation; ``signal`` (in ADU) is used as the work buffer."""
    return read_out(
        signal, gain=float(params["gain"]), read_noise_e=float(params["read_noise_e"]),
        offset=float(params["offset"]), max_adu=MAX_ADU, rng=rng,
    )


def _debris(rng: np.random.Generator, shape: tuple[int, int], params: HiddenParameters) -> tuple[Image, Image]:
    """Dark specks (optical density) and the autofluorescence of some of them."""
    px = float(params["pixel_size_um"])
    area_mm2 = shape[0] * shape[1] * (px * 1e-3) ** 2
    count = int(rng.poisson(float(params["debris_per_mm2"]) * area_mm2))
    params["debris"] = count
    od = np.zeros(shape, dtype=np.float32)
    glow = np.zeros(shape, dtype=np.float32)
    rows, cols = rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)
    radius = rng.uniform(0.3, 1.5, count) / px
    strength = rng.uniform(0.05, 0.4, count)
    fluorescent = rng.random(count) < 0.3
    for r, c, rad, s, f in zip(rows, cols, radius, strength, fluorescent):
        h = int(np.ceil(rad))
        ys, xs = slice(max(0, r - h), r + h + 1), slice(max(0, c - h), c + h + 1)
        dy = np.arange(ys.start, min(shape[0], ys.stop))[:, None] - r
        dx = np.arange(xs.start, min(shape[1], xs.stop))[None, :] - c
        disc = (dy * dy + dx * dx <= max(rad * rad, 0.5)).astype(np.float32)
        od[ys, xs] += np.float32(s) * disc
        if f:
            glow[ys, xs] += np.float32(s) * disc
    return od, glow


def _bubbles(rng: np.random.Generator, shape: tuple[int, int], params: HiddenParameters) -> tuple[Image, Image]:
    """Air bubbles: a transmission factor (dark rim, bright interior) and how much cell contrast survives."""
    height, width = shape
    px = float(params["pixel_size_um"])
    transmission = np.ones(shape, dtype=np.float32)
    visibility = np.ones(shape, dtype=np.float32)
    described = []
    for _ in range(int(params["n_bubbles"])):
        radius = rng.uniform(50.0, 160.0) / px
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        rim = rng.uniform(4.0, 9.0) / px
        y = np.arange(height, dtype=np.float32)[:, None] - np.float32(cy)
        x = np.arange(width, dtype=np.float32)[None, :] - np.float32(cx)
        distance = np.sqrt(y * y + x * x) - np.float32(radius)  # signed: negative inside
        inside = 1.0 / (1.0 + np.exp(np.clip(distance / np.float32(0.4 * rim), -30, 30)))
        ring = np.exp(-((distance + np.float32(0.6 * rim)) / np.float32(rim)) ** 2)
        transmission *= (1.0 + np.float32(rng.uniform(0.06, 0.15)) * inside - np.float32(rng.uniform(0.5, 0.8)) * ring)
        visibility *= 1.0 - np.float32(0.9) * inside.astype(np.float32)
        described.append(f"{cx * px:.1f}:{cy * px:.1f}:{radius * px:.1f}")
    params["bubbles_um"] = ";".join(described)  # x:y:radius of each bubble, in µm from the top-left corner
    params["bubble_fraction"] = float(np.mean(visibility < 0.5))
    return transmission, visibility


def _render(
    rng: np.random.Generator, field: CellField, params: HiddenParameters
) -> tuple[NDArray[np.uint16], NDArray[np.uint16], NDArray[np.uint16]]:
    """Bright-field, DAPI and whole-cell-stain images of a field."""
    shape = field.labels.shape
    px = float(params["pixel_size_um"])
    f32 = np.float32
    nucleus = (field.labels == 1).astype(np.float32)
    nucleoli = field.nucleoli.astype(np.float32)
    # Granular texture at the scale of chromatin domains / cytoplasmic granules (about half a micrometre).
    grain = _blur(rng.standard_normal(shape, dtype=np.float32), max(0.5, 0.45 / px))
    grain *= f32(1.0 / max(float(grain[:: 7, :: 7].std()), 1e-6))
    debris_od, debris_glow = _debris(rng, shape, params)

    # Bright-field: absorption (weak) plus the defocus halo of the optical path. Full frames are costly (fresh
    # pages for every temporary), so the arithmetic below works in place where it can.
    od = np.clip(field.height - f32(0.6), 0, None)
    od *= 1 - nucleus
    od *= np.clip(grain - f32(1.0), 0, None)
    od *= f32(0.15)  # perinuclear granules and vesicles
    od += f32(params["od_cytoplasm"]) * field.height
    # Organelles (mitochondria, vesicles, ER) scatter and absorb everywhere in the cytoplasm, even in the thin
    # lamella: the granular texture that lets a human see unstained cells where the mean contrast is ~1 %.
    organelles = _blur(rng.standard_normal(shape, dtype=np.float32), max(0.6, 0.5 / px))
    organelles *= f32(float(params["od_texture"]) / max(float(organelles[:: 7, :: 7].std()), 1e-6))
    organelles *= np.sqrt(field.height)
    organelles *= 1 - nucleus
    od += organelles
    od += (f32(params["od_nucleus"]) * nucleus) * (1 + f32(0.35) * grain)
    od += f32(params["od_nucleolus"]) * nucleoli
    od += debris_od
    # The halo is the Laplacian of the defocus-blurred optical path: blur once, then a 3-tap Laplacian.
    halo_sigma = max(0.7, (0.3 + 0.35 * abs(float(params["defocus_um"]))) / px)
    # The optical path steps up at the membrane (refractive index of cytoplasm) and again at the nuclear envelope.
    path = f32(0.3) * (field.labels > 0)
    path += field.height
    path += f32(0.2) * nucleus
    path = _blur(path, halo_sigma)
    halo = ndi.laplace(path, output=path)
    halo *= f32(-0.08 * float(params["defocus_um"]) * halo_sigma**2)
    od -= halo  # the halo enters as (linearised) extra transmission, blurred by the objective with the rest
    od = _blur(od, float(params["psf_bf_um"]) / px)
    contrast = np.exp(-od, out=od)
    contrast -= f32(1.0)
    if int(params["n_bubbles"]) > 0:
        transmission, visibility = _bubbles(rng, shape, params)
        contrast *= visibility
        contrast += f32(1.0)
        contrast *= transmission
    else:
        params["bubbles_um"], params["bubble_fraction"] = "", 0.0
        contrast += f32(1.0)
    contrast *= _illumination(*shape, float(params["vignetting"]), float(params["gradient"]),
                              float(params["gradient_angle"]))
    contrast *= f32(params["bf_level"])
    brightfield = _camera(contrast, params, rng)

    # Fluorescence: per-cell brightness looked up through the instance image.
    n = field.mitotic.size
    dna = np.exp(rng.normal(0.0, float(params["dapi_cv"]), n)) * np.where(field.mitotic, 2.0, 1.0)
    loading = np.exp(rng.normal(0.0, float(params["stain_cv"]), n))
    psf = float(params["psf_fluo_um"]) / px
    excitation = _illumination(*shape, float(params["fluo_vignetting"]), 0.0, 0.0)
    background = f32(params["fluo_background"])

    dapi = f32(0.25) * grain
    dapi += 1
    dapi *= nucleus
    dapi *= 1 - f32(0.6) * nucleoli
    dapi += f32(0.03) * (field.labels == 2)  # mitochondrial DNA and out-of-focus light
    dapi *= (np.concatenate([[0.0], dna]) * float(params["dapi_level"])).astype(np.float32)[field.instances]
    dapi = _blur(dapi, psf)
    dapi += background
    dapi *= excitation
    dapi_image = _camera(dapi, params, rng)

    stain = field.height.copy()
    stain += nucleus * (f32(params["stain_nucleus_ratio"]) - stain)
    grain *= f32(0.1)
    grain += 1
    stain *= grain
    stain *= (np.concatenate([[0.0], loading]) * float(params["stain_level"])).astype(np.float32)[field.instances]
    stain += f32(3000.0) * debris_glow
    stain = _blur(stain, psf)
    stain += background * f32(1.5)
    stain *= excitation
    return brightfield, dapi_image, _camera(stain, params, rng)


def simulate_field(
    rng: np.random.Generator,
    *,
    height: int = 1440,
    width: int = 1920,
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM,
    bubbles: int | None = None,
    bubble_probability: float = 0.1,
) -> dict[str, Any]:
    """Simulate one field of HeLa cells: bright-field, DAPI, whole-cell stain and the true geometry.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; the same generator state gives the same field.
    height, width : int, optional
        Frame size in pixels (64..8192); the paper's camera gives 1440 × 1920.
    pixel_size_um : float, optional
        Pixel size in µm (0.1..5). Cells keep their physical size, so a small frame holds fewer cells and a
        coarser pixel draws them smaller.
    bubbles : int, optional
        Number of air bubbles (0..5); by default one with probability ``bubble_probability``.
    bubble_probability : float, optional
        Chance of a bubble when ``bubbles`` is not given.

    Returns
    -------
    dict
        ``brightfield``, ``dapi``, ``cellstain``: (height, width) uint16; ``labels``: (height, width) uint8
        (0 background, 1 nucleus, 2 cytoplasm); ``instances``: (height, width) uint16 cell ids;
        ``params``: hidden parameters (see the module docstring) plus ``n_cells``, ``n_mitotic``,
        ``cell_fraction``, ``nucleus_fraction``, ``debris``, ``bubbles_um`` and ``bubble_fraction``.

    Raises
    ------
    OptionError
        If an argument is out of range.
    """
    height = check_int("height", height, low=64, high=8192)
    width = check_int("width", width, low=64, high=8192)
    pixel_size_um = check_number("pixel_size_um", pixel_size_um, low=0.1, high=5.0)
    bubble_probability = check_number("bubble_probability", bubble_probability, low=0.0, high=1.0)
    if bubbles is not None:
        bubbles = check_int("bubbles", bubbles, low=0, high=5)
    params, cell_params = _plan_field(rng, pixel_size_um=pixel_size_um, bubbles=bubbles,
                                      bubble_probability=bubble_probability)
    field = draw_cell_field(rng, cell_params, height=height, width=width)
    brightfield, dapi, cellstain = _render(rng, field, params)
    visible = np.unique(field.instances)
    params["n_cells"] = int(np.count_nonzero(visible))
    params["n_mitotic"] = int(np.count_nonzero(field.mitotic[visible[visible > 0] - 1]))
    params["cell_fraction"] = float(np.mean(field.labels > 0))
    params["nucleus_fraction"] = float(np.mean(field.labels == 1))
    return {"brightfield": brightfield, "dapi": dapi, "cellstain": cellstain, "labels": field.labels,
            "instances": field.instances, "params": params}


def field_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of field ``index``: the same whatever the number of fields in the data set."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def simulate_brightfield_dataset(
    out_dir: str | Path,
    *,
    images: int,
    height: int = 1440,
    width: int = 1920,
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM,
    seed: int = 0,
    bubble_probability: float = 0.1,
    instances: bool = True,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Write a data set of simulated bright-field / DAPI / whole-cell-stain fields with their true labels.

    Parameters
    ----------
    out_dir : str or Path
        Output folder, created if needed; receives ``brightfield/``, ``dapi/``, ``cellstain/``, ``truth/``
        (and ``truth/instances/``) with one TIFF per field (``field_0000.tif`` …) and ``fields.csv``.
        Existing files of the same names are replaced.
    images : int
        Number of fields (≥ 1).
    height, width : int, optional
        Frame size in pixels (64..8192).
    pixel_size_um : float, optional
        Pixel size in µm (0.1..5); see :func:`simulate_field`.
    seed : int, optional
        Non-negative seed. Field ``k`` uses ``SeedSequence([seed, k])``: the same seed gives identical files and
        more ``images`` extend a data set without changing its first fields.
    bubble_probability : float, optional
        Chance that a field has an air bubble.
    instances : bool, optional
        Also write the cell-instance images to ``truth/instances/``.
    progress : callable, optional
        Called with 1 after each field is written.

    Returns
    -------
    pandas.DataFrame
        One row per field: ``stem``, ``seed``, ``field_index``, ``height``, ``width`` and every hidden parameter.
        The same table is written to ``out_dir/fields.csv`` last (atomically), so its presence means the data set
        is complete.

    Raises
    ------
    OptionError
        If an argument is out of range.
    """
    images = check_int("images", images, low=1, high=10**6)
    seed = check_int("seed", seed, low=0, high=2**63 - 1)
    height = check_int("height", height, low=64, high=8192)
    width = check_int("width", width, low=64, high=8192)
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for index in range(images):
        field = simulate_field(field_rng(seed, index), height=height, width=width, pixel_size_um=pixel_size_um,
                               bubble_probability=bubble_probability)
        stem = f"field_{index:04d}"
        for channel in CHANNELS:
            write_tiff(out / channel / f"{stem}.tif", field[channel])
        write_tiff(out / "truth" / f"{stem}.tif", field["labels"])
        if instances:
            write_tiff(out / "truth" / "instances" / f"{stem}.tif", field["instances"])
        rows.append({"stem": stem, "seed": seed, "field_index": index, "height": height, "width": width,
                     **field["params"]})
        if progress is not None:
            progress(1)
    table = pd.DataFrame(rows)
    with atomic_path(out / "fields.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table
