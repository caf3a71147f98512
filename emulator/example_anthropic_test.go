package emulator_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/batchctl/batchctl/emulator"
)

// Run one Anthropic message batch through the emulator with the official Go SDK: the same server answers the
// OpenAI and the Anthropic APIs.
func Example_messageBatches() {
	srv, err := emulator.New(emulator.Options{PhaseDelay: 10 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()

	ctx := context.Background()
	client := anthropic.NewClient(option.WithBaseURL(hs.URL), option.WithAPIKey("test"))
	batch, err := client.Messages.Batches.New(ctx, anthropic.MessageBatchNewParams{
		Requests: []anthropic.MessageBatchNewParamsRequest{{
			CustomID: "r1",
			Params: anthropic.MessageBatchNewParamsRequestParams{
				Model: "claude-haiku-4-5", MaxTokens: 100,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Great product"))},
			},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	for batch.ProcessingStatus != anthropic.MessageBatchProcessingStatusEnded {
		time.Sleep(5 * time.Millisecond)
		if batch, err = client.Messages.Batches.Get(ctx, batch.ID, anthropic.MessageBatchGetParams{}); err != nil {
			log.Fatal(err)
		}
	}
	results := client.Messages.Batches.ResultsStreaming(ctx, batch.ID, anthropic.MessageBatchResultsParams{})
	defer results.Close()
	for results.Next() {
		r := results.Current()
		fmt.Println(r.CustomID, r.Result.Type, r.Result.Message.Content[0].Text == emulator.AnswerText("Great product"))
	}
	if err := results.Err(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(batch.RequestCounts.Succeeded, "succeeded")
	fmt.Println(srv.Stats().Anthropic.BatchesCreated, "batch created")
	// Output:
	// r1 succeeded true
	// 1 succeeded
	// 1 batch created
}
