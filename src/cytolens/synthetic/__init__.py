"""Simulators that write the on-disk layouts of the papers' data sets (the real data cannot be downloaded).

``simulate_microtubule_dataset`` writes single-cell anti-tubulin images of CV-1 cells under 0 / 0.1 / 1
paclitaxel (Shpilman et al. 2017) as folders of 14-bit-in-16-bit TIFFs.
"""

from cytolens.synthetic.microtubules import (
    MICROTUBULE_CLASSES,
    simulate_cell,
    simulate_microtubule_dataset,
)

__all__ = ["MICROTUBULE_CLASSES", "simulate_cell", "simulate_microtubule_dataset"]
