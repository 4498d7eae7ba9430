-- name: signal_counts
-- family: chain-of-thought elicitation, logit extraction
-- description: How many of the window's requests carry a campaign signal,
--   as counts a roll-up can add up: cot_requests asks for the model's
--   step-by-step reasoning (cot_elicitation_score >= 0.6, as in
--   `reasoning`), logit_requests reads the model token by token (a
--   logit_bias map, or max_tokens = 1), out of counted_requests.
--   cot_prompt_tokens and cot_output_tokens are the prompt and output
--   (completion + reasoning) tokens of the cot_requests: whether the
--   reasoning asked for came back as answers worth collecting. Input of
--   `persistence`.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
SELECT
    account_id,
    CAST(count(*) AS DOUBLE) AS counted_requests,
    CAST(sum(CASE WHEN cot_elicitation_score >= 0.6 THEN 1 ELSE 0 END) AS DOUBLE) AS cot_requests,
    CAST(sum(CASE WHEN coalesce(logit_bias_size, 0) > 0 OR max_tokens = 1 THEN 1 ELSE 0 END) AS DOUBLE) AS logit_requests,
    CAST(sum(CASE WHEN cot_elicitation_score >= 0.6 THEN prompt_tokens ELSE 0 END) AS DOUBLE) AS cot_prompt_tokens,
    CAST(sum(CASE WHEN cot_elicitation_score >= 0.6
        THEN coalesce(completion_tokens, 0) + coalesce(reasoning_tokens, 0) ELSE 0 END) AS DOUBLE) AS cot_output_tokens
FROM events
GROUP BY account_id
