-- name: identity
-- family: identity and clusters
-- description: Who is asking. shared_payment_accounts counts the accounts
--   (as of the window's end) paying with the same instrument, for unverified
--   accounts only: hydra clusters spread one campaign over many cheap
--   accounts on one card, while verified organisations legitimately share
--   one. Also account age, discounted sign-up paths and billing/declared
--   country mismatch.
-- input: events
-- key: account_id
-- window: tumble 10m
-- lateness: 0s
SELECT
    account_id,
    max(CASE WHEN verified THEN 0 ELSE payment_peers END) AS shared_payment_accounts,
    max(account_age_days) AS account_age_days,
    max(CASE WHEN signup_channel IN ('education', 'research', 'startup') THEN 1 ELSE 0 END) AS discounted_signup,
    max(CASE WHEN billing_country IS NOT NULL AND country IS NOT NULL AND billing_country <> country
        THEN 1 ELSE 0 END) AS geo_mismatch
FROM events
GROUP BY account_id
