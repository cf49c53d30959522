"""Datasets, their preparation commands and readers."""
