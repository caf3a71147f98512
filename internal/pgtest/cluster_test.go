package pgtest

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestStartStopLeavesNothing starts a cluster of its own (whatever DATABASE_URL says), uses it, stops it, and checks
// that neither the server nor its directory remains.
func TestStartStopLeavesNothing(t *testing.T) {
	ctx := context.Background()
	c, err := Start(ctx)
	require.NoError(t, err)

	conn, err := pgx.Connect(ctx, c.URL())
	require.NoError(t, err)
	var one int
	require.NoError(t, conn.QueryRow(ctx, "select 1").Scan(&one))
	require.Equal(t, 1, one)
	var user string
	require.NoError(t, conn.QueryRow(ctx, "select current_user").Scan(&user))
	require.Equal(t, "postgres", user)
	require.NoError(t, conn.Close(ctx))

	require.NoError(t, c.Stop())
	_, err = os.Stat(c.dir)
	require.True(t, os.IsNotExist(err), "cluster directory removed")
	_, err = net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)), time.Second)
	require.Error(t, err, "nothing listens on the cluster's port any more")
}
