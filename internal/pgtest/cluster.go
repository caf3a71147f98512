// Package pgtest gives tests and local tools a real Postgres: the server named by DATABASE_URL, or a throwaway
// cluster it starts itself (initdb into a temporary directory, a free port on 127.0.0.1, run as an unprivileged user
// when the caller is root) and removes afterwards.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StartTimeout bounds initdb plus server start.
const StartTimeout = 60 * time.Second

// Cluster is a throwaway Postgres server. Stop it to remove every trace.
type Cluster struct {
	dir   string // temporary directory holding data/, the socket and the log
	bin   string // directory of initdb and pg_ctl
	runAs string // unprivileged user when started by root; "" otherwise
	port  int
	opts  string // server options, kept so a restart listens on the same port

	watchdog *exec.Cmd // stops the cluster if this process dies without calling Stop
}

// URL is the connection URL of the cluster's postgres database (trust authentication, no password).
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Start initialises and starts a new cluster. The caller must call Stop.
func Start(ctx context.Context) (*Cluster, error) {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()

	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "batchctl-pg-")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	c := &Cluster{dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		// Postgres refuses to run as root.
		if c.runAs, err = unprivilegedUser(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := chownTo(dir, c.runAs); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := c.pg(ctx, "initdb", "-D", c.dataDir(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// A port can be taken between our probe and the server's bind; try a few.
	for attempt := 0; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			break
		}
		c.opts = strings.Join([]string{
			"-p " + strconv.Itoa(c.port),
			"-c listen_addresses=127.0.0.1",
			"-c unix_socket_directories=" + dir,
			"-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
			"-c max_connections=200",
		}, " ")
		// pg_stat_statements, where the server ships it, for make bench's database time per statement.
		if _, err := os.Stat(filepath.Join(filepath.Dir(bin), "lib", "pg_stat_statements.so")); err == nil {
			c.opts += " -c shared_preload_libraries=pg_stat_statements"
		}
		err = c.startServer(ctx)
		if err == nil || attempt == 2 {
			break
		}
	}
	if err != nil {
		if log, rerr := os.ReadFile(filepath.Join(dir, "postgres.log")); rerr == nil {
			err = fmt.Errorf("%w\npostgres.log:\n%s", err, log)
		}
		c.Stop()
		return nil, err
	}
	c.startWatchdog()
	return c, nil
}

// watchdogScript waits for the process $1 to end, then stops the server of data directory $3 with pg_ctl from
// $2 (through runuser -u $5 when $5 is set) and removes the cluster directory $4.
const watchdogScript = `while kill -0 "$1" 2>/dev/null; do sleep 1; done
if [ -n "$5" ]; then runuser -u "$5" -- "$2/pg_ctl" -D "$3" -m immediate stop; else "$2/pg_ctl" -D "$3" -m immediate stop; fi
rm -rf "$4"`

// startWatchdog makes the cluster die with this process. Stop is not called when a test binary panics on its
// -timeout or is killed: without the watchdog, its server would run on. The watchdog is a shell in a session of
// its own, so signals to this process group do not reach it.
func (c *Cluster) startWatchdog() {
	cmd := exec.Command("sh", "-c", watchdogScript, "pgtest-watchdog",
		strconv.Itoa(os.Getpid()), c.bin, c.dataDir(), c.dir, c.runAs)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return // the cluster still works; only a crash would leave it behind
	}
	c.watchdog = cmd
	go func() { _ = cmd.Wait() }()
}

// startServer starts the server of an initialised cluster and waits until it accepts connections.
func (c *Cluster) startServer(ctx context.Context) error {
	return c.pg(ctx, "pg_ctl", "-D", c.dataDir(), "-l", filepath.Join(c.dir, "postgres.log"), "-o", c.opts, "-w", "-t", "60", "start")
}

// StopServer stops the server (fast shutdown: open connections are cut) and keeps the cluster, so StartServer can
// bring it back with its data on the same port. Tests use it to take the database away from a running client.
func (c *Cluster) StopServer(ctx context.Context) error {
	return c.pg(ctx, "pg_ctl", "-D", c.dataDir(), "-m", "fast", "-w", "-t", "60", "stop")
}

// StartServer starts a server that StopServer stopped, on the same port, and waits until it accepts connections.
func (c *Cluster) StartServer(ctx context.Context) error {
	if err := c.startServer(ctx); err != nil {
		if log, rerr := os.ReadFile(filepath.Join(c.dir, "postgres.log")); rerr == nil {
			err = fmt.Errorf("%w\npostgres.log:\n%s", err, log)
		}
		return err
	}
	return nil
}

// Restart stops the server (fast shutdown) and starts it again on the same port with its data, as a database
// failover or an upgrade does to a client.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.StopServer(ctx); err != nil {
		return err
	}
	return c.StartServer(ctx)
}

// Stop stops the server (fast shutdown) and removes the cluster directory.
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c.watchdog != nil {
		_ = c.watchdog.Process.Kill()
	}
	var err error
	if _, statErr := os.Stat(filepath.Join(c.dataDir(), "postmaster.pid")); statErr == nil {
		err = c.pg(ctx, "pg_ctl", "-D", c.dataDir(), "-m", "fast", "-w", "stop")
	}
	return errors.Join(err, os.RemoveAll(c.dir))
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

// pg runs one of the server's programs, as the unprivileged user when needed.
func (c *Cluster) pg(ctx context.Context, prog string, args ...string) error {
	path := filepath.Join(c.bin, prog)
	var cmd *exec.Cmd
	if c.runAs != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.runAs, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = c.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", prog, strings.Join(args, " "), err, out.String())
	}
	return nil
}

// findBinDir locates initdb and pg_ctl: $PG_BIN, Debian's /usr/lib/postgresql/<newest>/bin, then PATH.
func findBinDir() (string, error) {
	var candidates []string
	if d := os.Getenv("PG_BIN"); d != "" {
		candidates = append(candidates, d)
	}
	versions, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(versions, func(i, j int) bool { return pgMajor(versions[i]) > pgMajor(versions[j]) })
	candidates = append(candidates, versions...)
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	for _, d := range candidates {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, pg_ctl) found in $PG_BIN, /usr/lib/postgresql/*/bin or PATH: " +
		"run scripts/ensure-postgres.sh (installs Debian's postgresql package) or set DATABASE_URL")
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// unprivilegedUser picks the account a root caller runs the server as.
func unprivilegedUser() (string, error) {
	for _, name := range []string{"postgres", "nobody"} {
		if _, err := user.Lookup(name); err == nil {
			return name, nil
		}
	}
	return "", errors.New("running as root but neither a postgres nor a nobody account exists to run the server")
}

func chownTo(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("look up user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("chown %s to %s: %w", dir, name, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
