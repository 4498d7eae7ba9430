-- name: harvest
-- family: output harvesting
-- description: Signs that outputs are being collected as training data: much
--   more output than input, single-turn prompts, deterministic sampling,
--   answers cut at max_tokens, several completions per prompt. Lateness
--   40m: an event arriving up to 40 minutes after its window was emitted
--   (a gateway's delayed log shipping) revises this window's score instead
--   of going to the DLQ, since output volume is the heart of this signal.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 40m
SELECT
    account_id,
    sum(coalesce(completion_tokens, 0) + coalesce(reasoning_tokens, 0))
        / greatest(sum(prompt_tokens), 1.0) AS output_input_ratio,
    sum(CASE WHEN conversation_turns <= 1 THEN 1 ELSE 0 END) / (count(*) + 5.0) AS single_turn_share,
    sum(CASE WHEN temperature = 0 THEN 1 ELSE 0 END) / (count(*) + 5.0) AS temperature_zero_share,
    sum(CASE WHEN finish_reason = 'length' THEN 1 ELSE 0 END) / (count(*) + 5.0) AS max_tokens_cut_share,
    sum(CASE WHEN n > 1 THEN 1 ELSE 0 END) / (count(*) + 5.0) AS multi_completion_share
FROM events
GROUP BY account_id
