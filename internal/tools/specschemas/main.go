// Command specschemas extracts from OpenAI's OpenAPI document the JSON schemas the emulator's spec test checks
// against (see internal/specschema) and writes them as the committed fixture. `go generate ./emulator` runs it:
//
//	go run ./internal/tools/specschemas -out emulator/testdata/spec_schemas.json
//
// The document is read from -spec, else from OPENAI_OPENAPI_SPEC, else from ../shared/openai-openapi.yaml beside
// the repository.
package main

import (
	"cmp"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/batchctl/batchctl/internal/specschema"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "specschemas:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	spec := flag.String("spec", cmp.Or(os.Getenv(specschema.EnvSpec), filepath.Join(root, specschema.DefaultSpecPath)),
		"the OpenAPI document (env "+specschema.EnvSpec+")")
	out := flag.String("out", filepath.Join(root, "emulator", "testdata", "spec_schemas.json"), "the fixture to write")
	flag.Parse()
	doc, err := os.ReadFile(*spec)
	if err != nil {
		return fmt.Errorf("read the OpenAPI document: %w", err)
	}
	f, err := specschema.Extract(doc, specschema.Roots, specschema.LiveNulls)
	if err != nil {
		return err
	}
	b, err := f.Marshal()
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil { //nolint:gosec // a committed test fixture
		return fmt.Errorf("write fixture: %w", err)
	}
	fmt.Fprintf(os.Stderr, "specschemas: %s: %d schemas of %s %s, %d bytes\n", *out, len(f.Defs), f.SpecTitle, f.SpecVersion, len(b))
	return nil
}

// repoRoot is the directory of go.mod, looked for from the working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
