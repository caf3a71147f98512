// Package batchapi makes the OpenAI Batch API calls whose repetition costs money or whose loss loses data, the same
// way for every caller (the submitter and the resubmission of failed requests):
//
//   - Upload streams a request file from disk as the multipart body of POST /v1/files, retrying from the start of
//     the file on transient errors; openai-go's Files.New would build the whole body in memory first.
//   - Create creates a batch, and before any attempt that may repeat one that happened (a lost answer, a crash),
//     looks for it in the batch list by its metadata; SDK retries are off there, since they would create blindly.
//   - Classify sorts the errors of API calls into transient, authentication, not found, permanent and local (this
//     machine's files, which no retry mends).
//   - Row maps the API's batch object onto a row of the batch-ID table.
package batchapi
