"""cytolens: deep learning for cell microscopy images.

Three capabilities on one core: ``classify`` (single-cell phenotypes, Shpilman et al. 2017), ``segment``
(label-free nuclei and cytoplasm, MIDL 2019) and ``profile`` (GAN morphological profiling, CytoGAN 2017).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cytolens")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
