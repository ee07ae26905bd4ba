-- Busy links' rows in click_pairs (ingest/pairs.py BUSY_LINKS_SQL, built with each closed day's and hour's
-- pairs, off ingest's hot path): for a link with at least BUSY_LINK_CLICKS clicks in the period, its clicks
-- per region, city, referrer, referrer URL and UTM value (adim = 'link', avalue = its id), and a marker row
-- (bdim = '') of its clicks. They answer a link's rankings by those dimensions; the periods where a link
-- has no marker are read from its raw rows, which are few. No new column: the rows fit click_pairs.
--
-- Days and hours built before this migration lack them: their complete mark is cleared, so that the job
-- rebuilds them (newest first, a few per run) and readers of link questions take their raw rows meanwhile,
-- as after migration 0024. Weeks keep their mark: their rows are sums of the days' other pairs, unchanged.
UPDATE click_pairs_built SET complete_at = NULL WHERE hours IN (1, 24);
