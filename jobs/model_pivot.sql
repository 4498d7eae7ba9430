-- name: model_pivot
-- family: clusters / model pivot
-- description: How fast and how far an account moved to a newly released
--   model (SIGNALS.md: a campaign moved about half its traffic to a new
--   model within 24 hours of its release). Over the last 48 hours, every
--   hour, rolled up from `model_mix`. A model is **new** when the
--   partition's traffic in the window shows 24 hours or more without it
--   (from the window's first row) and then at least 3 accounts using it:
--   it first appeared within the last 24 hours. No catalogue of releases
--   is needed, and a rarely used old model (one or two accounts) is not
--   mistaken for a release. new_model_share_1d: of the account's requests
--   since the first new model appeared, those sent to a new model, as a
--   smoothed share (count / (requests + 5)). new_model_lag_hours: hours
--   from the model's first appearance to the account's first request on
--   it (the smallest over new models). Only accounts that used a new model
--   get a row (the features are NULL for everyone else), so nothing is
--   computed in the first day of a run or in windows without a release.
--   The reference is the worker's partition, as for `prompt_distribution`.
-- input: job:model_mix
-- key: account_id
-- window: hop 2d slide 1h
-- lateness: 0s
WITH rows_ms AS (
    SELECT
        account_id,
        CAST(window_start AS BIGINT) AS start_ms,
        model_1_id, model_1_requests, model_2_id, model_2_requests, model_requests
    FROM model_mix
),
uses AS (
    SELECT account_id, start_ms, model_1_id AS model, model_1_requests AS n
    FROM rows_ms WHERE model_1_id IS NOT NULL
    UNION ALL
    SELECT account_id, start_ms, model_2_id AS model, model_2_requests AS n
    FROM rows_ms WHERE model_2_id IS NOT NULL
),
horizon AS (
    SELECT min(start_ms) AS seen_from FROM rows_ms
),
new_models AS (
    SELECT u.model, min(u.start_ms) AS first_ms
    FROM uses u
    GROUP BY u.model
    HAVING count(DISTINCT u.account_id) >= 3
),
fresh AS (
    SELECT m.model, m.first_ms
    FROM new_models m CROSS JOIN horizon h
    WHERE m.first_ms >= h.seen_from + 86400000
),
since AS (
    SELECT min(first_ms) AS since_ms FROM fresh
),
on_new AS (
    SELECT
        u.account_id,
        sum(u.n) AS new_requests,
        min(u.start_ms - f.first_ms) AS lag_ms
    FROM uses u JOIN fresh f ON u.model = f.model
    GROUP BY u.account_id
),
after AS (
    SELECT r.account_id, sum(r.model_requests) AS requests
    FROM rows_ms r CROSS JOIN since s
    WHERE r.start_ms >= s.since_ms
    GROUP BY r.account_id
)
SELECT
    o.account_id,
    o.new_requests / (a.requests + 5.0) AS new_model_share_1d,
    o.lag_ms / 3600000.0 AS new_model_lag_hours
FROM on_new o JOIN after a ON o.account_id = a.account_id
