"""The data: rasters, labelled pixels, band adaptation, windows, segments, a scene's pixels."""
