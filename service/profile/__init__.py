"""A run's difficulty profile of its dataset: histograms of estimates and observed rates."""
