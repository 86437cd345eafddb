"""SpectralGPT's pretraining objective: mask most 3-D tokens, encode the rest, reconstruct the masked.

SpectralGPT (Hong et al., "SpectralGPT: Spectral Remote Sensing Foundation Model", IEEE TPAMI 2024)
pretrains its encoder as a masked autoencoder (He et al., "Masked Autoencoders Are Scalable Vision
Learners", CVPR 2022) whose tokens are tubelets of 3 bands x 8 x 8 pixels. A random subset of the
tokens is kept per sample; only those enter the encoder (``forward_features(x, ids_keep=...)``),
so the encoder never sees the masked tubelets. A light decoder (blocks of the encoder's own
``Block`` class) gets the encoded tokens back at their places, a learned mask token elsewhere,
and predicts every tubelet's pixels. The loss is the mean squared error on the masked tubelets
against a per-token normalised target. An optional second term compares the reconstruction summed
over the spectral axis at each pixel, after SpectralGPT's multi-target reconstruction idea.

Decoder parameter names follow the official checkpoint (``decoder_embed``, ``mask_token``,
``decoder_pos_embed_spatial``, ``decoder_blocks.N``, ``decoder_norm``, ``decoder_pred``), so the
official decoder loads when pretraining continues from the official weights.
"""
from __future__ import annotations

import logging
import math

import torch
from einops import rearrange
from torch import nn

from ..errors import HyperAdaptError
from .checkpoint import resample_pos_embed, resample_spectral_pos_embed
from .spectralgpt import INIT_STD, LAYER_NORM_EPS, Block, SpectralGPT

log = logging.getLogger(__name__)

DECODER_PREFIXES = ("decoder_", "mask_token")
# A tiny epsilon would blow up the target of flat tubelets (e.g. constant padding); MAE uses 1e-6
# on ImageNet pixels, which are far from flat, so a larger floor is kept for reflectance windows.
NORM_PIX_EPS = 1e-4


def default_mask_ratio(num_tokens: int) -> float:
    """The share of tokens to mask for a sample of ``num_tokens`` tokens.

    SpectralGPT masks 90 % of its 1024 tokens; MAE masks 75 % of 196. Few tokens carry little
    redundancy, so fewer are hidden: 0.9 from 256 tokens, 0.75 from 16, 0.5 below.
    """
    if num_tokens >= 256:
        return 0.9
    if num_tokens >= 16:
        return 0.75
    return 0.5


def num_kept_tokens(num_tokens: int, mask_ratio: float) -> int:
    """Tokens left visible at ``mask_ratio``: at least one, and at least one masked."""
    if not 0.0 < mask_ratio < 1.0:
        raise HyperAdaptError(f"The mask ratio must lie strictly between 0 and 1 (got {mask_ratio}).")
    if num_tokens < 2:
        raise HyperAdaptError("Masked pretraining needs at least two tokens per sample; use a larger "
                              "input size.")
    keep = int(round(num_tokens * (1.0 - mask_ratio)))
    return min(max(keep, 1), num_tokens - 1)


def random_masking(batch_size: int, num_tokens: int, mask_ratio: float, *,
                   generator: torch.Generator | None = None, device=None):
    """Random per-sample token masking.

    Returns ``(ids_keep, mask, ids_restore)``: ``ids_keep`` (B, n_keep) the visible token indices in
    ascending order, ``mask`` (B, N) bool, True where a token is hidden, and ``ids_restore``
    (B, N) the permutation that puts [visible tokens, mask tokens] back into token order.
    """
    keep = num_kept_tokens(num_tokens, mask_ratio)
    noise = torch.rand(batch_size, num_tokens, generator=generator,
                       device=generator.device if generator is not None else device)
    shuffle = torch.argsort(noise, dim=1)
    # Sorting the kept indices keeps the visible tokens in their token order (harmless, and it
    # makes the encoder input easy to compare with a full pass in tests).
    ids_keep = torch.sort(shuffle[:, :keep], dim=1).values
    ids_shuffle = torch.cat([ids_keep, torch.sort(shuffle[:, keep:], dim=1).values], dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch_size, num_tokens, dtype=torch.bool, device=noise.device)
    mask.scatter_(1, ids_keep, False)
    if device is not None:
        ids_keep, mask, ids_restore = ids_keep.to(device), mask.to(device), ids_restore.to(device)
    return ids_keep, mask, ids_restore


def patchify(x: torch.Tensor, *, tubelet_bands: int, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, tubelet_bands * patch * patch) in the encoder's token order (t-major)."""
    return rearrange(x, "b (t u) (h p) (w q) -> b (t h w) (u p q)", u=tubelet_bands,
                     p=patch_size, q=patch_size)


def unpatchify(tokens: torch.Tensor, *, tubelet_bands: int, patch_size: int,
               num_spectral_groups: int, grid_size: int) -> torch.Tensor:
    """Inverse of ``patchify``: (B, N, u * p * p) -> (B, C, H, W)."""
    return rearrange(tokens, "b (t h w) (u p q) -> b (t u) (h p) (w q)", t=num_spectral_groups,
                     h=grid_size, w=grid_size, u=tubelet_bands, p=patch_size, q=patch_size)


class MaskedAutoencoder(nn.Module):
    """A SpectralGPT encoder with the masked-autoencoder decoder and loss used to pretrain it."""

    def __init__(self, *, encoder: SpectralGPT, decoder_dim: int = 128, decoder_depth: int = 2,
                 decoder_heads: int = 4, decoder_mlp_ratio: float = 4.0, norm_pix_loss: bool = True,
                 spectral_loss_weight: float = 0.0):
        """Args:
            encoder: the SpectralGPT backbone being pretrained (its head is not used).
            decoder_dim: decoder token width (512 in SpectralGPT's ViT-B pretraining).
            decoder_depth: decoder blocks (4 in SpectralGPT's ViT-B pretraining).
            decoder_heads: decoder attention heads; decoder_dim must be a multiple.
            decoder_mlp_ratio: decoder MLP hidden width as a multiple of decoder_dim.
            norm_pix_loss: normalise each target tubelet by its own mean and variance (as MAE).
            spectral_loss_weight: weight of the spectrally summed reconstruction term (0: off).
        """
        super().__init__()
        if decoder_dim % decoder_heads:
            raise HyperAdaptError(f"The decoder width {decoder_dim} must be a multiple of the "
                                  f"{decoder_heads} decoder heads.")
        if spectral_loss_weight < 0:
            raise HyperAdaptError(f"The spectral loss weight must not be negative "
                                  f"(got {spectral_loss_weight}).")
        cfg = encoder.config
        self.encoder = encoder
        self.tubelet_bands = cfg["tubelet_bands"]
        self.patch_size = cfg["patch_size"]
        self.norm_pix_loss = norm_pix_loss
        self.spectral_loss_weight = float(spectral_loss_weight)
        self.decoder_config = {"decoder_dim": decoder_dim, "decoder_depth": decoder_depth,
                               "decoder_heads": decoder_heads,
                               "decoder_mlp_ratio": float(decoder_mlp_ratio)}
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed_spatial = nn.Parameter(
            torch.zeros(1, encoder.num_spatial_tokens, decoder_dim))
        self.decoder_pos_embed_temporal = nn.Parameter(
            torch.zeros(1, encoder.num_spectral_groups, decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            Block(embed_dim=decoder_dim, num_heads=decoder_heads, mlp_ratio=decoder_mlp_ratio)
            for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=LAYER_NORM_EPS)
        self.decoder_pred = nn.Linear(decoder_dim, self.tubelet_bands * self.patch_size ** 2)
        self._init_decoder()

    def _init_decoder(self) -> None:
        for tensor in (self.mask_token, self.decoder_pos_embed_spatial,
                       self.decoder_pos_embed_temporal):
            nn.init.trunc_normal_(tensor, std=INIT_STD)
        for module in self.decoder_modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def decoder_modules(self):
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm,
                       self.decoder_pred):
            yield from module.modules()

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    def decoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The decoder's tensors (names as in the official checkpoint)."""
        return {name: tensor for name, tensor in self.state_dict().items()
                if name.startswith(DECODER_PREFIXES)}

    def load_official_decoder(self, state: dict[str, torch.Tensor]) -> bool:
        """Load a checkpoint's decoder tensors when they fit this decoder; False (and nothing loaded) if not.

        The positional embeddings are resized to this model's grid and spectral group count.
        """
        own = self.decoder_state_dict()
        found = {name: tensor for name, tensor in state.items() if name.startswith(DECODER_PREFIXES)}
        if set(found) != set(own):
            return False
        fitted = {}
        for name, tensor in found.items():
            if name == "decoder_pos_embed_spatial" and tensor.ndim == 3:
                side = math.isqrt(tensor.shape[1])
                if side * side == tensor.shape[1]:
                    tensor = resample_pos_embed(tensor, own[name].shape[1])
            elif name == "decoder_pos_embed_temporal" and tensor.ndim == 3:
                tensor = resample_spectral_pos_embed(tensor, own[name].shape[1])
            if tuple(tensor.shape) != tuple(own[name].shape):
                return False
            fitted[name] = tensor.to(own[name].dtype)
        missing, unexpected = self.load_state_dict(fitted, strict=False)
        assert not unexpected and not any(name.startswith(DECODER_PREFIXES) for name in missing)
        return True

    def forward_encoder(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode only the visible tokens: (B, n_keep, D), after the encoder's final norm."""
        return self.encoder.norm(self.encoder.forward_features(x, ids_keep=ids_keep))

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict every token's pixels: (B, N, tubelet_bands * patch * patch)."""
        tokens = self.decoder_embed(latent)
        batch, keep, width = tokens.shape
        fill = self.mask_token.expand(batch, ids_restore.shape[1] - keep, width)
        tokens = torch.cat([tokens, fill], dim=1)
        index = rearrange(ids_restore, "b n -> b n 1").expand(-1, -1, width)
        tokens = torch.gather(tokens, 1, index)
        pos = (rearrange(self.decoder_pos_embed_spatial, "1 l d -> 1 1 l d")
               + rearrange(self.decoder_pos_embed_temporal, "1 t d -> 1 t 1 d"))
        tokens = tokens + rearrange(pos, "1 t l d -> 1 (t l) d")
        for block in self.decoder_blocks:
            tokens = block(tokens)
        return self.decoder_pred(self.decoder_norm(tokens))

    def target_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction target per token, normalised per token when norm_pix_loss is on."""
        target = patchify(x, tubelet_bands=self.tubelet_bands, patch_size=self.patch_size)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True, unbiased=False)
            target = (target - mean) / torch.sqrt(var + NORM_PIX_EPS)
        return target

    def reconstruction_loss(self, x: torch.Tensor, pred: torch.Tensor,
                            mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error on the masked tokens (plus the weighted spectral term)."""
        target = self.target_tokens(x)
        per_token = ((pred - target) ** 2).mean(dim=-1)
        weights = mask.to(per_token.dtype)
        loss = (per_token * weights).sum() / weights.sum().clamp_min(1.0)
        if self.spectral_loss_weight > 0:
            loss = loss + self.spectral_loss_weight * self.spectral_loss(pred, target, mask)
        return loss

    def spectral_loss(self, pred: torch.Tensor, target: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
        """Squared error of the spectrum summed over all bands, per pixel, where any group was masked.

        Visible tokens take their target values, so the sum only carries the masked groups' error
        while still asking the decoder to get the whole spectrum's level right.
        """
        groups = self.encoder.num_spectral_groups
        filled = torch.where(rearrange(mask, "b n -> b n 1"), pred, target)

        def spectral_sum(tokens):
            return rearrange(tokens, "b (t l) (u p q) -> b t u l p q", t=groups,
                             u=self.tubelet_bands, p=self.patch_size).sum(dim=(1, 2))

        per_cell = ((spectral_sum(filled) - spectral_sum(target)) ** 2).mean(dim=(-1, -2))
        cells = rearrange(mask, "b (t l) -> b t l", t=groups).any(dim=1).to(per_cell.dtype)
        # Dividing by the number of summed values keeps the term on the per-value scale.
        scale = groups * self.tubelet_bands
        return (per_cell * cells).sum() / cells.sum().clamp_min(1.0) / scale

    def forward(self, x: torch.Tensor, *, mask_ratio: float,
                generator: torch.Generator | None = None, rows: torch.Tensor | None = None,
                global_batch: int | None = None):
        """One masked-autoencoder pass: ``(loss, pred (B, N, u*p*p), mask (B, N) True = hidden)``.

        With ``rows`` (the samples' places in a batch of ``global_batch`` split over processes),
        the masks are those the whole batch would draw, so that every process masks its share as
        one process would.
        """
        ids_keep, mask, ids_restore = random_masking(global_batch or x.shape[0], self.num_tokens,
                                                     mask_ratio, generator=generator,
                                                     device=x.device)
        if rows is not None:
            rows = rows.to(ids_keep.device)
            ids_keep, mask, ids_restore = ids_keep[rows], mask[rows], ids_restore[rows]
        latent = self.forward_encoder(x, ids_keep)
        pred = self.forward_decoder(latent, ids_restore)
        return self.reconstruction_loss(x, pred, mask), pred, mask

    def no_weight_decay(self) -> set[str]:
        """Embeddings and the mask token are not decayed (biases and norms are handled by the caller)."""
        return ({f"encoder.{name}" for name in self.encoder.no_weight_decay()}
                | {"mask_token", "decoder_pos_embed_spatial", "decoder_pos_embed_temporal"})
