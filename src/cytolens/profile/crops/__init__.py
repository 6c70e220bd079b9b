"""Single-cell crops: segmenting fields into cells, cropping and normalising them into the cell store."""
