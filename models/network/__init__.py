"""The network: SpectralGPT, its adapters, backbones, masked autoencoder, checkpoints, weights."""
