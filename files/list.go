package files

import (
	"context"
	"errors"

	"github.com/batchctl/batchctl/store"
)

// States of a tracked file in a listing.
const (
	StateDeleted  = "deleted"  // batchctl deleted it (or found it gone when it tried)
	StateGone     = "gone"     // the API no longer has it: it expired, or someone else deleted it
	StateNeeded   = "needed"   // a batch still needs it: a prune keeps it
	StatePrunable = "prunable" // a prune would delete it (unless --older-than keeps it)
)

// defaultMaxGets is the most files a listing asks the API about one by one (GET /v1/files/{id}); beyond, it reads the
// whole file list instead (GET /v1/files, 10 000 a page).
const defaultMaxGets = 20

// File is one file of a tracked batch, with what the API says of it.
type File struct {
	store.BatchFile
	// Object is what the API says of the file; nil when the API no longer has it, or batchctl deleted it (then the
	// API is not asked).
	Object *Object
	State  string
}

// Lister lists the files of tracked batches.
type Lister struct {
	Store *store.Store
	API   API
	// MaxGets is the most files asked about one by one; beyond, the whole file list is read instead (default 20).
	MaxGets int
}

// List returns the files of the batches q selects (store.Store.ListBatchFiles) with what the API says of each.
func (l *Lister) List(ctx context.Context, q store.FileQuery) ([]File, error) {
	tracked, err := l.Store.ListBatchFiles(ctx, q)
	if err != nil {
		return nil, err
	}
	ask := map[string]*Object{}
	for _, f := range tracked {
		if f.Deleted == nil {
			ask[f.FileID] = nil
		}
	}
	if err := l.lookup(ctx, ask); err != nil {
		return nil, err
	}
	out := make([]File, len(tracked))
	for i, f := range tracked {
		out[i] = File{BatchFile: f, Object: ask[f.FileID]}
		switch {
		case f.Deleted != nil:
			out[i].Object, out[i].State = nil, StateDeleted
		case out[i].Object == nil:
			out[i].State = StateGone
		case f.Needed:
			out[i].State = StateNeeded
		default:
			out[i].State = StatePrunable
		}
	}
	return out, nil
}

// lookup fills in the API's object of each file in objects; a file the API does not have stays nil.
func (l *Lister) lookup(ctx context.Context, objects map[string]*Object) error {
	maxGets := l.MaxGets
	if maxGets <= 0 {
		maxGets = defaultMaxGets
	}
	if len(objects) <= maxGets {
		for id := range objects {
			o, err := l.API.Get(ctx, id)
			if errors.Is(err, ErrGone) {
				continue
			}
			if err != nil {
				return err
			}
			objects[id] = &o
		}
		return nil
	}
	missing := len(objects)
	return l.API.List(ctx, func(o Object) bool {
		if prev, ours := objects[o.ID]; ours && prev == nil {
			objects[o.ID] = &o
			missing--
		}
		return missing > 0
	})
}
