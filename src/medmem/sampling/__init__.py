"""Sampling: trained generators to uint8 N×C×H×W .npy files, memory-mapped, seeded, batched;
the diffusion schedule and its samplers (`samplers.py`)."""
