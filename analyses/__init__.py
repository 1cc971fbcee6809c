"""Analyses: render tables and figures from saved results into reports/."""
