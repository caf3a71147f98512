-- When each batch's output and error files expire, and the batches whose files expired before they were loaded.
--
-- output_expires_after is the output_expires_after (seconds) the batch was created with, as submit asked; null for
-- the API's default. The API does not echo it in the batch object, so only batchctl's own record knows it.
--
-- output_expires_at is when the output and error files expire, the earlier of the two: the files' own expires_at, as
-- the Files API reports it, read by the load before it downloads them. The anchor of output_expires_after is the
-- file's creation, which the batch object does not report, so the file object is the exact source. A file already
-- gone when first looked for gets the latest it can have expired instead: ended_at plus output_expires_after (or the
-- API's default lifetime). Null while unknown, and for files that never expire (Azure's, by default).
--
-- results_lost_at is set, loudly, when a load found the files expired (404 past output_expires_at) before it had
-- loaded them: the results are lost, results_loaded_at stays null, and no load is queued for the batch again.

alter table {{.schema}}.batches
    add column output_expires_after integer,
    add column output_expires_at    timestamptz,
    add column results_lost_at      timestamptz;

---- create above / drop below ----

alter table {{.schema}}.batches
    drop column output_expires_after, drop column output_expires_at, drop column results_lost_at;
