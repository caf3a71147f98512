package web

import (
	"context"
	"errors"
	"net/http"

	"github.com/batchctl/batchctl/store"
)

// actionResult is the answer to a cancel or resubmit: whether a job was queued (false: one was already).
type actionResult struct {
	BatchID string `json:"batch_id"`
	Action  string `json:"action"`
	Queued  bool   `json:"queued"`
}

// cancelBatch queues the batch's cancel for the pollers, which hold the API keys.
func (s *Server) cancelBatch(w http.ResponseWriter, r *http.Request) {
	s.enqueueAction(w, r, "cancel", s.store.EnqueueCancel)
}

// resubmitBatch queues the resubmission of the batch's retryable requests, as poll --resubmit would.
func (s *Server) resubmitBatch(w http.ResponseWriter, r *http.Request) {
	s.enqueueAction(w, r, "resubmit", s.store.EnqueueResubmit)
}

func (s *Server) enqueueAction(w http.ResponseWriter, r *http.Request, action string,
	enqueue func(context.Context, string) (bool, error)) {
	id := r.PathValue("id")
	queued, err := enqueue(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, "no such batch", http.StatusNotFound)
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	s.log.Info("dashboard action", "action", action, "batch_id", id, "queued", queued)
	writeJSON(w, actionResult{BatchID: id, Action: action, Queued: queued})
}
