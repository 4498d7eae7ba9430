-- name: prompt_hist
-- family: distribution (PRADA / MMD style)
-- description: Per-account histograms of prompt properties in the window,
--   as counts, which `prompt_distribution` sums over a day and compares
--   with the rest of the traffic. Four properties, each a histogram whose
--   buckets add up to the window's requests: prompt length (tokens: <128,
--   128-511, 512-2047, >=2048), turns (single / multi), chain-of-thought
--   elicitation score (low: <0.3 or not scored, mid: 0.3-0.6, high: >=0.6,
--   the `reasoning` threshold), and topic group (stem: math, reasoning,
--   science; coding; chat: chat, writing; other: anything else or
--   unclassified). The counts are features too, but are not meant for
--   scoring on their own.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
SELECT
    account_id,
    CAST(sum(CASE WHEN prompt_tokens < 128 THEN 1 ELSE 0 END) AS DOUBLE) AS hist_tokens_lt128,
    CAST(sum(CASE WHEN prompt_tokens >= 128 AND prompt_tokens < 512 THEN 1 ELSE 0 END) AS DOUBLE) AS hist_tokens_128_511,
    CAST(sum(CASE WHEN prompt_tokens >= 512 AND prompt_tokens < 2048 THEN 1 ELSE 0 END) AS DOUBLE) AS hist_tokens_512_2047,
    CAST(sum(CASE WHEN prompt_tokens >= 2048 THEN 1 ELSE 0 END) AS DOUBLE) AS hist_tokens_ge2048,
    CAST(sum(CASE WHEN conversation_turns <= 1 THEN 1 ELSE 0 END) AS DOUBLE) AS hist_single_turn,
    CAST(sum(CASE WHEN conversation_turns > 1 THEN 1 ELSE 0 END) AS DOUBLE) AS hist_multi_turn,
    CAST(sum(CASE WHEN cot_elicitation_score >= 0.3 THEN 0 ELSE 1 END) AS DOUBLE) AS hist_cot_low,
    CAST(sum(CASE WHEN cot_elicitation_score >= 0.3 AND cot_elicitation_score < 0.6 THEN 1 ELSE 0 END) AS DOUBLE) AS hist_cot_mid,
    CAST(sum(CASE WHEN cot_elicitation_score >= 0.6 THEN 1 ELSE 0 END) AS DOUBLE) AS hist_cot_high,
    CAST(sum(CASE WHEN topic IN ('math', 'reasoning', 'science') THEN 1 ELSE 0 END) AS DOUBLE) AS hist_topic_stem,
    CAST(sum(CASE WHEN topic = 'coding' THEN 1 ELSE 0 END) AS DOUBLE) AS hist_topic_coding,
    CAST(sum(CASE WHEN topic IN ('chat', 'writing') THEN 1 ELSE 0 END) AS DOUBLE) AS hist_topic_chat,
    CAST(sum(CASE WHEN topic IN ('math', 'reasoning', 'science', 'coding', 'chat', 'writing') THEN 0 ELSE 1 END) AS DOUBLE)
        AS hist_topic_other
FROM events
GROUP BY account_id
