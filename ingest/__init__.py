"""The click pipeline: consumes `clicks`, enriches, stores each click exactly once."""
