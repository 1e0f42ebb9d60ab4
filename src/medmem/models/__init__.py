"""Generators: networks only (training and sampling live in medmem.training and medmem.sampling)."""
