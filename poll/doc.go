// Package poll is batchctl's daemon: River workers that track every batch in Postgres until it ends and then load
// its output and error files into the results table, one row per request.
//
// Jobs (all in the store.QueueBatches queue, unique per batch):
//
//   - poll: one per batch; refreshes the row when no bulk refresh has, and snoozes with an interval that grows with
//     the batch's age. Snoozes never count as attempts.
//   - load: queued by the store in the same transaction as a batch's terminal status; streams the input file (for
//     input_line), the output file and the error file into one COPY transaction, within a deadline of its own:
//     Config.LoadTimeout, extended to the files' size at MinLoadRate. A completed batch with answered requests and
//     no output file yet is read again, the load snoozing, until Config.OutputGrace after its end.
//   - refresh (periodic, leader only): reads GET /v1/batches pages to update every batch in flight, about N/100
//     calls for N batches.
//   - sweep (periodic, leader only): re-enqueues poll and load jobs for batches that lost theirs.
//   - admit (periodic, leader only, and once at start): an admission pass (admission.Admitter) over every model
//     with batches in the admission queue. A load runs one for its batch's model as soon as it commits, so the
//     room the batch leaves in its model's quota is used at once.
//
// Several daemons may share a database: River hands each job to one of them, and a daemon killed at any point
// leaves work that another (or its restart) finishes. The lifeline decides when: each daemon registers in the
// pollers table and holds an advisory lock on a database session of its own (store.Lifeline); every daemon looks,
// at start and every Config.LifelineInterval, for registered pollers whose lock is free, and makes their running
// jobs available again. A live daemon's jobs are never taken, however long they run; River's own rescue
// (Config.RescueAfter) is only a backstop.
package poll
