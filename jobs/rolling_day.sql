-- name: rolling_day
-- family: volume and timing
-- description: The last 24 hours of an account, every 6 hours, rolled up
--   from `hourly`: requests and hours with any request. Unlike `daily`
--   (calendar days, known at midnight UTC), it sees a day of activity
--   whatever the hour, within 6 hours.
-- input: job:hourly
-- key: account_id
-- window: hop 1d slide 6h
-- lateness: 0s
SELECT
    account_id,
    sum(requests_1h) AS requests_24h,
    count(*) AS active_hours_24h
FROM hourly
GROUP BY account_id
