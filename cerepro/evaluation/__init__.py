"""Evaluation: candidate lists re-ranked by a model, measured against qrels, and compared."""
