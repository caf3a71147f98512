package anthropic_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/batchctl/batchctl/provider/anthropic"
)

// A spool file whose custom_ids Anthropic would refuse ("doc:1" has a colon) is sent with every request as
// r<line>; RequestIDs tells the submitter the mapping, so results come back under the user's IDs.
func ExampleProvider_RequestIDs() {
	dir, err := os.MkdirTemp("", "spool")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "0001.jsonl")
	_ = os.WriteFile(path, []byte(
		`{"custom_id":"doc:1","method":"POST","url":"/v1/messages","body":{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}}`+"\n"+
			`{"custom_id":"doc:2","method":"POST","url":"/v1/messages","body":{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}}`+"\n"), 0o600)
	var p anthropic.Provider
	for r, err := range p.RequestIDs(path) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(r.Line, r.CustomID, "→", r.APICustomID)
	}
	// Output:
	// 1 doc:1 → r1
	// 2 doc:2 → r2
}
