package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
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

// TestRestartKeepsDataAndPort restarts a cluster under an open connection: the connection is cut, a new one on the
// same URL finds the data written before.
func TestRestartKeepsDataAndPort(t *testing.T) {
	ctx := context.Background()
	c, err := Start(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Stop()) })

	conn, err := pgx.Connect(ctx, c.URL())
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "create table kept (n int); insert into kept values (42)")
	require.NoError(t, err)

	require.NoError(t, c.Restart(ctx))
	require.Error(t, conn.Ping(ctx), "a restart cuts open connections")
	_ = conn.Close(ctx)

	conn, err = pgx.Connect(ctx, c.URL())
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "select n from kept").Scan(&n))
	require.Equal(t, 42, n)

	require.NoError(t, c.StopServer(ctx))
	_, err = pgx.Connect(ctx, c.URL())
	require.Error(t, err, "nothing listens while the server is stopped")
	require.NoError(t, c.StartServer(ctx))
}

// TestClusterDiesWithItsOwner starts a cluster from a child process that is then killed with SIGKILL, as a test
// binary that hits its -timeout dies: the watchdog must stop the server and remove its directory.
func TestClusterDiesWithItsOwner(t *testing.T) {
	if os.Getenv("PGTEST_OWNER") == "1" {
		c, err := Start(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(c.dir + " " + strconv.Itoa(c.port))
		time.Sleep(time.Minute) // killed long before
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestClusterDiesWithItsOwner$")
	cmd.Env = append(os.Environ(), "PGTEST_OWNER=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var dir string
	var port int
	_, err = fmt.Fscan(out, &dir, &port)
	require.NoError(t, err)
	conn, err := pgx.Connect(context.Background(), fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port))
	require.NoError(t, err, "the owner's cluster runs")
	_ = conn.Close(context.Background())

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.Eventually(t, func() bool {
		_, err := os.Stat(dir)
		return os.IsNotExist(err)
	}, 30*time.Second, 100*time.Millisecond, "the watchdog removed the cluster of a killed owner")
	_, err = net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	require.Error(t, err, "nothing listens on its port")
}
