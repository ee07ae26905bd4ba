-- B-tree instead of BRIN indexes on the periods of click_pairs and of the day tables (migrations 0021, 0022).
--
-- The BRIN indexes were made for the job's writes (a period's rows deleted and rebuilt, a day's rows summed),
-- but the planner also ANDed them into readers' bitmap scans: it estimates a BRIN range from the column's
-- correlation, while the pairs' periods are spread over the whole table (rebuilt periods, hour rows deleted
-- after 48 hours, the job building newest first), so scanning it marked most of the table's pages. Measured on
-- 10M clicks (loadtests/RESULTS.md): a link's countries over 24h 290 ms with the BRIN, 4 ms without; the
-- top links over 30 days from the days' rows 213 → 163 ms. A b-tree's estimates are exact enough that readers
-- only use it when it pays; it still serves the job's deletes (140 MB for 21M pairs rows: equal keys are
-- deduplicated). The hourly tables keep theirs (hour order, as the fold appends; no reader gained without).
DROP INDEX click_pairs_period;
CREATE INDEX click_pairs_period ON click_pairs (period, hours);
DROP INDEX click_rollup_days_day;
CREATE INDEX click_rollup_days_day ON click_rollup_days (day);
DROP INDEX click_cube_days_day;
CREATE INDEX click_cube_days_day ON click_cube_days (day);
