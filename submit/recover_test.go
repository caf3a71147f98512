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

// A packed stream's leftover keeps its record-to-index map: sealed with the file, named in the journal.
func TestPrepareDirSealsLeftoverPackMap(t *testing.T) {
	t.Parallel()
	whole := `{"custom_id":"pack:a","body":{"model":"m"}}` + "\n"
	packMap := `{"packed_custom_id":"pack:a","index":1,"custom_id":"a","line":1}` + "\n" +
		`{"packed_custom_id":"pack:b","index":1,"custom_id":"b","line":2}` + "\n"
	dir := t.TempDir()
	j := &journal{Version: journalVersion, State: StateSpooling, Intent: "0123456789abcdef01234567", Part: 2,
		SpoolFile: spoolingName(2), Model: "m", Metadata: map[string]string{MetaIntent: "x"}, path: journalPath(dir, 2),
		Pack: 5, AnswerSchema: []byte(`{"type":"string"}`)}
	require.NoError(t, j.save())
	require.NoError(t, os.WriteFile(filepath.Join(dir, spoolingName(2)), []byte(whole+`{"custom_id":"pack:b","bo`), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, spoolingName(2)+packMapSuffix), []byte(packMap), 0o600))

	js, err := prepareDir(dir)
	require.NoError(t, err)
	require.Len(t, js, 1)
	require.Equal(t, StatePending, js[0].State)
	require.Equal(t, js[0].SpoolFile+packMapSuffix, js[0].PackMap)
	b, err := os.ReadFile(js[0].packMapPath())
	require.NoError(t, err)
	require.Equal(t, packMap, string(b))

	// Without its map a packed leftover is not sealed: its answers could not be unpacked.
	dir = t.TempDir()
	j.path, j.State, j.SpoolFile = journalPath(dir, 2), StateSpooling, spoolingName(2)
	require.NoError(t, j.save())
	require.NoError(t, os.WriteFile(filepath.Join(dir, spoolingName(2)), []byte(whole), 0o600))
	_, err = prepareDir(dir)
	require.ErrorContains(t, err, "record-to-index map is missing")
}
