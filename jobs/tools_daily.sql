-- name: tools_daily
-- family: reasoning & tools
-- description: Tool-definition harvesting over a UTC day, rolled up from
--   the 10-minute `tools` windows: requests with tool definitions, and tool
--   schemas seen. tool_schemas_1d sums each window's distinct schemas, an
--   upper bound of the day's distinct schemas (a schema used in several
--   windows counts once per window; exact only if no schema recurs across
--   windows): an application reuses the same few schemas all day (about
--   one per active window), a harvesting campaign keeps adding new ones.
-- input: job:tools
-- key: account_id
-- window: tumble 1d
-- lateness: 0s
SELECT
    account_id,
    sum(tool_requests) AS tool_requests_1d,
    sum(distinct_tool_schemas) AS tool_schemas_1d
FROM tools
GROUP BY account_id
