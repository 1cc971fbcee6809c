"""vppkit.metrics."""
