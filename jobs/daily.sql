-- name: daily
-- family: volume and timing
-- description: An account's volume over a UTC day, rolled up from its
--   `hourly` windows: requests and output tokens summed over the day, and
--   the number of hours it was active in (out of 24). Accounts run by
--   people sleep; extraction runs around the clock, so 20+ active hours
--   at volume is a strong sign of automation.
-- input: job:hourly
-- key: account_id
-- window: tumble 1d
-- lateness: 0s
SELECT
    account_id,
    sum(requests_1h) AS requests_1d,
    sum(output_tokens_1h) AS output_tokens_1d,
    count(*) AS active_hours_1d
FROM hourly
GROUP BY account_id
