"""Retrieval: the first stage (SPLADE) whose runs a cross-encoder re-ranks, and its sizing."""
