-- name: clock
-- family: timing
-- description: Around-the-clock operation over the last 24 hours, every
--   hour, rolled up from `hourly`. hour_entropy_24h is the entropy, in
--   bits, of the account's requests over the 24 hours of the window
--   (-sum p_h log2 p_h, p_h = the hour's share of the requests): 0 when
--   everything falls in one hour, log2(24) = 4.585 when spread evenly over
--   all 24, about 3 for a working day of 8 even hours; NULL under 24
--   requests in the window (fewer requests cannot fill 24 hours, so the
--   value would not be comparable). longest_idle_hours_24h is the longest
--   run of hours without a request, read around the clock (the quiet hours
--   at the start and end of the window join up, as they are the same
--   hours of the day): people sleep, so 6 or more; a pipeline running 24/7
--   has 0. No time zone is needed, unlike a "night share".
-- input: job:hourly
-- key: account_id
-- window: hop 1d slide 1h
-- lateness: 0s
WITH h AS (
    SELECT
        account_id,
        requests_1h AS n,
        CAST(window_start AS BIGINT) AS start_ms,
        CAST(window_end AS BIGINT) AS end_ms,
        -- One hourly row per account and hour: the order has no ties.
        CAST(window_start AS BIGINT)
            - lag(CAST(window_end AS BIGINT)) OVER (PARTITION BY account_id ORDER BY window_start)
            AS idle_before_ms
    FROM hourly
)
SELECT
    account_id,
    -- H = log2(N) - (1/N) sum n_h log2 n_h, the same as -sum p_h log2 p_h.
    CASE WHEN sum(n) >= 24
        THEN greatest(log2(sum(n)) - sum(n * log2(n)) / sum(n), 0.0)
    END AS hour_entropy_24h,
    greatest(coalesce(max(idle_before_ms), 0), min(start_ms) + 86400000 - max(end_ms))
        / 3600000.0 AS longest_idle_hours_24h
FROM h
GROUP BY account_id
