"""What fine-tuning and pretraining share of a training loop (models.learning.steps and
models.learning.loop)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from engine_data import spectralgpt_small
from hyperadapt.models.errors import HyperAdaptError, JobCancelled
from hyperadapt.models.learning.loop import TrainingTask, run_training
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


class CountingTask(TrainingTask):
    """Three batches an epoch of a three-class problem; records what the loop did."""

    def __init__(self, model, optimization, *, budget_steps=None, oom_at=None):
        self.model, self.optimization = model, optimization
        self.budget_steps, self.oom_at = budget_steps, oom_at
        generator = torch.Generator().manual_seed(2)
        self.x = torch.rand(6, 12, 16, 16, generator=generator)
        self.y = torch.tensor([0, 1, 2, 0, 1, 2])
        self.steps, self.rates, self.epochs, self.replaced = 0, [], [], []

    def epoch_batches(self, epoch):
        return [slice(0, 2), slice(2, 4), slice(4, 6)]

    def progress(self):
        return self.steps / 9

    def forward(self, batch):
        if self.oom_at == self.steps:
            self.oom_at = None
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(self.x[batch])

    def loss(self, logits, batch):
        return F.cross_entropy(logits.float(), self.y[batch])

    def after_step(self, batch, inputs, output, loss):
        self.steps += 1
        self.rates.append(self.optimization.learning_rate)
        return self.steps == self.budget_steps

    def after_epoch(self, epoch, *, ended):
        self.epochs.append((epoch, ended))
        return ended

    def out_of_memory(self, batch, pending):
        self.replaced.append(batch)
        return [slice(batch.start, batch.start + 1), slice(batch.start + 1, batch.stop)] + pending


def counting_run(**task_settings):
    model = krona_plus_model().train()
    optimization = Optimization(model, learning_rate=1e-2, weight_decay=0.05, device=CPU,
                                warmup_fraction=0.0)
    return CountingTask(model, optimization, **task_settings), optimization


def test_the_loop_steps_every_batch_on_the_tasks_clock_until_its_last_epoch():
    task, optimization = counting_run()
    peak = optimization._peaks[0]
    assert run_training(task, optimization, first_epoch=1, last_epoch=3) == 3
    assert task.steps == 9 and task.epochs == [(1, False), (2, False), (3, False)]
    # Each step runs at the schedule of the progress before it: cosine from the peak down.
    assert [rate / peak for rate in task.rates] == pytest.approx(
        [lr_factor(step / 9, 0.0) for step in range(9)])


def test_a_spent_budget_ends_the_run_inside_its_epoch():
    task, optimization = counting_run(budget_steps=5)
    assert run_training(task, optimization, first_epoch=0) == 1
    assert task.steps == 5 and task.epochs == [(0, False), (1, True)]


def test_cancel_is_heard_before_a_batch_and_the_task_keeps_its_state_first():
    task, optimization = counting_run()
    kept = []
    task.cancelled = lambda: kept.append(task.steps)
    with pytest.raises(JobCancelled):
        run_training(task, optimization, first_epoch=1, last_epoch=3,
                     cancel=lambda: task.steps >= 4)
    assert task.steps == 4 and kept == [4]


def test_out_of_memory_gives_the_task_the_batch_to_split_or_stops_with_a_sentence():
    task, optimization = counting_run(oom_at=1)
    run_training(task, optimization, first_epoch=1, last_epoch=1)
    assert task.replaced == [slice(2, 4)] and task.steps == 4     # the split batch, in two steps

    plain, optimization = counting_run(oom_at=0)
    plain.out_of_memory = lambda batch, pending: TrainingTask.out_of_memory(plain, batch, pending)
    with pytest.raises(HyperAdaptError, match="ran out of memory"):
        run_training(plain, optimization, first_epoch=1, last_epoch=1)
