-- name: prompt_distribution
-- family: distribution (PRADA / MMD style)
-- description: How far an account's prompts over the last 24 hours
--   (every hour) are from the rest of the traffic in the same window, in
--   the spirit of the MMD detector over ~1,500-query windows (SIGNALS.md):
--   most traffic is benign, so the other accounts of the partition are the
--   benign reference. Rolled up from `prompt_hist`: per property (prompt
--   length, turns, chain-of-thought elicitation, topic group) the total
--   variation distance between the account's histogram and that of every
--   other account of the window together (leave-one-out, so a large
--   account does not pull the reference towards itself), averaged over the
--   four properties: 0 = the same mix as everyone else, 1 = nothing in
--   common. NULL when the account or the reference has fewer than 200
--   requests in the window (a histogram of fewer is mostly noise).
--   The reference is the worker's partition (accounts are spread over
--   partitions by key), so the value depends a little on the partitioning.
-- input: job:prompt_hist
-- key: account_id
-- window: hop 1d slide 1h
-- lateness: 0s
-- panes: sum
WITH acct AS (
    SELECT
        account_id,
        sum(hist_tokens_lt128) AS t0,
        sum(hist_tokens_128_511) AS t1,
        sum(hist_tokens_512_2047) AS t2,
        sum(hist_tokens_ge2048) AS t3,
        sum(hist_single_turn) AS u0,
        sum(hist_multi_turn) AS u1,
        sum(hist_cot_low) AS c0,
        sum(hist_cot_mid) AS c1,
        sum(hist_cot_high) AS c2,
        sum(hist_topic_stem) AS p0,
        sum(hist_topic_coding) AS p1,
        sum(hist_topic_chat) AS p2,
        sum(hist_topic_other) AS p3,
        sum(hist_tokens_lt128 + hist_tokens_128_511 + hist_tokens_512_2047 + hist_tokens_ge2048) AS n
    FROM prompt_hist
    GROUP BY account_id
),
-- The reference: every other account of the window, from the window's
-- totals (`sum(...) OVER ()`). Not a CROSS JOIN with a one-row totals
-- table: DataFusion's cross join repeats each row of its build side
-- against every batch of the other, and it built one single-row batch per
-- account (30 us each, most of this job's time).
ref AS (
    SELECT
        account_id, t0, t1, t2, t3, u0, u1, c0, c1, c2, p0, p1, p2, p3, n,
        sum(t0) OVER () - t0 AS r_t0, sum(t1) OVER () - t1 AS r_t1,
        sum(t2) OVER () - t2 AS r_t2, sum(t3) OVER () - t3 AS r_t3,
        sum(u0) OVER () - u0 AS r_u0, sum(u1) OVER () - u1 AS r_u1,
        sum(c0) OVER () - c0 AS r_c0, sum(c1) OVER () - c1 AS r_c1, sum(c2) OVER () - c2 AS r_c2,
        sum(p0) OVER () - p0 AS r_p0, sum(p1) OVER () - p1 AS r_p1,
        sum(p2) OVER () - p2 AS r_p2, sum(p3) OVER () - p3 AS r_p3,
        nullif(sum(n) OVER () - n, 0) AS r_n
    FROM acct
)
SELECT
    account_id,
    CASE WHEN n >= 200 AND r_n >= 200 THEN (
        0.5 * (abs(t0 / n - r_t0 / r_n) + abs(t1 / n - r_t1 / r_n)
             + abs(t2 / n - r_t2 / r_n) + abs(t3 / n - r_t3 / r_n))
      + 0.5 * (abs(u0 / n - r_u0 / r_n) + abs(u1 / n - r_u1 / r_n))
      + 0.5 * (abs(c0 / n - r_c0 / r_n) + abs(c1 / n - r_c1 / r_n) + abs(c2 / n - r_c2 / r_n))
      + 0.5 * (abs(p0 / n - r_p0 / r_n) + abs(p1 / n - r_p1 / r_n)
             + abs(p2 / n - r_p2 / r_n) + abs(p3 / n - r_p3 / r_n))
    ) / 4.0 END AS prompt_distribution_distance
FROM ref
