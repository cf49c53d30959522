"""What a prediction or a feature matrix is measured by: shot-region metrics, the feature
diagnostics and the plots. The training loop uses them, so they import nothing of the engine."""
