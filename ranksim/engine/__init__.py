"""The training loop and what it needs: run folders and checkpoint files (``runs``), what makes
two runs the same (``identity``), what the loop builds (``build``: loaders, loss, optimiser,
schedulers), the state it resumes from (``checkpoint``), prediction and metrics (``inference``),
the loop (``loop``), and one whole run from start to test results (``launch``)."""
