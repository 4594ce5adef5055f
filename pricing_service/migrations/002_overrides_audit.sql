-- Who set an org's price override and when it last changed (SetPriceOverride replaces in place).
ALTER TABLE price_overrides
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN updated_by text        NOT NULL DEFAULT '';

-- Exactly one of a discount or explicit prices; explicit prices are for one model.
ALTER TABLE price_overrides
    ADD CONSTRAINT price_overrides_one_kind
        CHECK ((discount_percent IS NULL) <> (prices IS NULL)),
    ADD CONSTRAINT price_overrides_prices_for_a_model
        CHECK (prices IS NULL OR model <> ''),
    ADD CONSTRAINT price_overrides_model_has_provider
        CHECK (model = '' OR provider <> '');
