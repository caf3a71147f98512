// Package jsonl reads and writes the JSON Lines of the OpenAI Batch API: input records, request lines and the
// output and error lines of finished batches.
//
// It is pure streaming parsing and encoding: it opens no files, keeps no state between lines beyond what a reader
// needs, and knows nothing of batches, uploads or terminals. Readers hand out slices into their own buffers, so a
// caller that keeps a line past the next call must copy it.
package jsonl
