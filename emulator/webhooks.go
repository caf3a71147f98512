package emulator

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// webhookRetries are the waits before each delivery of a webhook after the first, as the real service retries an
// endpoint that does not answer 2xx (over days there; seconds here).
var webhookRetries = []time.Duration{200 * time.Millisecond, time.Second, 3 * time.Second}

// webhookTimeout bounds one delivery.
const webhookTimeout = 10 * time.Second

// webhookEvent is OpenAI's batch event: batch.completed, batch.failed, batch.expired or batch.cancelled.
type webhookEvent struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Type      string `json:"type"`
	CreatedAt int64  `json:"created_at"`
	Data      struct {
		ID string `json:"id"`
	} `json:"data"`
}

// SignWebhook returns the Standard Webhooks headers of body (webhook-id, webhook-timestamp, webhook-signature) for
// secret, as OpenAI signs its webhooks: HMAC-SHA256 over "id.timestamp.body" with the base64 key after "whsec_" (or
// the secret's bytes, without the prefix). Tests use it to forge, replay and age events.
func SignWebhook(secret, id string, at time.Time, body []byte) (http.Header, error) {
	key := []byte(secret)
	if enc, ok := strings.CutPrefix(secret, "whsec_"); ok {
		var err error
		if key, err = base64.StdEncoding.DecodeString(enc); err != nil {
			return nil, fmt.Errorf("webhook secret: %w", err)
		}
	}
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", ts)
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	h.Set("Content-Type", "application/json")
	return h, nil
}

// webhookLocked sends, when Options.WebhookURL is set, the event of b's end (its terminal status) in the
// background. OpenAI sends them for its own batches only: Azure's are left out. Call it with s.mu held, right after
// the status became terminal.
func (s *Server) webhookLocked(b *batch) {
	if s.opts.WebhookURL == "" || b.azure || s.closed {
		return
	}
	ev := webhookEvent{ID: newID("evt_"), Object: "event", Type: "batch." + b.Status, CreatedAt: s.now().Unix()}
	ev.Data.ID = b.ID
	s.wg.Add(1)
	go s.deliver(ev)
}

// deliver posts ev until the endpoint answers 2xx or the retries run out; every attempt carries the same
// webhook-id (so a receiver can deduplicate), signed anew with the time of the attempt.
func (s *Server) deliver(ev webhookEvent) {
	defer s.wg.Done()
	log := s.log.With("batch", ev.Data.ID, "event", ev.Type)
	body, _ := json.Marshal(ev)
	for attempt := 0; ; attempt++ {
		err := s.post(ev.ID, body)
		if err == nil {
			s.count(func(st *Stats) { st.WebhooksDelivered++ })
			log.Debug("webhook delivered")
			return
		}
		s.count(func(st *Stats) { st.WebhookFailures++ })
		if attempt >= len(webhookRetries) {
			log.Warn("webhook not delivered; giving up", "err", err)
			return
		}
		log.Debug("webhook delivery failed; retrying", "err", err)
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(webhookRetries[attempt]):
		}
	}
}

func (s *Server) post(id string, body []byte) error {
	h, err := SignWebhook(s.opts.WebhookSecret, id, s.now(), body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(s.ctx, webhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.opts.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return errors.New("webhook endpoint answered " + resp.Status)
	}
	return nil
}
