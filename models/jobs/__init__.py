"""The engine's jobs, one entry point each and each in its own module: fine_tune (fine_tuning),
cross_validate (cross_validation), classify (classification), suggest (suggestion), postprocess
(postprocessing), evaluate (evaluation) and pretrain_backbone (pretraining), imported here.

The toolbar worker, the Processing algorithms, the command line, the benchmarks and the demo all
call these. Each takes ``progress(fraction, message)`` and ``cancel() -> bool`` callbacks; a
cancelled job raises JobCancelled, a problem the user can fix raises HyperAdaptError with one
sentence, outputs are checked before any work (models.stores.guard), and a failure leaves no new
file and the previous results as they were.
"""
from ..network.backbones import rebuild_model
from ..settings import FineTuneSettings
from .classification import ClassifyResult, LoadedAdapter, classify, classify_with, load_adapter
from .cross_validation import cross_validate
from .evaluation import evaluate, read_class_raster_classes
from .fine_tuning import FineTuneResult, fine_tune
from .postprocessing import postprocess
from .pretraining import pretrain_backbone
from .suggestion import suggest

__all__ = [
    "ClassifyResult", "FineTuneResult", "FineTuneSettings", "LoadedAdapter", "classify",
    "classify_with", "cross_validate", "evaluate", "fine_tune", "load_adapter", "postprocess",
    "pretrain_backbone", "read_class_raster_classes", "rebuild_model", "suggest",
]
