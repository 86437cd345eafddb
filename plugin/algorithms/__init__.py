"""One module per Processing algorithm; torch is imported inside processAlgorithm only."""


def all_algorithms():
    from .classify import ClassifyAlgorithm
    from .evaluate import EvaluateAlgorithm
    from .finetune import FineTuneAlgorithm
    from .postprocess import PostprocessAlgorithm
    from .pretrain import PretrainAlgorithm
    from .suggest import SuggestAlgorithm

    return [FineTuneAlgorithm(), ClassifyAlgorithm(), EvaluateAlgorithm(), PretrainAlgorithm(),
            PostprocessAlgorithm(), SuggestAlgorithm()]
