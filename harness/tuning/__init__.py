"""Tuning: sweeps (grid, zip), Optuna searches and the final run of the chosen settings."""
