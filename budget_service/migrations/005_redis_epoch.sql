-- The data-set epoch: a random id this database writes into Redis (the `ba:epoch` sentinel and
-- `_e` in every budgeted org's config hash), so the service can tell a Redis that lost its data
-- (no epoch) from one that never had any, and fail closed until the data is rebuilt from the
-- ledger (budget_service/config/epoch.py).
--
-- `adopted` is false until a service has put the epoch into the Redis it runs on: the first
-- start after this migration adopts the data Redis already holds instead of rebuilding it.
CREATE TABLE redis_epoch (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch       text        NOT NULL,
    adopted     boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    adopted_at  timestamptz
);
