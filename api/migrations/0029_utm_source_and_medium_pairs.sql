-- A UTM source and a UTM medium paired with every other high-cardinality dimension and with the link, as a
-- domain is since migration 0028 (FEW_VALUED_PAIRS in ingest/pairs.py: adim 'utm_source' or 'utm_medium'):
-- a newsletter's cities, referrers, campaigns and top links, and the sources of one city or link. Built with
-- each closed day's and hour's pairs, off ingest's hot path, summed into weeks; no new column. Periods built
-- before this migration lack them: their complete mark (days, hours and weeks) is cleared, so the job rebuilds
-- them (newest first, a few per run) and readers of those questions take the raw rows meanwhile, as after
-- migration 0028; other questions still read them.
UPDATE click_pairs_built SET complete_at = NULL;
