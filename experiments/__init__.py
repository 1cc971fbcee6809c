"""Experiments: one module per paper artifact; each writes results json/csv under results/<profile>/."""
