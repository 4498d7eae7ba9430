-- name: timing
-- family: timing
-- description: Regularity of request timing. The coefficient of variation of
--   inter-arrival gaps is about 1 for Poisson-like human traffic and well
--   above 1 for bursty sessions, but far below 1 for scheduled bots.
--   Computed only with at least 15 gaps, else NULL (no contribution).
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
WITH gaps AS (
    SELECT
        account_id,
        CAST(event_time AS BIGINT)
            - lag(CAST(event_time AS BIGINT)) OVER (PARTITION BY account_id ORDER BY event_time, request_id) AS gap_ms
    FROM events
)
SELECT
    account_id,
    CASE WHEN count(gap_ms) >= 15 AND avg(gap_ms) > 0
        THEN stddev_pop(gap_ms) / avg(gap_ms)
    END AS interarrival_cv
FROM gaps
GROUP BY account_id
