"""Simulated BBBC021 screens: plates, fields and metadata CSVs in BBBC021's own layout (CytoGAN 2017)."""
