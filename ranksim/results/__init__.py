"""Finished runs read back: the results collector and its tables."""
