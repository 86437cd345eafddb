"""The engine's jobs, one entry point each and each in its own module: fine_tune (fine_tuning),
cross_validate (cross_validation), classify (classification), suggest (suggestion), postprocess
(postprocessing) and evaluate (evaluation), imported here; pretrain_backbone is imported from
models.jobs.pretraining.

The toolbar worker, the Processing algorithms, the command line, the benchmarks and the demo all
call these. Each takes ``progress(fraction, message)`` and ``cancel() -> bool`` callbacks; a
cancelled job raises JobCancelled, a problem the user can fix raises HyperAdaptError with one
sentence, outputs are checked before any work (models.stores.guard), and a failure leaves no new
file and the previous results as they were.
"""
# The fine-tune, cross-validate, classify, suggest, postprocess and evaluate jobs live in their own
# modules; imported here so that every job is found in one place.
from ..network.backbones import rebuild_model
from ..settings import FineTuneSettings
from .classification import ClassifyResult, LoadedAdapter, classify, classify_with, load_adapter
from .cross_validation import cross_validate
from .evaluation import evaluate, read_class_raster_classes
from .fine_tuning import FineTuneResult, fine_tune
from .postprocessing import postprocess
from .suggestion import suggest

__all__ = [
    "ClassifyResult", "FineTuneResult", "FineTuneSettings", "LoadedAdapter", "classify",
    "classify_with", "cross_validate", "evaluate", "fine_tune", "load_adapter", "postprocess",
    "read_class_raster_classes", "rebuild_model", "suggest",
]
