-- The price catalog: models, and their prices as versions that are never rewritten.

CREATE TABLE price_models (
    id                bigserial PRIMARY KEY,
    provider          text   NOT NULL,
    model             text   NOT NULL,
    mode              text   NOT NULL DEFAULT 'chat',
    max_input_tokens  bigint,
    max_output_tokens bigint,
    UNIQUE (provider, model)
);

-- Other names a model is called by: dated snapshots, provider prefixes, host ids.
CREATE TABLE price_aliases (
    alias    text   NOT NULL,
    model_id bigint NOT NULL REFERENCES price_models (id) ON DELETE CASCADE,
    PRIMARY KEY (alias, model_id)
);
CREATE INDEX price_aliases_by_alias ON price_aliases (alias);

-- One row per price change. `version` is the catalog's version: it orders every change, and
-- WatchPrices subscribers resume from it. Prices are USD per million tokens, exact.
CREATE TABLE price_versions (
    version        bigserial   PRIMARY KEY,
    model_id       bigint      NOT NULL REFERENCES price_models (id),
    effective_from timestamptz NOT NULL,
    input          numeric,
    output         numeric,
    cached_input   numeric,
    cache_write    numeric,
    cache_write_1h numeric,
    reasoning      numeric,
    request_fee    numeric,
    batch_input    numeric,
    batch_output   numeric,
    tiers          jsonb       NOT NULL DEFAULT '[]',
    fingerprint    text        NOT NULL,
    source         text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (input >= 0 AND output >= 0)
);
CREATE INDEX price_versions_by_model ON price_versions (model_id, effective_from DESC, version DESC);

-- Negotiated prices of one org: a discount on every model of a provider (or all), or explicit
-- prices for one model.
CREATE TABLE price_overrides (
    id               bigserial   PRIMARY KEY,
    org              text        NOT NULL,
    provider         text        NOT NULL DEFAULT '',
    model            text        NOT NULL DEFAULT '',
    discount_percent numeric     CHECK (discount_percent >= 0 AND discount_percent <= 100),
    prices           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org, provider, model)
);

-- What each source last delivered, so an unchanged source is skipped (ETag, content hash).
CREATE TABLE price_sources (
    source         text        PRIMARY KEY,
    etag           text,
    content_sha256 text,
    models         integer     NOT NULL DEFAULT 0,
    fetched_at     timestamptz NOT NULL DEFAULT now()
);
