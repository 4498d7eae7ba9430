-- name: model_mix
-- family: clusters / model pivot
-- description: Which models an account sent its requests to in the window:
--   its two most used models (model_1 the most used; ties broken by name)
--   as label_id numbers, with their request counts, and its requests that
--   named a model. The input of `model_pivot`, not meant for scoring:
--   label_id(model) is a stable 52-bit number standing for the model's
--   name (jobs/README.md, "Functions"), because job outputs are numbers.
--   An account spreading its traffic over three or more models shows only
--   its top two.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
WITH per_model AS (
    SELECT account_id, model, count(*) AS n
    FROM events
    WHERE model IS NOT NULL AND model <> ''
    GROUP BY account_id, model
),
ranked AS (
    SELECT
        account_id, model, n,
        -- (n, model) is unique per account: the order has no ties.
        row_number() OVER (PARTITION BY account_id ORDER BY n DESC, model) AS rk
    FROM per_model
)
SELECT
    account_id,
    CAST(max(CASE WHEN rk = 1 THEN label_id(model) END) AS DOUBLE) AS model_1_id,
    CAST(sum(CASE WHEN rk = 1 THEN n ELSE 0 END) AS DOUBLE) AS model_1_requests,
    CAST(max(CASE WHEN rk = 2 THEN label_id(model) END) AS DOUBLE) AS model_2_id,
    CAST(sum(CASE WHEN rk = 2 THEN n ELSE 0 END) AS DOUBLE) AS model_2_requests,
    CAST(sum(n) AS DOUBLE) AS model_requests
FROM ranked
GROUP BY account_id
