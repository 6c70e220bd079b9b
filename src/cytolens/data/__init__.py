"""Data in and out: image I/O, dataset layouts (class folders, image/label pairs, BBBC021), the data check, splits,
transforms and intensity normalisation. Used by every capability; imports only :mod:`cytolens.core`."""
