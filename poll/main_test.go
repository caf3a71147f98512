package poll_test

import (
	"testing"

	"github.com/batchctl/batchctl/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
