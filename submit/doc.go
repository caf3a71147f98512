// Package submit turns streams of records into OpenAI Batch API batches: it reads JSON Lines or text, builds and
// checks request lines, cuts them into batch files no larger than the API allows, spools each file to disk,
// uploads it streamed from the spool file, creates the batch, and emits one JSON line per batch.
//
// It needs no database. What makes it safe to re-run is the intent journal kept beside each spool file: pending,
// then uploaded with the file ID, then created with the batch ID. A run finishes the unfinished intents it finds,
// reconciling with the batch list before a create that may already have happened, so a batch is never created
// twice for the same spool file.
package submit
