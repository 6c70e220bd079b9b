"""Simulated single cells with immunostained microtubules (the layout of Shpilman et al. 2017)."""
