"""Looking at results: per-edge trajectories of supernet runs and their plots."""
