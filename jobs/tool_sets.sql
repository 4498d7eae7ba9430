-- name: tool_sets
-- family: reasoning & tools
-- description: The account's two most used tool-definition sets of the
--   window (tools_hash of requests with tools, most used first; ties to
--   the smaller hash), cut to 52 bits (tools_hash mod 2^52, so that the
--   value is exact as a Float64 feature), and whether the window had any
--   request with tools. The input of `tool_novelty`, which counts
--   distinct sets over a day exactly (per-window distinct counts cannot
--   be added up: see `tools_daily`); not meant for scoring.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
WITH per_set AS (
    SELECT account_id, tools_hash % 4503599627370496 AS tool_set, count(*) AS n
    FROM events
    WHERE tool_count > 0 AND tools_hash IS NOT NULL
    GROUP BY account_id, tools_hash % 4503599627370496
),
ranked AS (
    SELECT
        account_id, tool_set, n,
        row_number() OVER (PARTITION BY account_id ORDER BY n DESC, tool_set) AS rk
    FROM per_set
)
SELECT
    account_id,
    CAST(max(CASE WHEN rk = 1 THEN tool_set END) AS DOUBLE) AS tool_set_1,
    CAST(max(CASE WHEN rk = 2 THEN tool_set END) AS DOUBLE) AS tool_set_2,
    1.0 AS tool_window
FROM ranked
GROUP BY account_id
