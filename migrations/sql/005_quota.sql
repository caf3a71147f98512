-- Placeholder for the quota branch's migration 005 (005_quota.sql), so that tern, which refuses a gap in the
-- sequence, applies 006_cost.sql on this branch. A merge with the quota branch takes that branch's file.

select 1;

---- create above / drop below ----

select 1;
