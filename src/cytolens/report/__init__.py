"""Figures (matplotlib) and reports written into run folders."""
