"""Data: evaluation collections and their candidates, external files, training sources, tokenized pairs."""
