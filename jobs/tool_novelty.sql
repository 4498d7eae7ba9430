-- name: tool_novelty
-- family: reasoning & tools
-- description: Tool-definition harvesting over the last 24 hours (every
--   hour), rolled up from `tool_sets`: how many distinct tool-definition
--   sets the account sent (each 10-minute window contributes its two most
--   used), and how many of its windows with tools brought one. An
--   application sends its one or two sets all day (novelty near 0, e.g.
--   1 set over 60 windows = 0.017); a campaign harvesting agent traces
--   invents a set for nearly every agent session (near 1). A developer
--   iterating on an agent's tools sits in between. tool_sets_24h: distinct
--   sets (count). tool_set_novelty_24h: distinct sets / windows with
--   tools, capped at 1 (a window can bring two); NULL under 4 windows
--   with tools (too few to tell a habit from a one-off).
-- input: job:tool_sets
-- key: account_id
-- window: hop 1d slide 1h
-- lateness: 0s
WITH sets AS (
    SELECT account_id, tool_set_1 AS tool_set FROM tool_sets WHERE tool_set_1 IS NOT NULL
    UNION ALL
    SELECT account_id, tool_set_2 AS tool_set FROM tool_sets WHERE tool_set_2 IS NOT NULL
),
distinct_sets AS (
    SELECT account_id, CAST(count(DISTINCT tool_set) AS DOUBLE) AS n_sets
    FROM sets
    GROUP BY account_id
),
windows AS (
    SELECT account_id, sum(tool_window) AS n_windows
    FROM tool_sets
    GROUP BY account_id
)
SELECT
    w.account_id,
    d.n_sets AS tool_sets_24h,
    CASE WHEN w.n_windows >= 4 THEN least(d.n_sets / w.n_windows, 1.0) END AS tool_set_novelty_24h
FROM windows w JOIN distinct_sets d ON w.account_id = d.account_id
