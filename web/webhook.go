package web

import (
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/webhooks"

	"github.com/batchctl/batchctl/store"
)

// maxWebhookBody caps a webhook's body; OpenAI's events are a few hundred bytes.
const maxWebhookBody = 1 << 20

// webhookResult is the answer to a verified webhook.
type webhookResult struct {
	Type    string `json:"type"`
	BatchID string `json:"batch_id,omitempty"`
	// Result: "queued" (a refresh of the batch was queued), "duplicate" (one was already: a replay or a second
	// delivery), "untracked" (not a batch of this database), or "ignored" (not a batch event).
	Result string `json:"result"`
}

// serveWebhook verifies an OpenAI webhook (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature, with
// the whsec_ secret) with openai-go's helpers and, for a batch.* event about a tracked batch, queues its immediate
// refresh (store.EnqueueRefresh). Unique jobs make a replayed or duplicated event harmless. A request that fails
// verification (no secret configured, missing headers, bad signature, timestamp outside the tolerance) gets a 4xx
// and changes nothing.
func (s *Server) serveWebhook(w http.ResponseWriter, r *http.Request) {
	if s.opts.WebhookSecret == "" {
		http.Error(w, "webhooks are not configured: set BATCHCTL_WEBHOOK_SECRET", http.StatusForbidden)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	svc := webhooks.NewWebhookService(option.WithWebhookSecret(s.opts.WebhookSecret))
	if err := svc.VerifySignatureWithToleranceAndTime(body, r.Header, s.opts.WebhookTolerance, s.opts.Now()); err != nil {
		s.log.Warn("webhook refused", "error", err, "webhook_id", r.Header.Get("webhook-id"), "remote", r.RemoteAddr)
		http.Error(w, "webhook verification failed: "+err.Error(), http.StatusUnauthorized)
		return
	}
	var ev webhooks.UnwrapWebhookEventUnion
	if err := ev.UnmarshalJSON(body); err != nil {
		http.Error(w, "webhook body: "+err.Error(), http.StatusBadRequest)
		return
	}
	res := webhookResult{Type: ev.Type, Result: "ignored"}
	if strings.HasPrefix(ev.Type, "batch.") {
		res.BatchID = ev.Data.ID
		if res.BatchID == "" {
			http.Error(w, "batch event without data.id", http.StatusBadRequest)
			return
		}
		queued, err := s.store.EnqueueRefresh(r.Context(), res.BatchID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			res.Result = "untracked"
		case err != nil:
			s.fail(w, err) // 5xx: OpenAI delivers it again later
			return
		case queued:
			res.Result = "queued"
		default:
			res.Result = "duplicate"
		}
	}
	s.log.Info("webhook", "type", res.Type, "batch_id", res.BatchID, "result", res.Result, "webhook_id", r.Header.Get("webhook-id"))
	writeJSON(w, res)
}
