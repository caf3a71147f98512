-- The batch-ID table and the results table: a stable contract for downstream consumers.
-- Later migrations may add columns; they never rename or drop these.

create table {{.schema}}.batches (
    batch_id          text primary key,
    status            text not null,
    endpoint          text,
    model             text,
    input_file_id     text,
    output_file_id    text,
    error_file_id     text,
    request_total     integer not null default 0,
    request_completed integer not null default 0,
    request_failed    integer not null default 0,
    metadata          jsonb not null default '{}'::jsonb,
    source            text,
    spool_sha256      text,
    errors            jsonb,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    ended_at          timestamptz,
    results_loaded_at timestamptz
);

-- The poller's round: batches still in flight.
create index batches_in_flight_idx on {{.schema}}.batches (created_at)
    where status not in ('completed', 'failed', 'expired', 'cancelled');

-- Ended batches whose results are not loaded yet.
create index batches_unloaded_idx on {{.schema}}.batches (ended_at)
    where ended_at is not null and results_loaded_at is null;

-- Reconciliation of a submission by the sha256 of its spool file.
create index batches_spool_sha256_idx on {{.schema}}.batches (spool_sha256);

create table {{.schema}}.results (
    batch_id    text not null,
    custom_id   text not null,
    input_line  integer,
    status_code integer,
    response    jsonb,
    error       jsonb,
    loaded_at   timestamptz not null default now(),
    primary key (batch_id, custom_id)
);

-- Exports in input order, batch by batch.
create index results_input_order_idx on {{.schema}}.results (batch_id, input_line);

-- Exports of what arrived since a point in time.
create index results_loaded_at_idx on {{.schema}}.results (loaded_at);

---- create above / drop below ----

drop table {{.schema}}.results;
drop table {{.schema}}.batches;
