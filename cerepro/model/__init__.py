"""The cross-encoder: what a backbone is, and the model built, loaded and saved."""
