-- What each batch cost: cached and reasoning tokens summed from its loaded results (cached tokens are part of
-- prompt_tokens, reasoning tokens part of completion_tokens, as the API reports them), and its cost in USD at the
-- Batch API prices of the poller's price table, exact to the token (12 decimals). All three are set in the load's
-- transaction, so each batch's cost is counted exactly once. cost_usd is null when nothing was loaded with usage or
-- the model has no price.

alter table {{.schema}}.batches
    add column cached_tokens    bigint,
    add column reasoning_tokens bigint,
    add column cost_usd         numeric;

---- create above / drop below ----

alter table {{.schema}}.batches
    drop column cached_tokens, drop column reasoning_tokens, drop column cost_usd;
