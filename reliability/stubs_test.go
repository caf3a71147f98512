package reliability_test

import "testing"

func testSecrets(t *testing.T, tl *tally)         { t.Skip() }
