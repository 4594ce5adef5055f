-- The durable ledger: every event the hot path's scripts append to an org's Redis Stream
-- (budget_service/scripts/*.lua), drained here by budget_service/ledger_writer.py.
--
-- ledger_events   append-only, one row per event, unique by (org, event_id): a re-delivered
--                 event (a writer died after inserting, before acknowledging) inserts nothing.
-- ledger_effects  what each event did to each budget's counters: spent in one period, holds.
--                 Reconciliation sums these and compares them with Redis.
-- usage_records   one row per committed request (and one per refund, negative cost), with the
--                 subject's dimensions and tokens by kind: what reports are made of.
-- spend_daily     usage_records summed per UTC day and dimension set; day, week and month
--                 reports read it; hour reports read usage_records.
--
-- Months of data at thousands of events per second: rows are narrow, indexes serve the two
-- access paths (by org and time for reports, by budget and period for reconciliation), and
-- BRIN indexes on time keep scans of old data cheap. Time partitioning can be added later
-- without changing the writer (it inserts through INSERT ... SELECT FROM unnest).


CREATE TABLE ledger_events (
    org             text        NOT NULL,
    event_id        text        NOT NULL,
    type            text        NOT NULL
        CHECK (type IN ('reserve', 'commit', 'release', 'expire', 'refund')),
    reservation_id  text        NOT NULL,
    at              timestamptz NOT NULL,
    -- reserve: the hold; commit: the charge; release / expire: the hold given back;
    -- refund: the amount credited back
    amount_nanos    bigint      NOT NULL,
    -- commit: the hold given back with it
    released_nanos  bigint      NOT NULL DEFAULT 0,
    late            boolean     NOT NULL DEFAULT false,
    subject         jsonb       NOT NULL DEFAULT '{}',
    usage           jsonb,
    price_ref       text        NOT NULL DEFAULT '',
    refund_id       text        NOT NULL DEFAULT '',
    expires_at_ms   bigint      NOT NULL DEFAULT 0,
    fingerprint     text        NOT NULL DEFAULT '',
    budget_uids     bigint[]    NOT NULL DEFAULT '{}',
    latency_ms      integer,
    stream_id       text        NOT NULL,
    written_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, event_id)
);
CREATE INDEX ledger_events_by_reservation ON ledger_events (org, reservation_id);
CREATE INDEX ledger_events_at_brin ON ledger_events USING brin (at);

CREATE TABLE ledger_effects (
    org              text   NOT NULL,
    event_id         text   NOT NULL,
    budget_uid       bigint NOT NULL,
    -- the start (ms) of the budget period the spend delta belongs to; 0 when it changes no spend
    period_start_ms  bigint NOT NULL,
    spent_delta      bigint NOT NULL,
    reserved_delta   bigint NOT NULL,
    PRIMARY KEY (org, event_id, budget_uid)
);
CREATE INDEX ledger_effects_by_budget ON ledger_effects (org, budget_uid, period_start_ms);

CREATE TABLE usage_records (
    org                 text        NOT NULL,
    event_id            text        NOT NULL,
    reservation_id      text        NOT NULL,
    at                  timestamptz NOT NULL,
    -- 'ok', 'late' (committed after its hold expired) or 'refund'
    outcome             text        NOT NULL CHECK (outcome IN ('ok', 'late', 'refund')),
    team                text        NOT NULL DEFAULT '',
    project             text        NOT NULL DEFAULT '',
    "user"              text        NOT NULL DEFAULT '',
    provider            text        NOT NULL DEFAULT '',
    model               text        NOT NULL DEFAULT '',
    tags                jsonb       NOT NULL DEFAULT '{}',
    -- negative for a refund
    cost_nanos          bigint      NOT NULL,
    -- 1 for a commit, 0 for a refund
    requests            integer     NOT NULL,
    input_tokens        bigint      NOT NULL DEFAULT 0,
    output_tokens       bigint      NOT NULL DEFAULT 0,
    cached_input_tokens bigint      NOT NULL DEFAULT 0,
    cache_write_tokens  bigint      NOT NULL DEFAULT 0,
    reasoning_tokens    bigint      NOT NULL DEFAULT 0,
    latency_ms          integer,
    price_ref           text        NOT NULL DEFAULT '',
    PRIMARY KEY (org, event_id)
);
CREATE INDEX usage_records_by_time ON usage_records (org, at);
CREATE INDEX usage_records_at_brin ON usage_records USING brin (at);

CREATE TABLE spend_daily (
    org           text   NOT NULL,
    day           date   NOT NULL,
    team          text   NOT NULL,
    project       text   NOT NULL,
    "user"        text   NOT NULL,
    provider      text   NOT NULL,
    model         text   NOT NULL,
    tags          jsonb  NOT NULL,
    cost_nanos    bigint NOT NULL,
    requests      bigint NOT NULL,
    input_tokens  bigint NOT NULL,
    output_tokens bigint NOT NULL,
    PRIMARY KEY (org, day, team, project, "user", provider, model, tags)
);
