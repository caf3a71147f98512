package emulator_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// TestOfficialNodeSDKs runs the official Node.js SDKs of OpenAI (openai, with its AzureOpenAI client) and Anthropic
// (@anthropic-ai/sdk), pinned in testdata/sdkcompat, against the emulator over real HTTP: files, batches, output
// downloads, pagination, cancel, delete, errors, every text endpoint, Azure's two path styles, Message Batches with
// their streamed results, and the emulator's webhooks verified by openai.webhooks.unwrap. Another language's
// clients read the answers their own way, so this is where a shape that only openai-go forgives would show.
//
// It needs node and npm (the npm registry, or npm's cache): without them it skips, saying so.
func TestOfficialNodeSDKs(t *testing.T) {
	t.Parallel()
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		t.Skip("SKIP: node and npm are not on PATH; the official Node.js SDKs cannot run against the emulator")
	}
	dir := t.TempDir()
	for _, name := range []string{"package.json", "package-lock.json", "compat.mjs"} {
		b, err := os.ReadFile(filepath.Join("testdata", "sdkcompat", name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--prefer-offline", "--fetch-timeout=30000", "--fetch-retries=1")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		t.Skipf("SKIP: npm ci could not install the pinned SDKs (is the npm registry reachable?): %v\n%s", err, out)
	}

	key := make([]byte, 24)
	_, _ = rand.Read(key)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	port := freePort(t)
	_, baseURL := emulator.Start(t, emulator.Options{PhaseDelay: 50 * time.Millisecond,
		WebhookURL: "http://127.0.0.1:" + port + "/webhooks/openai", WebhookSecret: secret})

	run := exec.CommandContext(ctx, node, "compat.mjs")
	run.Dir = dir
	run.Env = append(os.Environ(), "EMU="+strings.TrimSuffix(baseURL, "/v1"), "WEBHOOK_PORT="+port, "WEBHOOK_SECRET="+secret)
	out, err := run.CombinedOutput()
	require.NoError(t, err, "the official SDKs against the emulator:\n%s", out)
	require.Contains(t, string(out), "all ok", string(out))
	t.Logf("official Node.js SDKs:\n%s", out)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
