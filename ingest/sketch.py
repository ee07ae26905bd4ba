"""The parameters of every visitor sketch H0p makes (rollup, cube, pairs; api/services/analytics.py
and migration 0020 spell them too): unions need them equal. log2m 13, regwidth 5, the exact set up to
640 hashes, no sparse form (docs/analytics.md, "How exact")."""

HLL_ARGS = "13, 5, -1, 0"
