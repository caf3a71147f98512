package jsonl_test

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/batchctl/batchctl/jsonl"
)

func ExampleReader() {
	input := "{\"custom_id\":\"a\",\"body\":{}}\r\n\n{\"text\":\"x\xff\"}\n"
	r := jsonl.NewReader(strings.NewReader(input), "reviews.jsonl", 0)
	for {
		line, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if re, ok := jsonl.AsRecordError(err); ok {
			fmt.Println("bad:", re)
			continue
		}
		fmt.Printf("%d: %q\n", r.Line(), line)
	}
	// Output:
	// 1: "{\"custom_id\":\"a\",\"body\":{}}"
	// 2: ""
	// bad: reviews.jsonl:3: invalid UTF-8 at byte 11
}

func ExampleInspect() {
	var rec jsonl.Record
	line := []byte(`{"custom_id":"r-1","body":{"model":"gpt-4o-mini","messages":[]}}`)
	if err := jsonl.Inspect(line, &rec); err != nil {
		panic(err)
	}
	model, _ := jsonl.Model(rec.Request.Body)
	rec.Request.Method, rec.Request.URL = "POST", jsonl.EndpointChatCompletions
	fmt.Println(rec.IsRequest, model)
	fmt.Printf("%s\n", rec.Request.AppendJSON(nil))
	// Output:
	// true gpt-4o-mini
	// {"custom_id":"r-1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[]}}
}

func ExampleOutputDecoder() {
	output := `{"id":"batch_req_1","custom_id":"r-1","response":{"status_code":200,"request_id":"req_1","body":{"choices":[]}},"error":null}
{"id":"batch_req_2","custom_id":"r-2","response":null,"error":{"code":"batch_expired","message":"expired"}}
`
	d := jsonl.NewOutputDecoder(strings.NewReader(output), "output.jsonl")
	for {
		l, err := d.Next()
		if err != nil {
			break
		}
		if l.Error != nil {
			fmt.Println(l.CustomID, "error", l.Error.Code)
			continue
		}
		fmt.Println(l.CustomID, l.Response.StatusCode, string(l.Response.Body))
	}
	// Output:
	// r-1 200 {"choices":[]}
	// r-2 error batch_expired
}
