"""Simulated bright-field fields with DAPI and whole-cell stain (the layout of MIDL 2019)."""
