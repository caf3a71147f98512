package reliability_test

import "testing"

func testPostgresRestart(t *testing.T, tl *tally) { t.Skip() }
func testSecrets(t *testing.T, tl *tally)         { t.Skip() }
