"""Judging runs: metrics, plots, calibration and thresholds on held-out reviews, and the leaderboard."""
