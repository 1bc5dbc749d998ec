-- The model's share of an organisation's daily AgenticOps budget: the calls, tokens and time
-- that investigations' synthesis spent that UTC day (see investigations::synthesis).
ALTER TABLE investigation_budgets
    ADD COLUMN model_calls integer NOT NULL DEFAULT 0,
    ADD COLUMN model_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN model_milliseconds bigint NOT NULL DEFAULT 0;
