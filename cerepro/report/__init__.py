"""The report: a grid's results as tables, figures, claims and verdicts, the explorer and the book."""
