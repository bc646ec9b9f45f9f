"""Evaluation: metrics with declared policies, results records, human-readable reports."""
