-- name: prada
-- family: distribution (PRADA / MMD style)
-- description: PRADA-style distances between an account's successive
--   prompts (Juuti et al. 2019): prompt_fingerprint is a 64-bit SimHash,
--   so the Hamming distance between two fingerprints (bits that differ,
--   0-64) measures how different two prompts are; unrelated prompts differ
--   in about 32 bits. Extraction that walks the input space in small
--   steps (perturbing one seed prompt after another) keeps successive
--   prompts a few bits apart. successor_hamming_mean is the mean distance
--   between each fingerprinted prompt and the previous one of the window
--   (by event time, then request id; prompts without a fingerprint are
--   skipped), NULL under 15 such pairs like interarrival_cv;
--   near_successor_share the share of those pairs at most 3 bits apart
--   (exact re-sends included), smoothed with 5 pseudo-pairs, NULL without
--   any pair. DataFusion has no bit-count function: the popcount of the
--   XOR is computed with the classic SWAR steps (masks 0x5555..., 0x3333...,
--   0x0f0f..., multiplier 0x0101..., written in decimal; arithmetic wraps
--   in 64 bits, as the steps require).
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
WITH seq AS (
    SELECT
        account_id,
        prompt_fingerprint
            ^ lag(prompt_fingerprint) OVER (PARTITION BY account_id ORDER BY event_time, request_id) AS x
    FROM events
    WHERE prompt_fingerprint IS NOT NULL
),
s1 AS (
    SELECT account_id, x - ((x >> 1) & 6148914691236517205) AS v FROM seq WHERE x IS NOT NULL
),
s2 AS (
    SELECT account_id, (v & 3689348814741910323) + ((v >> 2) & 3689348814741910323) AS v FROM s1
),
pairs AS (
    SELECT account_id, (((v + (v >> 4)) & 1085102592571150095) * 72340172838076673) >> 56 AS bits
    FROM s2
),
per_account AS (
    SELECT
        account_id,
        count(*) AS n,
        avg(CAST(bits AS DOUBLE)) AS mean_bits,
        sum(CASE WHEN bits <= 3 THEN 1 ELSE 0 END) AS near
    FROM pairs
    GROUP BY account_id
),
accounts AS (
    SELECT DISTINCT account_id FROM events
)
SELECT
    a.account_id,
    CASE WHEN p.n >= 15 THEN p.mean_bits END AS successor_hamming_mean,
    p.near / (p.n + 5.0) AS near_successor_share
FROM accounts a
LEFT JOIN per_account p ON p.account_id = a.account_id
