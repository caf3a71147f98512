package emulator_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/webhooks"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

const webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// received is one delivery, as the receiver saw it.
type received struct {
	id, typ, batchID string
	verified         error
}

// TestWebhooksSignedAndRetried: each OpenAI batch that ends sends its batch.<status> event, which openai-go's own
// verifier accepts; a delivery answered 5xx is sent again with the same webhook-id.
func TestWebhooksSignedAndRetried(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		got  []received
		fail = 1 // the first delivery is answered 503
	)
	verifier := webhooks.NewWebhookService(option.WithWebhookSecret(webhookSecret))
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ev, err := verifier.Unwrap(body, r.Header)
		mu.Lock()
		defer mu.Unlock()
		rec := received{id: r.Header.Get("webhook-id"), verified: err}
		if err == nil {
			rec.typ, rec.batchID = ev.Type, ev.Data.ID
		}
		got = append(got, rec)
		if fail > 0 {
			fail--
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(hook.Close)

	e := newEnv(t, emulator.Options{WebhookURL: hook.URL, WebhookSecret: webhookSecret})
	done := e.create(t, e.upload(t, chatLines(3, "gpt-4o-mini")), openai.BatchNewParamsEndpointV1ChatCompletions)
	bad := e.create(t, e.upload(t, []byte(`{"custom_id":"x","method":"POST","url":"/v1/embeddings","body":{"model":"gpt-4o-mini"}}`+"\n")),
		openai.BatchNewParamsEndpointV1ChatCompletions)

	require.Eventually(t, func() bool { return e.srv.Stats().WebhooksDelivered == 2 }, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 3, "two events, one delivered twice")
	byBatch := map[string][]received{}
	for _, r := range got {
		require.NoError(t, r.verified, "openai-go verifies the emulator's signature")
		byBatch[r.batchID] = append(byBatch[r.batchID], r)
	}
	require.Equal(t, "batch.completed", byBatch[done.ID][0].typ)
	require.Equal(t, "batch.failed", byBatch[bad.ID][0].typ)
	first := got[0]
	require.Len(t, byBatch[first.batchID], 2, "the delivery answered 503 came again")
	require.Equal(t, first.id, byBatch[first.batchID][1].id, "with the same webhook-id")
	require.Equal(t, 1, e.srv.Stats().WebhookFailures)
}
