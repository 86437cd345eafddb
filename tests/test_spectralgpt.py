"""The SpectralGPT backbone: shapes, token order, positional embeddings, gradients, presets."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine_data import spectralgpt_small
from hyperadapt.models.errors import HyperAdaptError
from hyperadapt.models.network.spectralgpt import SpectralGPT, build_backbone, spectralgpt_base

SHARED = Path(__file__).resolve().parents[2] / "shared"




@pytest.mark.parametrize("overrides, num_tokens", [
    (dict(img_size=32), 64),
    (dict(img_size=16), 16),
    (dict(img_size=24, in_bands=6), 18),
])
def test_forward_shape_no_nan_and_gradient_on_every_tensor(overrides, num_tokens):
    torch.manual_seed(0)
    model = spectralgpt_small(num_classes=3, **overrides)
    size, bands = model.img_size, model.in_bands
    assert model.num_tokens == num_tokens
    assert model.num_spectral_groups == bands // 3
    x = torch.rand(2, bands, size, size)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, num_tokens, 64)
    logits = model(x)
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 2])).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_tokens_are_spectral_group_major_with_summed_positional_embeddings():
    torch.manual_seed(0)
    model = spectralgpt_small(img_size=16, in_bands=9)
    x = torch.rand(1, 9, 16, 16)
    tokens = model.embed_tokens(x)[0]
    weight = model.patch_embed.proj.weight[:, 0]      # (D, 3, 8, 8)
    bias = model.patch_embed.proj.bias
    grid = 2
    for t in range(3):
        for row in range(grid):
            for col in range(grid):
                s = row * grid + col
                patch = x[0, 3 * t:3 * t + 3, 8 * row:8 * row + 8, 8 * col:8 * col + 8]
                expected = ((weight * patch).sum(dim=(1, 2, 3)) + bias
                            + model.pos_embed_spatial[0, s] + model.pos_embed_temporal[0, t])
                torch.testing.assert_close(tokens[t * grid * grid + s], expected,
                                           atol=1e-5, rtol=1e-5)


def test_kept_tokens_enter_the_blocks_unchanged_in_order():
    torch.manual_seed(0)
    model = spectralgpt_small(img_size=16).eval()
    x = torch.rand(2, 12, 16, 16)
    with torch.no_grad():
        full = model.forward_features(x)
        order = torch.stack([torch.randperm(16), torch.randperm(16)])
        permuted = model.forward_features(x, ids_keep=order)
        kept = model.forward_features(x, ids_keep=order[:, :5])
    # Attention without masks is permutation-equivariant, so keeping all tokens permutes the output.
    torch.testing.assert_close(permuted, torch.stack([full[0, order[0]], full[1, order[1]]]),
                               atol=1e-5, rtol=1e-5)
    assert kept.shape == (2, 5, 64)


def test_pool_is_mean_then_norm_and_head_is_linear():
    torch.manual_seed(0)
    model = spectralgpt_small(img_size=16, num_classes=4).eval()
    x = torch.rand(2, 12, 16, 16)
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = F.layer_norm(tokens.mean(1), (64,), model.norm.weight, model.norm.bias, eps=1e-6)
        torch.testing.assert_close(model.pool(tokens), pooled)
        torch.testing.assert_close(model(x), pooled @ model.head.weight.T + model.head.bias)


def test_block_parts_match_the_official_architecture():
    model = spectralgpt_small()
    block = model.blocks[0]
    for norm in (block.norm1, block.norm2, model.norm):
        assert norm.eps == 1e-6
    assert block.mlp.act.approximate == "none"
    for name in ("q", "k", "v", "proj"):
        layer = getattr(block.attn, name)
        assert isinstance(layer, torch.nn.Linear) and layer.bias is not None
    assert block.mlp.fc1.out_features == 4 * 64
    assert model.patch_embed.proj.kernel_size == (3, 8, 8)
    assert model.patch_embed.proj.stride == (3, 8, 8)


def test_initialisation_is_small_truncated_normal():
    torch.manual_seed(0)
    model = spectralgpt_small(img_size=128, num_classes=10)
    for tensor in (model.pos_embed_spatial, model.blocks[0].attn.q.weight,
                   model.blocks[1].mlp.fc1.weight, model.head.weight):
        assert 0.012 < tensor.std().item() < 0.025
        assert tensor.abs().max().item() <= 0.04 + 1e-6
    assert model.blocks[0].attn.q.bias.abs().max() == 0


def test_base_preset_has_the_official_encoder_layout():
    with torch.device("meta"):
        model = spectralgpt_base()
    official = json.loads((SHARED / "spectralgpt" / "checkpoint_keys.json").read_text())
    layout = {name: list(t.shape) for name, t in model.state_dict().items()}
    assert layout == official["encoder_keys"]
    assert sum(p.numel() for p in model.parameters()) == official["counts"][
        "encoder_params_SpectralGPT+"] == 85_403_904
    assert model.num_tokens == 4 * 256


def test_config_rebuilds_the_same_model_and_is_checked():
    model = spectralgpt_small(img_size=24, num_classes=7)
    rebuilt = build_backbone(dict(model.config))
    assert {n: t.shape for n, t in rebuilt.state_dict().items()} == {
        n: t.shape for n, t in model.state_dict().items()}
    assert rebuilt.config == model.config
    with pytest.raises(HyperAdaptError, match="'drop_rate' is unknown"):
        build_backbone({**model.config, "drop_rate": 0.1})
    with pytest.raises(HyperAdaptError, match="multiple of the patch size"):
        spectralgpt_small(img_size=20)
    with pytest.raises(HyperAdaptError, match="multiple of the 3 bands"):
        spectralgpt_small(in_bands=10)


def test_wrong_input_is_one_clear_error():
    model = spectralgpt_small(img_size=16)
    with pytest.raises(HyperAdaptError, match=r"12 bands x 16 x 16 pixels but got shape \(1, 8, 16, 16\)"):
        model(torch.zeros(1, 8, 16, 16))


def test_reset_classifier_and_no_weight_decay():
    model = spectralgpt_small(img_size=16)
    assert model(torch.zeros(2, 12, 16, 16)).shape == (2, 64)
    model.reset_classifier(9)
    assert model.config["num_classes"] == 9
    assert model(torch.zeros(2, 12, 16, 16)).shape == (2, 9)
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names)
    assert model.no_weight_decay() == {"pos_embed_spatial", "pos_embed_temporal"}
    assert isinstance(SpectralGPT(img_size=16, depth=1, embed_dim=32, num_heads=2).head,
                      torch.nn.Identity)


def test_centre_pixel_of_odd_and_even_windows():
    from hyperadapt.models.network.spectralgpt import centre_pixel

    odd = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    torch.testing.assert_close(centre_pixel(odd), odd[:, :, 2, 2])
    even = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    torch.testing.assert_close(centre_pixel(even), even[:, :, 1:3, 1:3].mean(dim=(-2, -1)))


def test_pixel_head_sees_the_centre_pixel_of_any_window_size():
    torch.manual_seed(0)
    model = spectralgpt_small(img_size=16, num_classes=4, pixel_dim=8).eval()
    assert model.config["pixel_dim"] == 8
    windows = torch.rand(3, 12, 9, 9)
    # Windows of any size are resized to the input; the output has the classes.
    logits = model(windows)
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()
    # Without the pooled tokens (context dropout), only the centre pixel counts.
    hidden = torch.zeros(3, dtype=torch.bool)
    changed = windows.clone()
    changed[:, :, :4] = torch.rand(3, 12, 4, 9)
    torch.testing.assert_close(model(windows, context_keep=hidden),
                               model(changed, context_keep=hidden))
    assert not torch.allclose(model(windows), model(changed))
    changed[:, :, 4, 4] += 0.5
    assert not torch.allclose(model(windows, context_keep=hidden),
                              model(changed, context_keep=hidden))
    # Every tensor of the head learns.
    model.train()
    F.cross_entropy(model(windows), torch.tensor([0, 1, 3])).backward()
    for name, param in model.head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_evaluation_takes_the_more_confident_view_of_a_head_trained_with_context_dropout():
    torch.manual_seed(1)
    model = spectralgpt_small(img_size=16, num_classes=5, pixel_dim=8, two_views=True)
    with torch.no_grad():           # a strong pixel path, so that each view wins somewhere
        model.head.fc1.weight.mul_(100.0)
        model.head.fc.weight[:, model.embed_dim:].mul_(100.0)
    windows = torch.rand(64, 12, 7, 7)
    model.train()
    full = model(windows)
    alone = model(windows, context_keep=torch.zeros(64, dtype=torch.bool))
    model.eval()
    chosen = model(windows)
    full_wins = torch.softmax(full, -1).amax(-1) >= torch.softmax(alone, -1).amax(-1)
    assert 0 < int(full_wins.sum()) < 64          # both views win somewhere
    torch.testing.assert_close(chosen[full_wins], full[full_wins])
    torch.testing.assert_close(chosen[~full_wins], alone[~full_wins])
    # Without two views, evaluation gives the full view; a rebuilt model keeps the setting.
    assert build_backbone(model.config).two_views
    model.reset_classifier(5, two_views=False)
    torch.testing.assert_close(model(windows), model.train()(windows))
    assert not build_backbone(model.config).two_views

