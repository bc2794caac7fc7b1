"""Training, evaluation and comparison of streamser emotion models (torch)."""
