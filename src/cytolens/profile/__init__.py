"""Morphological profiling of single cells with GANs (CytoGAN, Goldsborough et al. 2017) and classical features."""
