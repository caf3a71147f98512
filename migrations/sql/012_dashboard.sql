-- The dashboard of batchctl serve pages through the batch-ID table by what it sorts on: batches in flight oldest
-- first (created_at, batch_id), ended batches latest first (ended_at, batch_id), and its filter lists the sources.
-- Each page is then a range scan of one index in its order, with no sort, so a page costs the same with 10 000
-- batches as with 10. batches_in_flight_idx gains batch_id, the tie-breaker of the page cursor; the poller's round,
-- which sorts the same way, uses it as before.

drop index {{.schema}}.batches_in_flight_idx;
create index batches_in_flight_idx on {{.schema}}.batches (created_at, batch_id)
    where status not in ('completed', 'failed', 'expired', 'cancelled');

create index batches_ended_idx on {{.schema}}.batches (ended_at desc, batch_id desc) where ended_at is not null;

create index batches_source_idx on {{.schema}}.batches (source, ended_at desc);

---- create above / drop below ----

drop index {{.schema}}.batches_source_idx;
drop index {{.schema}}.batches_ended_idx;
drop index {{.schema}}.batches_in_flight_idx;
create index batches_in_flight_idx on {{.schema}}.batches (created_at)
    where status not in ('completed', 'failed', 'expired', 'cancelled');
