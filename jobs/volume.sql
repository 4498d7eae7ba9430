-- name: volume
-- family: volume
-- description: How much an account asks for in the window: requests, output
--   tokens, rate-limit hits and the share of minutes it was active (24/7
--   operation keeps every minute busy; people do not).
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
SELECT
    account_id,
    count(*) AS requests,
    sum(coalesce(completion_tokens, 0) + coalesce(reasoning_tokens, 0)) AS output_tokens,
    -- Shares are smoothed with 5 pseudo-requests so a handful of requests
    -- cannot produce an extreme share on their own.
    sum(CASE WHEN status = 'rate_limited' THEN 1 ELSE 0 END) / (count(*) + 5.0) AS rate_limited_share,
    count(DISTINCT date_trunc('minute', event_time))
        / ((CAST(max(window_end) AS BIGINT) - CAST(max(window_start) AS BIGINT)) / 60000.0) AS active_minute_share
FROM events
GROUP BY account_id
