package submit

import (
	"cmp"
	"context"
	"errors"
	"os"

	"github.com/batchctl/batchctl/provider"
)

// ours reports whether an intent's journal belongs to the API endpoint and account this run talks to. A journal
// written for another one (or by a version that recorded none) is verified with the API: a pending intent has
// nothing there yet and is taken over; an uploaded one is ours when the API knows its file, a created one when
// it knows its batch. A journal taken over is saved with this run's account. Otherwise the journal is left for the
// account it was written for, and the same content makes a new intent here.
func (r *run) ours(ctx context.Context, j *journal) (bool, error) {
	if p := cmp.Or(j.Provider, provider.OpenAI); p != r.opts.ProviderName {
		r.log.Info("intent belongs to another provider; leaving it for a run of that provider", "journal", j.path,
			"state", j.State, "provider", p)
		return false, nil
	}
	if j.Account == r.opts.Account {
		return true, nil
	}
	known := true
	var err error
	switch j.State {
	case StateUploaded:
		known, err = r.api.FileExists(ctx, j.FileID)
	case StateCreated:
		known, err = r.api.BatchExists(ctx, j.BatchID)
	}
	if err != nil {
		return false, err
	}
	if !known {
		r.log.Info("intent belongs to another API endpoint or key; leaving it", "journal", j.path, "state", j.State,
			"api_base", j.APIBase)
		return false, nil
	}
	j.Account, j.APIBase = r.opts.Account, r.opts.APIBase
	return true, j.save()
}

func (j *journal) spoolExists() bool {
	_, err := os.Stat(j.spoolPath())
	return !errors.Is(err, os.ErrNotExist)
}
