-- The API files batchctl deleted (batchctl files prune, poll --delete-files): the input files of batches whose
-- results are loaded and that nothing will read again, and the output and error files of loaded batches. A row is
-- written after the API confirmed the delete (or answered 404: the file was gone already), so a re-run never sends
-- the DELETE again, and batchctl files shows the file as deleted. A file served by several batches (one input file
-- tracked under two batches) has one row, naming the batch it was deleted for.

create table {{.schema}}.deleted_files (
    file_id    text primary key,
    batch_id   text not null,
    role       text not null check (role in ('input', 'output', 'error')),
    deleted_at timestamptz not null default now(),
    gone       boolean not null default false, -- the API answered 404: expired, or deleted by someone else
    deleted_by text not null                   -- 'files prune' or 'poll'
);

---- create above / drop below ----

drop table {{.schema}}.deleted_files;
