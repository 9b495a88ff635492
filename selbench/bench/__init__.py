"""Stage 4, the benchmark: the grid of units, the run store that keeps them, their records and the leaderboard."""
