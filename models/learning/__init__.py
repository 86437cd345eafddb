"""Training and prediction: the loop, tiled prediction, pseudo-labels, metrics, devices, seeds."""
