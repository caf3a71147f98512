-- Token usage summed from a batch's loaded results (set in the load's transaction, so a reload never doubles it),
-- and the lineage of resubmissions: a child batch carries the requests of its parent that failed for a retryable
-- cause (batch_expired, 5xx, rate limits) or the whole parent after token_limit_exceeded.

alter table {{.schema}}.batches
    add column prompt_tokens     bigint,
    add column completion_tokens bigint,
    add column total_tokens      bigint,
    add column root_batch_id     text,
    add column parent_batch_ids  text[],
    add column attempt           integer not null default 1,
    add column resubmitted_as    text,
    add column resubmitted_at    timestamptz,
    add column resubmit_requests integer;

update {{.schema}}.batches set root_batch_id = batch_id where root_batch_id is null;

-- Every batch of one lineage shares root_batch_id: its own batch_id for an original (batchctl always writes it; a
-- row inserted by hand without one counts as its own root).
create index batches_root_idx on {{.schema}}.batches (root_batch_id);

-- The final outcome of each request across attempts: the row of the latest attempt that has one. A resubmission
-- only ever carries requests that failed before, so the latest row is the one that counts.
create view {{.schema}}.final_results as
select distinct on (coalesce(b.root_batch_id, b.batch_id), r.custom_id)
       coalesce(b.root_batch_id, b.batch_id) as root_batch_id, r.batch_id, r.custom_id, r.input_line, r.status_code, r.response, r.error, r.loaded_at,
       b.attempt
from {{.schema}}.results r
join {{.schema}}.batches b on b.batch_id = r.batch_id
order by coalesce(b.root_batch_id, b.batch_id), r.custom_id, b.attempt desc;

---- create above / drop below ----

drop view {{.schema}}.final_results;
drop index {{.schema}}.batches_root_idx;
alter table {{.schema}}.batches
    drop column prompt_tokens, drop column completion_tokens, drop column total_tokens,
    drop column root_batch_id, drop column parent_batch_ids, drop column attempt,
    drop column resubmitted_as, drop column resubmitted_at, drop column resubmit_requests;
