-- name: tools
-- family: reasoning & tools
-- description: Tool-definition harvesting: campaigns after agentic and
--   tool-use capability send many requests with tool definitions, and cycle
--   through many distinct (often synthetic) tool schemas to collect the
--   model's tool calls, where an application sends the same few schemas
--   over and over. tool_requests counts requests with tools (summed by
--   `tools_daily`); tool_schema_novelty is distinct schemas per request
--   with tools, NULL under 3 such requests (too few to say); shares are
--   smoothed with 5 pseudo-requests like the other jobs.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
WITH r AS (
    SELECT
        account_id,
        finish_reason,
        tool_count > 0 AS with_tools,
        CASE WHEN tool_count > 0 THEN tools_hash END AS schema_hash,
        CASE WHEN tool_count > 0 THEN CAST(tool_count AS DOUBLE) END AS tools_sent
    FROM events
)
SELECT
    account_id,
    CAST(sum(CASE WHEN with_tools THEN 1 ELSE 0 END) AS DOUBLE) AS tool_requests,
    sum(CASE WHEN with_tools THEN 1 ELSE 0 END) / (count(*) + 5.0) AS tool_request_share,
    CAST(count(DISTINCT schema_hash) AS DOUBLE) AS distinct_tool_schemas,
    CASE WHEN sum(CASE WHEN with_tools THEN 1 ELSE 0 END) >= 3
        THEN count(DISTINCT schema_hash) / CAST(sum(CASE WHEN with_tools THEN 1 ELSE 0 END) AS DOUBLE)
    END AS tool_schema_novelty,
    avg(tools_sent) AS mean_tool_count,
    sum(CASE WHEN finish_reason = 'tool_use' THEN 1 ELSE 0 END) / (count(*) + 5.0) AS tool_use_finish_share
FROM r
GROUP BY account_id
