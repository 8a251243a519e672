"""Analyses over evaluations and checkpoints: frozen-vs-LoRA comparison, representation similarity, feature
extraction, and sim-vs-real agreement."""
