package submit

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// What a stream's run killed with SIGKILL leaves: a spooling journal and the open file, its last line perhaps cut
// in the middle. The next run keeps every whole line, seals the file, and makes the intent pending.
func TestPrepareDirSealsLeftoverStream(t *testing.T) {
	t.Parallel()
	whole := `{"custom_id":"a","body":{"model":"m"}}` + "\n" + `{"custom_id":"b","body":{"model":"m"}}` + "\n"
	sum := sha256.Sum256([]byte(whole))
	sha := hex.EncodeToString(sum[:])

	tests := []struct {
		name  string
		file  string // the file as the dead run left it
		bytes string
	}{
		{"open file cut mid-line", spoolingName(3), whole + `{"custom_id":"c","bo`},
		{"sealed but journal not saved", sealedName(3, sha), whole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			j := &journal{Version: journalVersion, State: StateSpooling, Intent: "0123456789abcdef01234567", Part: 3,
				SpoolFile: spoolingName(3), Model: "m", Metadata: map[string]string{MetaIntent: "x"}, path: journalPath(dir, 3)}
			require.NoError(t, j.save())
			require.NoError(t, os.WriteFile(filepath.Join(dir, tt.file), []byte(tt.bytes), 0o600))

			js, err := prepareDir(dir)
			require.NoError(t, err)
			require.Len(t, js, 1)
			got := js[0]
			require.Equal(t, StatePending, got.State)
			require.Equal(t, 2, got.Requests)
			require.EqualValues(t, len(whole), got.Bytes)
			require.Equal(t, sha, got.SpoolSHA256)
			require.Equal(t, sha, got.Metadata[MetaSpoolSHA256])
			b, err := os.ReadFile(got.spoolPath())
			require.NoError(t, err)
			require.Equal(t, whole, string(b))

			again, err := loadJournals(dir)
			require.NoError(t, err)
			require.Equal(t, StatePending, again[0].State, "the journal on disk says pending")
			n, err := nextPart(dir, again)
			require.NoError(t, err)
			require.Equal(t, 4, n)
		})
	}
}

// An open file with no whole line holds no record: it goes, with its journal.
func TestPrepareDirDropsEmptyLeftover(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := &journal{Version: journalVersion, State: StateSpooling, Intent: "0123456789abcdef01234567", Part: 1,
		SpoolFile: spoolingName(1), Metadata: map[string]string{}, path: journalPath(dir, 1)}
	require.NoError(t, j.save())
	require.NoError(t, os.WriteFile(filepath.Join(dir, spoolingName(1)), []byte(`{"custom_id":"a"`), 0o600))
	js, err := prepareDir(dir)
	require.NoError(t, err)
	require.Empty(t, js)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries)
}
