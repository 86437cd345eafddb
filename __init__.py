"""HyperAdapt QGIS plugin: SpectralGPT fine-tuned with small adapters for hyperspectral classification."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """Entry point QGIS calls when it loads the plugin; imports stay light (no torch here)."""
    from .plugin.dependencies import add_deps_to_path, quiet_openmp_threads
    quiet_openmp_threads()
    add_deps_to_path()
    from .plugin.plugin import HyperAdaptPlugin
    return HyperAdaptPlugin(iface)
