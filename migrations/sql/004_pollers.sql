-- The pollers alive, for the lifeline: each daemon registers its River client ID here at start and holds a session
-- advisory lock keyed on it for its whole life. A row whose lock any other session can take belongs to a poller
-- whose database session is gone (killed, crashed, host lost): its running jobs are handed back and the row deleted.

create table {{.schema}}.pollers (
    client_id  text primary key,         -- the River client ID, as river_job.attempted_by names it
    hostname   text not null,
    pid        integer not null,
    started_at timestamptz not null default now(),
    locked_at  timestamptz not null default now() -- when the poller last (re)took its lock
);

---- create above / drop below ----

drop table {{.schema}}.pollers;
