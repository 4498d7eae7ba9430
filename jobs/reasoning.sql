-- name: reasoning
-- family: chain-of-thought elicitation
-- description: Targeted elicitation of reasoning traces: the share of prompts
--   an upstream classifier scores as asking the model to write out its
--   step-by-step reasoning, how much of the output is reasoning tokens, and
--   how often extended reasoning is requested.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
SELECT
    account_id,
    sum(CASE WHEN cot_elicitation_score >= 0.6 THEN 1 ELSE 0 END) / (count(*) + 5.0) AS cot_elicitation_share,
    sum(coalesce(reasoning_tokens, 0))
        / greatest(sum(coalesce(completion_tokens, 0) + coalesce(reasoning_tokens, 0)), 1.0) AS reasoning_token_share,
    sum(CASE WHEN reasoning_requested THEN 1 ELSE 0 END) / (count(*) + 5.0) AS reasoning_requested_share
FROM events
GROUP BY account_id
