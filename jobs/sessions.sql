-- name: sessions
-- family: timing
-- description: Activity sessions, rolled up from `volume`: a session is a
--   run of an account's 10-minute windows with requests, less than 30
--   minutes apart, cut at midnight UTC (so a session lasts at most a day).
--   Emitted when the session ends: its requests and its length in hours.
--   People work in sessions of minutes to a few hours; a harvesting
--   pipeline runs one session from midnight to midnight.
-- input: job:volume
-- key: account_id
-- window: session 30m max 1d
-- lateness: 0s
SELECT
    account_id,
    sum(requests) AS session_requests,
    (CAST(max(window_end) AS BIGINT) - CAST(min(window_start) AS BIGINT)) / 3600000.0 AS session_hours
FROM volume
GROUP BY account_id
