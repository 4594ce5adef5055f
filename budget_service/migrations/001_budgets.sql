-- Budget configuration (the source of truth Redis is reconciled from) and its audit trail.

CREATE TABLE budgets (
    -- A budget's identity in Redis: a deleted and re-created budget gets a new uid, so holds
    -- and counters of the old one can never leak into the new one.
    uid                      bigserial PRIMARY KEY,
    org                      text        NOT NULL,
    id                       text        NOT NULL,
    selector                 jsonb       NOT NULL DEFAULT '{}',
    limit_nanos              bigint      NOT NULL CHECK (limit_nanos >= 0),
    period                   smallint    NOT NULL,
    timezone                 text        NOT NULL,
    mode                     smallint    NOT NULL,
    alert_thresholds_percent integer[]   NOT NULL,
    overdraft_nanos          bigint      NOT NULL DEFAULT 0 CHECK (overdraft_nanos >= 0),
    version                  bigint      NOT NULL,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org, id)
);

CREATE TABLE budget_audit (
    id        bigserial   PRIMARY KEY,
    org       text        NOT NULL,
    budget_id text        NOT NULL,
    action    text        NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    actor     text        NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    before    jsonb,
    after     jsonb
);

CREATE INDEX budget_audit_by_budget ON budget_audit (org, budget_id, at);
