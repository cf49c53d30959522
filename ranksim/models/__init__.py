"""Models, built by name."""
