-- name: coverage
-- family: coverage
-- description: Focus of the capability areas asked about: the smoothed share
--   of the most requested topic, and how many distinct topics per request.
--   Narrow focus at volume is how targeted capability harvesting looks.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
WITH per_topic AS (
    SELECT account_id, topic, count(*) AS uses
    FROM events
    WHERE topic IS NOT NULL
    GROUP BY account_id, topic
),
totals AS (
    SELECT account_id, count(*) AS requests FROM events GROUP BY account_id
)
SELECT
    t.account_id,
    coalesce(max(p.uses), 0) / (t.requests + 5.0) AS top_topic_share,
    count(p.topic) / CAST(t.requests AS DOUBLE) AS distinct_topic_ratio
FROM totals t
LEFT JOIN per_topic p ON p.account_id = t.account_id
GROUP BY t.account_id, t.requests
