"""Data layer: built-in datasets, the user's own files, splits, subsets and data checks."""
