"""Speed benchmarks (``selfalign bench scoring|generation``): ours against the stock paths, same process."""
