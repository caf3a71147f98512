package emulator_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/batchctl/batchctl/emulator"
)

// Serve the emulator in-process and run one batch through it with the official client.
func Example() {
	srv, err := emulator.New(emulator.Options{PhaseDelay: 10 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()

	ctx := context.Background()
	client := openai.NewClient(option.WithBaseURL(hs.URL+"/v1"), option.WithAPIKey("test"))
	input := `{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Great product"}]}}` + "\n"
	file, err := client.Files.New(ctx, openai.FileNewParams{
		File:    openai.File(strings.NewReader(input), "input.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch,
	})
	if err != nil {
		log.Fatal(err)
	}
	batch, err := client.Batches.New(ctx, openai.BatchNewParams{
		InputFileID:      file.ID,
		Endpoint:         openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
	})
	if err != nil {
		log.Fatal(err)
	}
	for batch.Status != openai.BatchStatusCompleted {
		time.Sleep(5 * time.Millisecond)
		if batch, err = client.Batches.Get(ctx, batch.ID); err != nil {
			log.Fatal(err)
		}
	}
	resp, err := client.Files.Content(ctx, batch.OutputFileID)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		fmt.Println(strings.Contains(sc.Text(), emulator.AnswerText("Great product")))
	}
	fmt.Println(batch.RequestCounts.Completed, "of", batch.RequestCounts.Total)
	fmt.Println(srv.Stats().BatchCreates, "batch created")
	// Output:
	// true
	// 1 of 1
	// 1 batch created
}
