-- A model's aliases by model id: WatchPrices sends each version with its aliases (one query
-- for a whole page of versions), and recording a price replaces its model's aliases.
CREATE INDEX price_aliases_by_model ON price_aliases (model_id);
