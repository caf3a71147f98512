-- The estimate of a batch's cost made before it was sent (batchctl submit's estimated_cost_usd: the estimated prompt
-- tokens and the bound of the output tokens at the price table's Batch API prices), kept beside cost_usd so that
-- batchctl cost can report how far the estimate is from what the batch cost.

alter table {{.schema}}.batches add column estimated_cost_usd numeric;

---- create above / drop below ----

alter table {{.schema}}.batches drop column estimated_cost_usd;
