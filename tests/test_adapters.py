"""The fine-tuning methods on a tiny SpectralGPT: one table of methods, the same checks for each."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F

from engine_data import spectralgpt_small
from hyperadapt.models.errors import HyperAdaptError
from hyperadapt.models.network.adapters import (DEFAULT_METHOD, METHODS, AdapterConfig, KronALinear,
                                                LoKrLinear, LoRALinear, adapter_layers,
                                                apply_adapter, choose_kronecker_factors,
                                                count_parameters, describe_method, kronecker_apply,
                                                load_trainable_state_dict, merge_adapters,
                                                param_groups, trainable_state_dict,
                                                unmerge_adapters)
from hyperadapt.models.network.spectralgpt import spectralgpt_base

NUM_CLASSES = 5
TARGETS = ("attn.q", "attn.v")
DEPTH = 2
# Tensors each adapter layer adds, and the one that starts at zero.
ADAPTER_TENSORS = {
    "lora": ("adapter_A", "adapter_B"), "lora_plus": ("adapter_A", "adapter_B"),
    "krona": ("adapter_A", "adapter_B"), "krona_plus": ("adapter_A", "adapter_B"),
    "lokr": ("adapter_A", "adapter_B_up", "adapter_B_down"),
}
ZERO_FACTOR = {"lora": "adapter_B", "lora_plus": "adapter_B", "krona": "adapter_B",
               "krona_plus": "adapter_B", "lokr": "adapter_B_up"}
ADAPTER_METHODS = sorted(ADAPTER_TENSORS)
MERGE_TOLERANCE = 1e-5




def make_base(seed=0):
    torch.manual_seed(seed)
    return spectralgpt_small(img_size=16, num_classes=NUM_CLASSES).eval()


def make_batch(seed=1, batch_size=4):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 12, 16, 16, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator)
    return x, y


def make_adapted(method, seed=0, **config):
    base = make_base(seed)
    torch.manual_seed(seed + 100)
    model = apply_adapter(copy.deepcopy(base), AdapterConfig(method=method, **config))
    return base, model


def expected_trainable(method, model):
    names = {name for name, _ in model.named_parameters()}
    if method == "fft":
        return names
    expected = {"head.weight", "head.bias"}
    if method in ADAPTER_TENSORS:
        expected |= {f"blocks.{i}.{target}.{tensor}" for i in range(DEPTH) for target in TARGETS
                     for tensor in ADAPTER_TENSORS[method]}
    return expected


def train_steps(model, steps=3, lr=0.1):
    optimizer = torch.optim.SGD(param_groups(model, lr=lr, weight_decay=0.0), lr=lr)
    x, y = make_batch()
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def test_method_ids_and_names_are_permanent():
    assert METHODS == {"krona_plus": "KronA+", "krona": "KronA", "lora_plus": "LoRA+",
                       "lora": "LoRA", "lokr": "LoKr", "fft": "Full fine-tuning",
                       "head": "Head only"}
    assert DEFAULT_METHOD == "krona_plus"
    assert describe_method("krona_plus") == "KronA+"
    with pytest.raises(HyperAdaptError, match="Unknown fine-tuning method 'kron'"):
        describe_method("kron")


@pytest.mark.parametrize("method", list(METHODS))
def test_starts_as_exact_noop(method):
    base, model = make_adapted(method)
    x, _ = make_batch()
    with torch.no_grad():
        assert torch.equal(model(x), base(x))


@pytest.mark.parametrize("method", list(METHODS))
def test_only_intended_tensors_require_grad(method):
    _, model = make_adapted(method)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(method, model)
    if method in ADAPTER_TENSORS:
        assert len(adapter_layers(model)) == DEPTH * len(TARGETS)
        assert "blocks.0.attn.q.base_layer.weight" in dict(model.named_parameters())


@pytest.mark.parametrize("method", ADAPTER_METHODS)
def test_first_gradient_reaches_only_the_zero_factor(method):
    _, model = make_adapted(method)
    x, y = make_batch()
    F.cross_entropy(model.train()(x), y).backward()
    for name, layer in adapter_layers(model):
        zero = getattr(layer, ZERO_FACTOR[method])
        assert torch.count_nonzero(zero) == 0, name
        assert zero.grad.abs().sum() > 0, name
        for tensor in ADAPTER_TENSORS[method]:
            if tensor != ZERO_FACTOR[method]:
                assert torch.count_nonzero(getattr(layer, tensor).grad) == 0, (name, tensor)


@pytest.mark.parametrize("layer_class", [KronALinear, LoKrLinear])
def test_kronecker_forward_by_reshape_equals_torch_kron(layer_class):
    torch.manual_seed(0)
    base = torch.nn.Linear(48, 36)
    layer = layer_class(base, factor_shape=(6, 4), scale=0.7, init_weights=False)
    if isinstance(layer, LoKrLinear):
        a, b = layer.adapter_A, layer.adapter_B_up @ layer.adapter_B_down
        scale = 0.7 * 16.0 / 8
    else:
        a, b = layer.adapter_A, layer.adapter_B
        scale = 0.7
    assert a.shape == (6, 4) and b.shape == (6, 12)
    x = torch.randn(3, 5, 48)
    expected = x @ (scale * torch.kron(a, b)).T
    torch.testing.assert_close(layer.adapter_forward(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.delta_weight(), scale * torch.kron(a, b))
    torch.testing.assert_close(layer(x), base(x) + expected, atol=1e-5, rtol=1e-5)
    assert kronecker_apply(x, a, b).shape == (3, 5, 36)


def test_lora_update_is_scaled_low_rank_product():
    torch.manual_seed(0)
    base = torch.nn.Linear(20, 12)
    layer = LoRALinear(base, rank=4, alpha=2.0, init_weights=False)
    x = torch.randn(7, 20)
    delta = 0.5 * layer.adapter_B @ layer.adapter_A
    torch.testing.assert_close(layer(x), base(x) + x @ delta.T)
    assert layer.adapter_A.shape == (4, 20) and layer.adapter_B.shape == (12, 4)


def test_default_kronecker_factors_are_divisors_nearest_square_roots():
    assert choose_kronecker_factors(768, 768) == (24, 24)
    assert choose_kronecker_factors(3072, 768) == (48, 24)
    assert choose_kronecker_factors(64, 64) == (8, 8)
    assert choose_kronecker_factors(7, 5) == (1, 1)


def test_factor_shape_that_does_not_divide_is_refused():
    with pytest.raises(HyperAdaptError, match=r"5 x 7 does not divide .*blocks\.0\.attn\.q"):
        make_adapted("krona", factor_shape=(5, 7))


@pytest.mark.parametrize("method", list(METHODS))
def test_merged_matches_unmerged(method):
    _, model = make_adapted(method, init_weights=False)
    x, _ = make_batch()
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        unmerged = model(x)
        merge_adapters(model)
        merged = model(x)
        unmerge_adapters(model)
        again = model(x)
    torch.testing.assert_close(merged, unmerged, atol=MERGE_TOLERANCE, rtol=MERGE_TOLERANCE)
    torch.testing.assert_close(again, unmerged, atol=MERGE_TOLERANCE, rtol=MERGE_TOLERANCE)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, weights[name], atol=1e-6, rtol=0)
    if method in ADAPTER_TENSORS:
        assert not torch.allclose(unmerged, make_base()(x), atol=1e-3)


def test_merge_refuses_non_finite_weights():
    _, model = make_adapted("krona", init_weights=False)
    name, layer = adapter_layers(model)[0]
    with torch.no_grad():
        layer.adapter_B[0, 0] = float("inf")
    with pytest.raises(HyperAdaptError, match=f"Merging the adapter of {name}"):
        merge_adapters(model)
    assert not layer.merged


@pytest.mark.parametrize("method", list(METHODS))
def test_three_sgd_steps_move_only_trainable_tensors(method):
    # Both factors start random, so every adapter tensor gets a gradient from the first step on
    # (with a zero factor, the other one's first updates are below float32 resolution).
    _, model = make_adapted(method, init_weights=False)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_steps(model)
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert moved == expected_trainable(method, model)


@pytest.mark.parametrize("method", list(METHODS))
def test_saved_trainable_state_reproduces_outputs(method, tmp_path):
    base, model = make_adapted(method)
    train_steps(model)
    path = tmp_path / "adapter.pt"
    torch.save(trainable_state_dict(model), path)
    state = torch.load(path, weights_only=True)
    assert set(state) == expected_trainable(method, model)

    fresh = apply_adapter(copy.deepcopy(base), AdapterConfig(method=method))
    load_trainable_state_dict(fresh, state)
    x, _ = make_batch(seed=5)
    with torch.no_grad():
        restored, trained, original = fresh(x), model(x), base(x)
    torch.testing.assert_close(restored, trained, atol=0, rtol=0)
    assert (restored - original).abs().max() > 1e-4


def test_loading_into_a_merged_model_keeps_it_consistent():
    base, model = make_adapted("krona_plus", init_weights=False)
    state = trainable_state_dict(model)
    torch.manual_seed(7)
    fresh = apply_adapter(copy.deepcopy(base), AdapterConfig(init_weights=False))
    merge_adapters(fresh)
    load_trainable_state_dict(fresh, state)
    assert all(layer.merged for _, layer in adapter_layers(fresh))
    x, _ = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), atol=MERGE_TOLERANCE, rtol=MERGE_TOLERANCE)


def test_load_trainable_state_dict_refuses_other_layouts():
    _, model = make_adapted("krona_plus")
    state = trainable_state_dict(model)
    missing = dict(state)
    del missing["blocks.1.attn.v.adapter_B"]
    with pytest.raises(HyperAdaptError, match="lacks the tensor 'blocks.1.attn.v.adapter_B'"):
        load_trainable_state_dict(model, missing)
    reshaped = dict(state, **{"head.weight": torch.zeros(3, 64)})
    with pytest.raises(HyperAdaptError, match=r"'head.weight' has shape \(3, 64\)"):
        load_trainable_state_dict(model, reshaped)
    _, lora = make_adapted("lora")
    with pytest.raises(HyperAdaptError, match=r"'blocks.0.attn.q.adapter_A' has shape \(8, 8\)"):
        load_trainable_state_dict(lora, state)
    _, lokr = make_adapted("lokr")
    with pytest.raises(HyperAdaptError, match="lacks the tensor 'blocks.0.attn.q.adapter_B_up'"):
        load_trainable_state_dict(lokr, state)
    extra = dict(state, **{"blocks.0.attn.k.adapter_A": torch.zeros(8, 8)})
    with pytest.raises(HyperAdaptError, match="'blocks.0.attn.k.adapter_A' that this model"):
        load_trainable_state_dict(model, extra)


@pytest.mark.parametrize("method", list(METHODS))
def test_param_groups_carry_the_right_rates(method):
    _, model = make_adapted(method, lr_ratio=4.0)
    groups = param_groups(model, lr=1e-3, head_lr=1e-2, weight_decay=0.05)
    by_name = {group["name"]: group for group in groups}
    grouped = [name for group in groups for name in group["param_names"]]
    assert sorted(grouped) == sorted(expected_trainable(method, model))
    for group in groups:
        assert len(group["params"]) == len(group["param_names"])

    assert by_name["head"]["param_names"] == ["head.weight"]
    assert by_name["head"]["lr"] == 1e-2 and by_name["head"]["weight_decay"] == 0.05
    assert by_name["head_no_decay"]["param_names"] == ["head.bias"]
    assert by_name["head_no_decay"]["weight_decay"] == 0.0
    if method in ADAPTER_TENSORS:
        zero_factors = {f"blocks.{i}.{t}.{ZERO_FACTOR[method]}" for i in range(DEPTH)
                        for t in TARGETS}
        assert set(by_name["lambda"]["param_names"]) == zero_factors
        expected_lr = 4e-3 if method.endswith("_plus") else 1e-3
        assert by_name["lambda"]["lr"] == pytest.approx(expected_lr)
        assert by_name["decay"]["lr"] == 1e-3
    else:
        assert "lambda" not in by_name
    if method == "fft":
        no_decay = set(by_name["no_decay"]["param_names"])
        assert {"pos_embed_spatial", "pos_embed_temporal", "norm.weight", "norm.bias",
                "blocks.0.norm1.weight", "blocks.1.attn.q.bias"} <= no_decay
        assert all(name.endswith("weight") for name in by_name["decay"]["param_names"])
        assert "blocks.0.attn.q.weight" in by_name["decay"]["param_names"]
        assert by_name["no_decay"]["weight_decay"] == 0.0
    # The groups are accepted by a torch optimizer as they are.
    torch.optim.AdamW(groups)


def test_plus_ratio_comes_from_the_config_and_is_one_for_other_methods():
    _, plus = make_adapted("krona_plus", lr_ratio=8.0)
    lrs = {g["name"]: g["lr"] for g in param_groups(plus, lr=1e-3)}
    assert lrs["lambda"] == pytest.approx(8e-3)
    _, plain = make_adapted("krona", lr_ratio=8.0)
    lrs = {g["name"]: g["lr"] for g in param_groups(plain, lr=1e-3)}
    assert lrs["lambda"] == pytest.approx(1e-3)


def test_config_is_checked_and_round_trips():
    config = AdapterConfig(method="lokr", targets=["attn.q", "mlp.fc1"], rank=4,
                           factor_shape=[8, 8])
    data = config.to_dict()
    assert data["targets"] == ["attn.q", "mlp.fc1"] and data["factor_shape"] == [8, 8]
    assert AdapterConfig.from_dict(data) == config
    for bad, message in ((dict(method="loha"), "Unknown fine-tuning method"),
                         (dict(targets=("attn.qkv",)), "Unknown adapter target 'attn.qkv'"),
                         (dict(targets=("attn.q", "attn.q")), "only once"),
                         (dict(targets=()), "at least one target"),
                         (dict(rank=0), "rank"),
                         (dict(alpha=float("nan")), "alpha"),
                         (dict(lr_ratio=-1.0), "learning-rate ratio"),
                         (dict(factor_shape=(0, 4)), "factor shape")):
        with pytest.raises(HyperAdaptError, match=message):
            AdapterConfig(**bad)
    with pytest.raises(HyperAdaptError, match="'dropout' is unknown"):
        AdapterConfig.from_dict({"method": "lora", "dropout": 0.1})
    assert AdapterConfig(method="lora", lr_ratio=16.0).lr_ratio == 1.0


def test_adapter_cannot_be_applied_twice():
    _, model = make_adapted("lora")
    with pytest.raises(HyperAdaptError, match="already has"):
        apply_adapter(model, AdapterConfig(method="krona"))


def test_lokr_with_both_factors_low_rank():
    base, model = make_adapted("lokr", decompose_both=True, rank=2, init_weights=False)
    layer = adapter_layers(model)[0][1]
    assert layer.adapter_A_up.shape == (8, 2) and layer.adapter_A_down.shape == (2, 8)
    x = torch.randn(3, 64)
    expected = x @ (8.0 * torch.kron(layer.adapter_A_up @ layer.adapter_A_down,
                                     layer.adapter_B_up @ layer.adapter_B_down)).T
    torch.testing.assert_close(layer.adapter_forward(x), expected, atol=1e-5, rtol=1e-5)


def test_default_krona_plus_on_vit_base_is_small():
    # Built on the meta device (no memory, no initialisation); only sizes matter here.
    with torch.device("meta"):
        model = apply_adapter(spectralgpt_base(num_classes=16), AdapterConfig())
    counts = count_parameters(model)
    # 12 blocks x (q, v) x (24 x 24 + 32 x 32)
    assert counts["adapter"] == 12 * 2 * (24 * 24 + 32 * 32) == 38_400
    assert counts["head"] == 768 * 16 + 16
    assert counts["backbone"] == 85_403_904
    assert counts["trainable"] == counts["adapter"] + counts["head"]
    assert 0.04 < 100 * counts["adapter"] / counts["backbone"] < 0.06
    model.to_empty(device="cpu")
    buffer = io.BytesIO()
    torch.save(trainable_state_dict(model), buffer)
    assert len(buffer.getvalue()) < 250_000
