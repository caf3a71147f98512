-- How many result rows the last load wrote for the batch; consumers compare it with request_total.
alter table {{.schema}}.batches add column results_count integer;

---- create above / drop below ----

alter table {{.schema}}.batches drop column results_count;
