"""What fine-tuning and pretraining share of a training loop (models.learning.steps)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from engine_data import spectralgpt_small
from hyperadapt.models.errors import HyperAdaptError
from hyperadapt.models.learning.steps import Optimization, lr_factor
from hyperadapt.models.network.adapters import AdapterConfig, apply_adapter

CPU = torch.device("cpu")


def krona_plus_model():
    torch.manual_seed(0)
    model = spectralgpt_small(img_size=16, num_classes=3)
    return apply_adapter(model, AdapterConfig(method="krona_plus", lr_ratio=4.0))


def test_the_schedule_warms_up_then_decays_every_group_from_its_own_peak():
    optimization = Optimization(krona_plus_model(), learning_rate=1e-3, weight_decay=0.05,
                                device=CPU, warmup_fraction=0.1)
    peaks = {group["name"]: group["lr"] for group in optimization.optimizer.param_groups}
    assert peaks["lambda"] == pytest.approx(4 * peaks["head"])
    for progress in (0.0, 0.05, 0.1, 0.55, 1.0):
        optimization.schedule(progress)
        factor = lr_factor(progress, 0.1)
        for group in optimization.optimizer.param_groups:
            assert group["lr"] == pytest.approx(peaks[group["name"]] * factor)
    assert lr_factor(0.0, 0.1) == pytest.approx(1e-3)       # the warm-up's floor
    assert lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(1.0, 0.1) == pytest.approx(0.0)
    assert lr_factor(1.0, 0.05, min_factor=0.01) == pytest.approx(0.01)


def test_a_resumed_optimization_steps_as_the_uninterrupted_one():
    """Pretraining saves the optimizer's state on cancel and loads it into a new Optimization:
    the next steps must be the ones an uninterrupted run takes."""
    generator = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 12, 16, 16, generator=generator), torch.tensor([0, 1, 2, 0])

    def run(model, optimization, progresses):
        for progress in progresses:
            optimization.schedule(progress)
            with optimization.autocast():
                loss = F.cross_entropy(model(x), y)
            optimization.step(loss)

    model = krona_plus_model().train()
    resumed = copy.deepcopy(model)
    settings = dict(learning_rate=1e-2, weight_decay=0.05, device=CPU, betas=(0.9, 0.95))
    whole = Optimization(model, **settings)
    run(model, whole, (0.2, 0.4, 0.6, 0.8))
    first = Optimization(resumed, **settings)
    run(resumed, first, (0.2, 0.4))
    second = Optimization(resumed, **settings)
    second.load_state_dict(first.state_dict())
    run(resumed, second, (0.6, 0.8))
    for (name, a), (_, b) in zip(model.named_parameters(), resumed.named_parameters()):
        if a.requires_grad:
            assert torch.equal(a, b), name


def test_a_model_with_nothing_to_train_is_refused():
    model = spectralgpt_small(img_size=16, num_classes=3)
    model.requires_grad_(False)
    with pytest.raises(HyperAdaptError, match="The model has nothing to train."):
        Optimization(model, learning_rate=1e-3, weight_decay=0.05, device=CPU)
