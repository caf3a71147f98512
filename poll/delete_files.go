package poll

import (
	"cmp"
	"context"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/files"
	"github.com/batchctl/batchctl/provider"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
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
	row, err := d.store.GetBatch(ctx, batchID)
	if err != nil {
		log.Warn("files not deleted; batchctl files prune deletes them", "error", err)
		return
	}
	prov, ok := d.providers[cmp.Or(row.Provider, provider.OpenAI)].(*oaiprov.Provider)
	if !ok {
		return // a provider without files (Anthropic), or without credentials here
	}
	p := &files.Pruner{Store: d.store, API: files.OpenAI{Client: prov.C.API}, Logger: log, By: fileDeleter}
	st, err := p.Prune(ctx, files.PruneOptions{MaxAttempts: maxAttempts, RootBatchID: batchID, Provider: prov.Name()}, nil)
	if n := st.Deleted + st.Gone; n > 0 {
		log.Info("deleted API files no batch needs any more", "files", n, "already_gone", st.Gone)
	}
	if err != nil && ctx.Err() == nil {
		log.Warn("files not deleted; batchctl files prune deletes them", "failed", st.Failed, "error", batchapi.Message(err))
	}
}
