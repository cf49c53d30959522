"""The training loop and what it needs: run folders and checkpoints (``runs``), what makes two
runs the same (``identity``), and the loop itself (``loop``)."""
