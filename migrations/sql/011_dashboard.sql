-- The dashboard of batchctl serve pages through the batch-ID table by what it sorts on: batches in flight by
-- created_at (batches_in_flight_idx), ended batches newest first by ended_at, and its filter lists the sources.
-- Each page is a keyset scan of one of these indexes, so a page costs the same with 10 000 batches as with 10.

create index batches_ended_idx on {{.schema}}.batches (ended_at desc, batch_id desc) where ended_at is not null;

create index batches_source_idx on {{.schema}}.batches (source, ended_at desc);

---- create above / drop below ----

drop index {{.schema}}.batches_source_idx;
drop index {{.schema}}.batches_ended_idx;
