-- name: persistence
-- family: chain-of-thought elicitation, logit extraction
-- description: Whether a signal persists, over the last 6 hours (every
--   hour). cot_hours_6h: distinct hours in which at least 30% of the
--   account's requests elicited chain-of-thought; cot_share_6h: the share
--   of its requests that did (smoothed: / (requests + 5)); logit_hours_6h
--   and logit_share_6h: the same for logit-reading requests.
--   cot_harvest_hours_6h: of the cot hours, those in which the eliciting
--   requests got back at least as many output tokens as they sent: the
--   reasoning was collected, not a tutoring conversation whose growing
--   history dwarfs each step-by-step answer. A campaign
--   keeps doing it hour after hour; a benchmark run, a researcher's
--   experiment or a student's homework fills an hour or two, and an
--   application that sends the odd such request among many never makes it
--   the bulk of an hour.
-- input: job:signal_counts
-- key: account_id
-- window: hop 6h slide 1h
-- lateness: 0s
-- panes: sum
WITH hours AS (
    SELECT
        account_id,
        date_trunc('hour', window_start) AS hour,
        sum(counted_requests) AS n,
        sum(cot_requests) AS cot,
        sum(logit_requests) AS logit,
        sum(cot_prompt_tokens) AS cot_in,
        sum(cot_output_tokens) AS cot_out
    FROM signal_counts
    GROUP BY account_id, date_trunc('hour', window_start)
)
SELECT
    account_id,
    CAST(sum(CASE WHEN cot >= 0.3 * n THEN 1 ELSE 0 END) AS DOUBLE) AS cot_hours_6h,
    sum(cot) / (sum(n) + 5.0) AS cot_share_6h,
    CAST(sum(CASE WHEN cot >= 0.3 * n AND cot > 0 AND cot_out >= cot_in THEN 1 ELSE 0 END) AS DOUBLE)
        AS cot_harvest_hours_6h,
    CAST(sum(CASE WHEN logit >= 0.3 * n THEN 1 ELSE 0 END) AS DOUBLE) AS logit_hours_6h,
    sum(logit) / (sum(n) + 5.0) AS logit_share_6h
FROM hours
GROUP BY account_id
