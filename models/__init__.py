"""HyperAdapt's engine: SpectralGPT, the adapters, and the fine-tune, classify and evaluate jobs.

Nothing in this package imports Qt or QGIS, so every job runs and is tested without them.
"""
