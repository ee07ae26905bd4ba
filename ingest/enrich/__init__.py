"""Enrichment of click events: geography, user agent, bot flag, UTM, referrer, visitor hash."""
