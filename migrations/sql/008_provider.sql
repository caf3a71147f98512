-- Which batch API a batch lives at: openai, azure or anthropic. Existing rows were all OpenAI's. The results table
-- stays one row per request whatever the provider; api_custom_id is the custom_id sent to the API when it had to
-- differ from the user's own (Anthropic allows only ^[a-zA-Z0-9_-]{1,64}$), null otherwise. request_ids keeps that
-- mapping from the moment a batch file is sent, keyed by the file's sha256, so the loader can put results back under
-- the user's IDs, and input lines, whoever loads them.

alter table {{.schema}}.batches add column provider text not null default 'openai';

alter table {{.schema}}.batch_queue add column provider text not null default 'openai';

alter table {{.schema}}.results add column api_custom_id text;

create table {{.schema}}.request_ids (
	spool_sha256  text not null,
	api_custom_id text not null,
	custom_id     text not null,
	line          bigint not null,
	primary key (spool_sha256, api_custom_id)
);

---- create above / drop below ----

drop table {{.schema}}.request_ids;
alter table {{.schema}}.results drop column api_custom_id;
alter table {{.schema}}.batch_queue drop column provider;
alter table {{.schema}}.batches drop column provider;
