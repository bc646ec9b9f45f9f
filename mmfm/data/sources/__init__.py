"""Corpus builders from real medical data that registry packages ship."""
