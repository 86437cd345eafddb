"""FineTuneSettings: defaults from models.options, the step-counted schedule, one sentence per bad
value, and no torch needed to build them."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

from hyperadapt.models import options
from hyperadapt.models.errors import HyperAdaptError
from hyperadapt.models.settings import FineTuneSettings


def test_the_schedule_is_counted_in_steps_with_a_least_number_of_epochs():
    settings = FineTuneSettings(steps=300, batch_size=32, min_passes=50)
    # 10 pixels per class of 6 classes: 2 batches an epoch, so the 300 steps make 150 epochs.
    assert settings.epochs_for(60) == 150
    # 693 pixels: 22 batches an epoch; the steps alone would make 14 epochs, too few to fit.
    assert settings.epochs_for(693) == 50
    # 6,000 pixels: 188 batches an epoch; 50 epochs would be 9,400 steps, so the cap decides.
    assert settings.epochs_for(6000) == options.MAX_SCHEDULED_STEPS // 188 == 15
    assert settings.epochs_for(1_000_000) == 1
    # Without the floor the steps alone count, as in the fast preset.
    assert FineTuneSettings(steps=300, batch_size=32, min_passes=0).epochs_for(693) == 14
    assert FineTuneSettings(preset="fast").resolved().epochs_for(693) == \
        math.ceil(options.FAST_MAX_STEPS / 22)
    # Fixed epochs, where asked for, replace both.
    assert FineTuneSettings(epochs=7).epochs_for(60) == 7
    assert FineTuneSettings(epochs=7).epochs_for(693) == 7


def test_the_fast_preset_caps_steps_and_input():
    fast = FineTuneSettings(preset="fast", steps=5000).resolved()
    assert fast.input_size == options.FAST_INPUT_SIZE and fast.steps == options.FAST_MAX_STEPS
    paper = FineTuneSettings(steps=5000).resolved()
    assert paper.input_size == options.DEFAULT_INPUT_SIZE and paper.steps == 5000


@pytest.mark.parametrize("values, sentence", [
    ({"window_size": 8}, "The window size must be an odd number of pixels (got 8), so that one "
                         "pixel is its centre."),
    ({"window_size": 201}, "The window size must be at most 63 pixels (got 201); larger windows "
                           "cost memory without helping a per-pixel classifier."),
    ({"input_size": 20}, "The model input size must be a multiple of 8 pixels between 8 and 256 "
                         "(got 20)."),
    ({"batch_size": 0}, "The batch size must be a whole number from 1 to 4096 (got 0)."),
    ({"batch_size": 100_000}, "The batch size must be a whole number from 1 to 4096 (got 100000)."),
    ({"steps": 0}, "The number of steps must be a whole number from 1 to 100000 (got 0)."),
    ({"min_passes": -1}, "The least number of epochs must be a whole number from 0 to 100000 "
                         "(got -1)."),
    ({"segment_size": -1}, "The superpixel size must be a whole number from 0 to 50 (got -1)."),
    ({"majority_size": 4}, "The majority filter needs an odd window of at least 3 pixels (got 4)."),
    ({"sieve_pixels": -2}, "The sieve threshold must be a whole number from 0 to 1000000 (got -2)."),
    ({"learning_rate": float("nan")}, "The learning rate must be a positive number."),
    ({"context_dropout": 1.0}, "The context dropout must be at least 0 and below 1."),
    ({"spectral_weight": 1.5}, "The spectral classifier's weight must be a number from 0 (the "
                               "network alone) to 1 (the spectral classifier alone) (got 1.5)."),
    ({"spectral_weight": "half"}, "The spectral classifier's weight must be a number from 0 (the "
                                  "network alone) to 1 (the spectral classifier alone) (got "
                                  "'half')."),
    ({"spectral_context": 4}, "The spectral classifier's neighbourhood must be an odd number of "
                               "pixels across, or 0 for each pixel's spectrum alone (got 4)."),
    ({"spectral_context": 53}, "The spectral classifier's neighbourhood must be a whole number "
                                "from 0 to 51 (got 53)."),
    ({"tile_step": 64}, "The tile step must be a whole number from 0 to 63 (got 64)."),
    ({"training_mode": "patch"}, "The training mode 'patch' is unknown; choose one of window, "
                                 "tile, sampled."),
    ({"class_weighting": "focal"}, "The class weighting 'focal' is unknown; choose one of "
                                   "balanced, none."),
    ({"band_adaptation": "ica"}, "The band adaptation 'ica' is unknown; choose one of pca, s2, "
                                 "mnf."),
    ({"method": "dora"}, "Unknown fine-tuning method 'dora'; choose one of krona_plus, krona, "
                         "lora_plus, lora, lokr, fft, head."),
])
def test_every_bad_value_is_one_sentence(values, sentence):
    with pytest.raises(HyperAdaptError) as caught:
        FineTuneSettings(**values).resolved()
    assert str(caught.value) == sentence


def test_defaults_are_the_options_and_need_no_torch():
    code = ("import sys\n"
            "from hyperadapt.models.settings import FineTuneSettings\n"
            "from hyperadapt.models import options\n"
            "s = FineTuneSettings().resolved()\n"
            "assert (s.method, s.steps, s.learning_rate, s.targets, s.pixel_dim, s.segment_size) == "
            "(options.DEFAULT_METHOD, options.DEFAULT_STEPS, options.DEFAULT_LEARNING_RATE, "
            "options.DEFAULT_TARGETS, options.DEFAULT_PIXEL_DIM, options.DEFAULT_SEGMENT_SIZE)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
