"""Filelists, datasets, transforms and episode samplers."""
