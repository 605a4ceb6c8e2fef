"""Evaluation: answers from live endpoints, a judge panel, statistics and a ranking report."""
