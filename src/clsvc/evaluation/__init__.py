"""Scorers usable on any wav files: speaker similarity (Resemblyzer), disentanglement probes."""
