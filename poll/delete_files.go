package poll

import (
	"context"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/files"
)

// fileDeleter names the poller in deleted_files.deleted_by.
const fileDeleter = "poll"

// deleteFiles deletes, with Config.DeleteFiles, the API files of batchID and of the lineage it is the root of that no
// batch needs any more (see files.Pruner). It runs after a load commits, for the loaded batch's root (its output and
// error files, and the inputs its lineage no longer reads), and after a resubmission is decided, for the parent (its
// input file, unless the lineage still reads it). Without Resubmit, the input of a batch that could be resubmitted
// is kept for batchctl resubmit. A failure is logged and never fails the job: the files stay for the lineage's next
// pass or for batchctl files prune.
func (d *Daemon) deleteFiles(ctx context.Context, batchID string) {
	if !d.cfg.DeleteFiles {
		return
	}
	maxAttempts := 0
	if d.cfg.Resubmit {
		maxAttempts = d.cfg.MaxAttempts
	}
	log := d.log.With("batch_id", batchID)
	p := &files.Pruner{Store: d.store, API: files.OpenAI{Client: &d.api}, Logger: log, By: fileDeleter}
	st, err := p.Prune(ctx, files.PruneOptions{MaxAttempts: maxAttempts, RootBatchID: batchID}, nil)
	if n := st.Deleted + st.Gone; n > 0 {
		log.Info("deleted API files no batch needs any more", "files", n, "already_gone", st.Gone)
	}
	if err != nil && ctx.Err() == nil {
		log.Warn("files not deleted; batchctl files prune deletes them", "failed", st.Failed, "error", batchapi.Message(err))
	}
}
