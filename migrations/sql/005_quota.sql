-- Quota-aware admission. The org's enqueued-token limit per model lives in quotas, shared by every submitter and
-- poller. A batch whose model has a quota is not created by whoever uploaded its file: the upload is queued in
-- batch_queue, and one admitter at a time per model (a session advisory lock) creates queued rows in queue order
-- while the model's estimated tokens in flight stay within the limit.

create table {{.schema}}.quotas (
    model       text primary key,
    token_limit bigint not null check (token_limit > 0),
    updated_at  timestamptz not null default now()
);

-- batchctl's conservative estimate of a batch's prompt tokens (null when unknown: created outside admission, or
-- before this migration). Admission counts it while the batch is in flight; the load's prompt_tokens calibrate it.
alter table {{.schema}}.batches add column estimated_tokens bigint;

-- An uploaded batch file waiting for admission. state: queued (waiting its turn), creating (its create may have been
-- sent: create_sent_at is when, and an admitter that finds it so searches the batch list before creating again),
-- created (batch_id is its batch, tracked in batches), file_gone (the API lost its input file; a submit that
-- uploads it again puts the row back in the queue).
create table {{.schema}}.batch_queue (
    queue_id         bigserial primary key,
    intent           text not null unique,
    state            text not null default 'queued'
                     check (state in ('queued', 'creating', 'created', 'file_gone')),
    model            text not null,
    endpoint         text not null,
    input_file_id    text not null,
    source           text,
    spool_sha256     text,
    part             integer not null default 0,
    requests         integer not null default 0,
    bytes            bigint not null default 0,
    estimated_tokens bigint not null check (estimated_tokens >= 0),
    metadata         jsonb not null default '{}',
    queued_at        timestamptz not null default now(),
    create_sent_at   timestamptz,
    batch_id         text,
    error            text,
    updated_at       timestamptz not null default now()
);

-- The admitter's scan: per model, the rows waiting (FIFO by queue_id) and those whose create may be under way.
create index batch_queue_admission_idx on {{.schema}}.batch_queue (model, queue_id)
    where state in ('queued', 'creating');

-- From a batch to the queue row it was admitted from (the row's model is the one whose quota it counts against).
create index batch_queue_batch_id_idx on {{.schema}}.batch_queue (batch_id) where batch_id is not null;

---- create above / drop below ----

drop table {{.schema}}.batch_queue;
alter table {{.schema}}.batches drop column estimated_tokens;
drop table {{.schema}}.quotas;
