-- name: system_prompts
-- family: template repetition
-- description: System-prompt use: the smoothed share of requests sent
--   with a system prompt, and how many distinct system prompts the
--   account used in the window. Scripted extraction typically runs one
--   fixed system prompt (the same harness on every request, often on every
--   account of a cluster); a person or an app with several features shows
--   none or a few. On its own this is weak (a popular app legitimately
--   shares one system prompt), so it is meant to corroborate templates.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
SELECT
    account_id,
    sum(CASE WHEN system_prompt_hash IS NOT NULL THEN 1 ELSE 0 END) / (count(*) + 5.0) AS system_prompt_share,
    CAST(count(DISTINCT system_prompt_hash) AS DOUBLE) AS distinct_system_prompts
FROM events
GROUP BY account_id
