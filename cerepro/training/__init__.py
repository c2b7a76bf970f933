"""Training: the objectives, training blocks, checkpoints, model selection and the training loop."""
