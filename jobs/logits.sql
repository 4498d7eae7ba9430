-- name: logits
-- family: logit extraction
-- description: Logit-level model extraction (Carlini et al. 2024): requests
--   for log-probabilities, large logit_bias maps over many token ids, and
--   max_tokens = 1 to read one position at a time.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
SELECT
    account_id,
    sum(CASE WHEN logprobs THEN 1 ELSE 0 END) / (count(*) + 5.0) AS logprobs_share,
    avg(CAST(top_logprobs AS DOUBLE)) AS mean_top_logprobs,
    avg(CAST(logit_bias_size AS DOUBLE)) AS mean_logit_bias_size,
    sum(CASE WHEN max_tokens = 1 THEN 1 ELSE 0 END) / (count(*) + 5.0) AS max_tokens_one_share
FROM events
GROUP BY account_id
