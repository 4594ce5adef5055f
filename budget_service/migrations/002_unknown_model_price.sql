-- A budget may opt in to a fallback price for models the catalog does not know
-- (nano-USD per million tokens; both NULL: such a token Reserve is refused).

ALTER TABLE budgets
    ADD COLUMN unknown_input_nanos_per_million  bigint
        CHECK (unknown_input_nanos_per_million >= 0),
    ADD COLUMN unknown_output_nanos_per_million bigint
        CHECK (unknown_output_nanos_per_million >= 0),
    ADD CONSTRAINT unknown_model_price_both_or_neither CHECK (
        (unknown_input_nanos_per_million IS NULL) = (unknown_output_nanos_per_million IS NULL)
    );
