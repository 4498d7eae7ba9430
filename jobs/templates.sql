-- name: templates
-- family: template repetition
-- description: Highly repetitive prompt structure. duplicate_prompt_rate is
--   the share of requests repeating a near-duplicate prompt (SEAT-style);
--   top_template_share the share of the most used template (prompt with
--   entities masked); distinct_template_ratio distinct templates per request.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
WITH per_template AS (
    SELECT account_id, template_fingerprint, count(*) AS uses
    FROM events
    WHERE template_fingerprint IS NOT NULL
    GROUP BY account_id, template_fingerprint
),
totals AS (
    SELECT
        account_id,
        count(*) AS requests,
        count(prompt_fingerprint) AS fingerprinted,
        count(DISTINCT prompt_fingerprint) AS distinct_prompts,
        count(DISTINCT template_fingerprint) AS distinct_templates
    FROM events
    GROUP BY account_id
)
SELECT
    t.account_id,
    CASE WHEN t.fingerprinted > 0
        THEN (t.fingerprinted - t.distinct_prompts) / (t.fingerprinted + 5.0)
    END AS duplicate_prompt_rate,
    coalesce(max(p.uses), 0) / (t.requests + 5.0) AS top_template_share,
    t.distinct_templates / CAST(t.requests AS DOUBLE) AS distinct_template_ratio
FROM totals t
LEFT JOIN per_template p ON p.account_id = t.account_id
GROUP BY t.account_id, t.requests, t.fingerprinted, t.distinct_prompts, t.distinct_templates
