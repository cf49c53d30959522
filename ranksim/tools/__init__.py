"""Commands above everything else: the sweep and reproduce runner, and the checkpoint converter."""
