-- name: hourly
-- family: volume
-- description: An account's volume over a UTC hour, rolled up from its
--   10-minute `volume` windows (no raw event is held for the hour):
--   requests, output tokens, and in how many of the hour's six 10-minute
--   windows it was active. A person works in bursts; a harvesting
--   pipeline keeps all six busy, hour after hour.
-- input: job:volume
-- key: account_id
-- window: tumble 1h
-- lateness: 0s
SELECT
    account_id,
    sum(requests) AS requests_1h,
    sum(output_tokens) AS output_tokens_1h,
    count(*) AS active_windows_1h
FROM volume
GROUP BY account_id
