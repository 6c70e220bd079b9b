"""A simulated BBBC021: MCF-7 cells under 38 compounds of 12 MOAs, written in BBBC021's own layout (CytoGAN, seed 004).

BBBC021 (Broad Bioimage Benchmark Collection; Caie et al. 2010, Ljosa et al. 2013) is the benchmark CytoGAN and
the MOA-profiling literature use. It cannot be downloaded here, so this module writes a dataset with the same
files, names and tables, from a model of the cells (:mod:`cytolens.synthetic.cellpainting.cells`), of each MOA's
phenotype (:mod:`cytolens.synthetic.cellpainting.phenotypes`) and of the screen's design and batch effects
(:mod:`cytolens.synthetic.cellpainting.plan`).

Layout written by :func:`simulate_cellpainting_dataset` (as BBBC021's, plus the simulator's truth)::

    OUT/Week1_22123/Week1_150607_B02_s1_w1<GUID>.tif   DAPI (DNA), 16-bit
    OUT/Week1_22123/Week1_150607_B02_s1_w2<GUID>.tif   β-tubulin
    OUT/Week1_22123/Week1_150607_B02_s1_w4<GUID>.tif   F-actin
    OUT/BBBC021_v1_moa.csv      compound, concentration, moa (annotated treatments and DMSO)
    OUT/BBBC021_v1_image.csv    BBBC021's 13 columns, one row per field; written last (its presence = complete)
    OUT/cells.csv               NOT in BBBC021: every simulated cell's field, centre, areas and response strength
    OUT/simulation.json         NOT in BBBC021: scale, seed, each week's batch effects, each compound's potency

Imaging model: the signal is blurred by the week's point-spread function, scaled by the week's stain gains (and a
small per-plate factor), added to the week's background, multiplied by the week's uneven illumination
(vignetting around an off-centre optical axis and a linear ramp), and read out by the shared camera model
(shot and read noise, offset, 16-bit quantisation).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from cytolens.core.atomic import atomic_path, write_text_atomic
from cytolens.data.bbbc021 import CHANNEL_WAVELENGTHS, IMAGE_COLUMNS, IMAGE_CSV, MOA_CSV
from cytolens.core.errors import OptionError
from cytolens.data.io import write_tiff
from cytolens.synthetic.camera import read_out
from cytolens.synthetic.cellpainting.cells import render_field
from cytolens.synthetic.cellpainting.phenotypes import CompoundResponse, draw_compound_response
from cytolens.synthetic.cellpainting.plan import (
    COMPOUNDS, CONTROL, UNANNOTATED, WeekBatch, draw_week_batch, get_scale, moa_table, plan_experiment,
)

TRUTH_CSV = "cells.csv"
SIMULATION_JSON = "simulation.json"
MAX_ADU = 65535
CAMERA = {"gain": 1.2, "read_noise_e": 6.0, "offset": 100.0}
_FIRST_DAY = date(2007, 6, 15)  # BBBC021's example file name Week1_150607_... was imaged on 15/06/07


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def illumination(height: int, width: int, batch: WeekBatch) -> np.ndarray:
    """The week's illumination (H, W) float32, mean about 1: vignetting around a shifted axis plus a ramp."""
    side = max(height, width)
    y = (np.arange(height) + 0.5 - height / 2) / side - batch.centre_shift[0]
    x = (np.arange(width) + 0.5 - width / 2) / side - batch.centre_shift[1]
    column = 1.0 - batch.vignetting * 2 * y * y + batch.gradient * np.sin(batch.gradient_angle) * y
    row = -batch.vignetting * 2 * x * x + batch.gradient * np.cos(batch.gradient_angle) * x
    field = np.add.outer(column, row)
    return (field / field.mean()).astype(np.float32)


def image_field(signal: np.ndarray, batch: WeekBatch, plate_gains: np.ndarray, rng: np.random.Generator
                ) -> list[np.ndarray]:
    """Turn a rendered signal (3, H, W) into the three 16-bit camera images of a field."""
    light = illumination(signal.shape[1], signal.shape[2], batch)
    images = []
    for channel in range(3):
        work = ndi.gaussian_filter(signal[channel], batch.psf_sigma, truncate=3.0)
        work *= np.float32(batch.gains[channel] * plate_gains[channel])
        work += np.float32(batch.background[channel])
        work *= light
        images.append(read_out(work, max_adu=MAX_ADU, rng=rng, **CAMERA))
    return images


def _file_name(plate_day: str, week: str, well: str, site: int, wavelength: int, rng: np.random.Generator) -> str:
    guid = str(uuid.UUID(bytes=rng.bytes(16), version=4)).upper()
    return f"{week}_{plate_day}_{well}_s{site}_w{wavelength}{guid}.tif"


def _simulate_one(job: dict[str, Any]) -> pd.DataFrame:
    """Render, image and write one field; returns its truth rows (runs in a worker process too)."""
    rng = _rng(job["seed"], 4, job["image_number"])
    batch: WeekBatch = job["batch"]
    field = render_field(rng, height=job["height"], width=job["width"], response=job["response"],
                         concentration=job["concentration"], density=batch.density, cell_scale=batch.cell_scale)
    images = image_field(field.signal, batch, job["plate_gains"], rng)
    for path, image in zip(job["paths"], images):
        write_tiff(path, image)
    cells = field.cells
    cells.insert(0, "ImageNumber", job["image_number"])
    return cells


def simulate_cellpainting_dataset(
    out_dir: str | Path,
    *,
    scale: str = "small",
    seed: int = 0,
    workers: int = 1,
    max_fields: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Write a simulated BBBC021 in BBBC021's layout (see the module docstring).

    Parameters
    ----------
    out_dir : str or Path
        Output folder, created if needed. Files of the same names are replaced.
    scale : {"tiny", "demo", "small", "full"}
        ``full`` has BBBC021's design (38 compounds, 103 treatments + DMSO, 10 weeks, 55 plates, 4 sites of
        1024 × 1280); ``small`` keeps all 38 compounds and 12 MOAs with at most 3 concentrations, 30 plates and 2
        sites of 384 × 480 (minutes on 2 cores); ``demo`` keeps the 38 compounds at one concentration each in 6 weeks
        of 2 plates, one site per well (about 110 fields, a minute); ``tiny`` (5 MOAs, 10 compounds, 2 weeks,
        256 × 256) is for tests.
    seed : int
        Non-negative seed; the same seed and scale write the same images.
    workers : int
        Processes rendering fields in parallel (1 = in this process).
    max_fields : int, optional
        Simulate only the first fields of the design (a quick look, or a benchmark); the tables list only those.
    progress : callable, optional
        Called with 1 after each field.

    Returns
    -------
    pandas.DataFrame
        The image table as written to ``BBBC021_v1_image.csv``.
    """
    design = get_scale(scale)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OptionError(f"`seed` must be a non-negative integer, got {seed!r}.")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise OptionError(f"`workers` must be a positive integer, got {workers!r}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / IMAGE_CSV).unlink(missing_ok=True)  # an interrupted run must not look complete
    wells = plan_experiment(design, _rng(seed, 0))
    catalogue = {**COMPOUNDS, **UNANNOTATED}
    responses: dict[str, CompoundResponse] = {}
    for index, name in enumerate(sorted(catalogue)):
        moa, doses = catalogue[name]
        responses[name] = draw_compound_response(_rng(seed, 1, index), moa, doses)
    batches = [draw_week_batch(_rng(seed, 2, week)) for week in range(design.weeks)]
    plates = list(dict.fromkeys(wells["plate"]))
    plate_gains = {plate: np.exp(_rng(seed, 3, k).normal(0.0, 0.05, 3)) for k, plate in enumerate(plates)}
    plate_days = {}
    for k, plate in enumerate(plates):
        week = int(wells.loc[wells["plate"] == plate, "week"].iloc[0])
        plate_days[plate] = (_FIRST_DAY + timedelta(days=7 * week + k % 7)).strftime("%d%m%y")

    rows, jobs = [], []
    names_rng = _rng(seed, 5)
    for well in wells.itertuples(index=False):
        for site in range(1, design.sites + 1):
            image_number = len(rows) + 1
            names = [_file_name(plate_days[well.plate], well.batch, well.well, site, w, names_rng)
                     for w in CHANNEL_WAVELENGTHS.values()]
            rows.append({
                "TableNumber": plates.index(well.plate) + 1, "ImageNumber": image_number,
                "Image_FileName_DAPI": names[0], "Image_PathName_DAPI": well.plate,
                "Image_FileName_Tubulin": names[1], "Image_PathName_Tubulin": well.plate,
                "Image_FileName_Actin": names[2], "Image_PathName_Actin": well.plate,
                "Image_Metadata_Plate_DAPI": well.plate, "Image_Metadata_Well_DAPI": well.well,
                "Replicate": int(well.replicate), "Image_Metadata_Compound": well.compound,
                "Image_Metadata_Concentration": float(well.concentration),
            })
            jobs.append({
                "seed": int(seed), "image_number": image_number, "height": design.height, "width": design.width,
                "response": None if well.compound == CONTROL else responses[well.compound],
                "concentration": float(well.concentration), "batch": batches[int(well.week)],
                "plate_gains": plate_gains[well.plate], "paths": [out / well.plate / name for name in names],
                "meta": {"Plate": well.plate, "Well": well.well, "Site": site, "Batch": well.batch,
                         "Compound": well.compound, "Concentration": float(well.concentration),
                         "MOA": well.moa if well.annotated else "",
                         "Phenotype": catalogue[well.compound][0] if well.compound != CONTROL else CONTROL},
            })
    if max_fields is not None:
        rows, jobs = rows[: int(max_fields)], jobs[: int(max_fields)]
    truth = []
    if workers == 1:
        results = map(_simulate_one, jobs)
        for job, cells in zip(jobs, results):
            truth.append(_with_meta(cells, job["meta"]))
            if progress is not None:
                progress(1)
    else:
        with ProcessPoolExecutor(max_workers=int(workers)) as pool:
            for job, cells in zip(jobs, pool.map(_simulate_one, jobs, chunksize=4)):
                truth.append(_with_meta(cells, job["meta"]))
                if progress is not None:
                    progress(1)
    cells_table = pd.concat(truth, ignore_index=True)
    with atomic_path(out / TRUTH_CSV) as tmp:
        cells_table.to_csv(tmp, index=False)
    summary = {
        "scale": design.name, "seed": int(seed), "fields": len(rows), "cells": len(cells_table),
        "height": design.height, "width": design.width, "sites": design.sites,
        "weeks": {f"Week{k + 1}": vars(b) for k, b in enumerate(batches)},
        "compounds": {name: {"moa": r.moa, "ec50_uM": r.ec50, "hill": r.hill, "effect": r.effect}
                      for name, r in responses.items() if name in set(wells["compound"])},
    }
    write_text_atomic(out / SIMULATION_JSON, json.dumps(summary, indent=2) + "\n")
    with atomic_path(out / MOA_CSV) as tmp:
        moa_table(design).to_csv(tmp, index=False)
    images = pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))
    with atomic_path(out / IMAGE_CSV) as tmp:
        images.to_csv(tmp, index=False)
    return images


def _with_meta(cells: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    for position, (key, value) in enumerate(meta.items(), start=1):
        cells.insert(position, key, value)
    return cells
