-- Ledger hardening (issue 10): no event can stop the writer, no two events share an id.
--
-- Event ids. From now on the writer builds '<type>|<reservation_id>|<created ms>', plus
-- '|<refund_id>' for a refund and '|<expires_at ms>' for an extend. '|' is not in the id
-- alphabet (servicekit/validation.py) and the writer checks every id against it, so an id
-- splits back into its parts one way only. The old form '<type>:<rid>@<created>[/<refund_id>]'
-- was ambiguous ('@' and '/' are legal in ids): two refunds could get the same id, and the
-- second was dropped as a re-delivery. Old rows keep their old ids: history is not rewritten.
--
-- created_ms (the reservation's creation time, the event's `c` field) joins a reservation's
-- events by (org, reservation_id, created_ms) with no string surgery on ids; for old rows it is
-- read back from the old id here (the digits after the last '@', the refund id taken off first).
--
-- Bounded keys. spend_daily was keyed by its dimension values, up to 256 characters each and
-- four bytes a character: a commit with long multibyte values made a key too large for its
-- btree index, and the writer retried that batch forever. Rollups are now keyed by a SHA-256 of
-- their dimensions (dims_hash); the dimensions stay columns for reports. Every other key of the
-- ledger tables is made of ids of at most 128 bytes, checked below (not validated on old rows:
-- the API never let a longer id through).
--
-- ledger_dead_letters: outbox entries the writer could not read ('malformed') or PostgreSQL
-- refused to store ('rejected'), with the entry as it was and the error, so that one bad event
-- never holds up the others and a person can see it, fix the cause and requeue it
-- (`budgetctl ledger dead-letters`, `budgetctl ledger requeue`).

ALTER TABLE ledger_events DROP CONSTRAINT ledger_events_type_check;
ALTER TABLE ledger_events ADD CONSTRAINT ledger_events_type_check
    CHECK (type IN ('reserve', 'commit', 'release', 'expire', 'refund', 'extend'));

ALTER TABLE ledger_events ADD COLUMN created_ms bigint;
UPDATE ledger_events
SET created_ms = coalesce(
    substring(
        left(event_id, char_length(event_id)
                       - CASE WHEN refund_id <> '' THEN char_length(refund_id) + 1 ELSE 0 END)
        FROM '@([0-9]+)$')::bigint,
    0);
ALTER TABLE ledger_events ALTER COLUMN created_ms SET NOT NULL;

ALTER TABLE ledger_events ADD CONSTRAINT ledger_events_ids_bounded CHECK (
    octet_length(org) <= 128 AND octet_length(reservation_id) <= 128
    AND octet_length(refund_id) <= 128 AND octet_length(event_id) <= 320) NOT VALID;


-- SHA-256 of a text's UTF-8 bytes. IMMUTABLE although convert_to is only STABLE: its result
-- depends on nothing but its arguments and the database encoding, which never changes.
CREATE FUNCTION ledger_sha256(value text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT sha256(convert_to(value, 'UTF8')) $$;

-- A rollup's key: jsonb text is canonical (keys sorted, no duplicates, strings escaped), so
-- equal dimension sets give equal digests and different ones different texts.
CREATE FUNCTION ledger_dims_hash(team text, project text, "user" text, provider text,
                                 model text, tags jsonb) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ledger_sha256(jsonb_build_array(team, project, "user", provider, model, tags)::text) $$;

ALTER TABLE spend_daily ADD COLUMN dims_hash bytea NOT NULL
    GENERATED ALWAYS AS (ledger_dims_hash(team, project, "user", provider, model, tags)) STORED;
ALTER TABLE spend_daily DROP CONSTRAINT spend_daily_pkey;
ALTER TABLE spend_daily ADD PRIMARY KEY (org, day, dims_hash);


CREATE TABLE ledger_dead_letters (
    id               bigserial   PRIMARY KEY,
    org              text        NOT NULL,
    -- the entry's id in the org's stream when it failed (a requeued entry gets a new one)
    stream_id        text        NOT NULL,
    -- '' when the entry could not be read
    event_id         text        NOT NULL DEFAULT '',
    reason           text        NOT NULL CHECK (reason IN ('malformed', 'rejected')),
    -- the stream entry's fields as a JSON object, exactly as the script wrote them
    entry            text        NOT NULL,
    entry_hash       bytea       NOT NULL GENERATED ALWAYS AS (ledger_sha256(entry)) STORED,
    error            text        NOT NULL,
    first_failed_at  timestamptz NOT NULL DEFAULT now(),
    last_failed_at   timestamptz NOT NULL DEFAULT now(),
    -- more than 1: the entry was delivered again (a writer died before acknowledging it)
    failures         integer     NOT NULL DEFAULT 1,
    UNIQUE (org, stream_id, entry_hash)
);
CREATE INDEX ledger_dead_letters_by_org ON ledger_dead_letters (org, id);
