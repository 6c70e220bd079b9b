"""Simulators that write the on-disk layouts of the papers' data sets (the real data cannot be downloaded).

``simulate_microtubule_dataset`` writes single-cell anti-tubulin images of CV-1 cells under 0 / 0.1 / 1
paclitaxel (Shpilman et al. 2017) as folders of 14-bit-in-16-bit TIFFs. ``simulate_brightfield_dataset`` writes
fields of adherent HeLa-like cells at 20x as bright-field, DAPI and whole-cell-stain 16-bit TIFFs with the true
masks (MIDL 2019).
"""

from cytolens.synthetic.brightfield.simulate import CHANNELS, simulate_brightfield_dataset, simulate_field
from cytolens.synthetic.microtubules.simulate import (
    MICROTUBULE_CLASSES,
    simulate_cell,
    simulate_microtubule_dataset,
)

__all__ = [
    "CHANNELS", "MICROTUBULE_CLASSES", "simulate_brightfield_dataset", "simulate_cell", "simulate_field",
    "simulate_microtubule_dataset",
]
