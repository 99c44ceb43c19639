"""Latency prediction per hardware target (being written; see issue 4)."""
