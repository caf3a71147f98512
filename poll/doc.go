// Package poll is batchctl's daemon: River workers that track every batch in Postgres until it ends and then load
// its output and error files into the results table, one row per request.
//
// Jobs (all in the store.QueueBatches queue, unique per batch):
//
//   - poll: one per batch; refreshes the row when no bulk refresh has, and snoozes with an interval that grows with
//     the batch's age. Snoozes never count as attempts.
//   - load: queued by the store in the same transaction as a batch's terminal status; streams the input file (for
//     input_line), the output file and the error file into one COPY transaction.
//   - refresh (periodic, leader only): reads GET /v1/batches pages to update every batch in flight, about N/100
//     calls for N batches.
//   - sweep (periodic, leader only): re-enqueues poll and load jobs for batches that lost theirs.
//
// Several daemons may share a database: River hands each job to one of them, and a daemon killed at any point
// leaves work that another (or its restart) finishes.
package poll
