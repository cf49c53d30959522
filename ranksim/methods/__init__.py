"""The methods' maths, importable on their own: label binning, ranking and RankSim, LDS and FDS,
the weighted losses, Balanced MSE and ConR. They need torch, numpy and scipy, and nothing of the
pipeline above them (config, data, engine)."""
