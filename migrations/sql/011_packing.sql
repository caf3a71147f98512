-- Prompt packing (submit --pack): several records in one request, answered as a JSON array of {index, answer}.
--
-- packs holds, per batch file (keyed by its sha256, as request_ids), the pack size, the endpoint and the answer
-- schema of one record that its requests asked for; packed_records maps each item of a packed request (its
-- custom_id and index 1..N) to the record's own custom_id and its line among the records of the batch file (the
-- input_line of its result row). The submitter writes both before the batch is created, so the loader never
-- guesses which record an answer belongs to; a resubmission writes its own.
--
-- results.packed_custom_id is the custom_id of the packed request a record's row was unpacked from; null for rows
-- of unpacked requests. A packed request's result becomes one row per record, under the record's custom_id.

alter table {{.schema}}.results add column packed_custom_id text;

-- How many packed records of a loaded batch got a packed_answer_* error row (null for a batch of unpacked
-- requests): a completed batch with any is a resubmission candidate, their records sent again in smaller packs.
alter table {{.schema}}.batches add column packed_failed integer;

create table {{.schema}}.packs (
	spool_sha256  text primary key,
	endpoint      text not null,
	pack_size     integer not null check (pack_size > 0),
	answer_schema jsonb not null,
	created_at    timestamptz not null default now()
);

create table {{.schema}}.packed_records (
	spool_sha256     text not null,
	packed_custom_id text not null,
	item_index       integer not null check (item_index > 0),
	custom_id        text not null,
	line             bigint not null,
	primary key (spool_sha256, packed_custom_id, item_index)
);

-- final_results gains packed_custom_id, as its last column.
create or replace view {{.schema}}.final_results as
select distinct on (coalesce(b.root_batch_id, b.batch_id), r.custom_id)
       coalesce(b.root_batch_id, b.batch_id) as root_batch_id, r.batch_id, r.custom_id, r.input_line, r.status_code, r.response, r.error, r.loaded_at,
       b.attempt, r.packed_custom_id
from {{.schema}}.results r
join {{.schema}}.batches b on b.batch_id = r.batch_id
order by coalesce(b.root_batch_id, b.batch_id), r.custom_id, b.attempt desc;

---- create above / drop below ----

drop view {{.schema}}.final_results;
create view {{.schema}}.final_results as
select distinct on (coalesce(b.root_batch_id, b.batch_id), r.custom_id)
       coalesce(b.root_batch_id, b.batch_id) as root_batch_id, r.batch_id, r.custom_id, r.input_line, r.status_code, r.response, r.error, r.loaded_at,
       b.attempt
from {{.schema}}.results r
join {{.schema}}.batches b on b.batch_id = r.batch_id
order by coalesce(b.root_batch_id, b.batch_id), r.custom_id, b.attempt desc;
drop table {{.schema}}.packed_records;
drop table {{.schema}}.packs;
alter table {{.schema}}.batches drop column packed_failed;
alter table {{.schema}}.results drop column packed_custom_id;
