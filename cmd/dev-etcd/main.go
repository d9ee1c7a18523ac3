// Command dev-etcd runs an etcd cluster of embedded members in one process,
// on loopback, for `make ha-demo` and manual tests of replicated `kms serve`.
// DEVELOPMENT ONLY: no TLS, no authentication, no fsync.
//
// It prints the members' client endpoints, comma-separated, on the first
// line of stdout once every member is ready, and serves until SIGINT or
// SIGTERM. SIGUSR1 stops one member, the current raft leader (clients must
// move to a survivor, and writes wait for a new leader), and prints a line
// naming it and, once the survivors have one, the new leader; a stop that
// would lose quorum is refused. The stop is etcd's orderly shutdown, not a
// crash: the member hands leadership over and gives open client streams
// (watches) up to its request timeout, about 6 s, before cutting them.
// One signal and one process let a demo lose a member without tracking a
// process per member.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "dev-etcd:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev-etcd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	members := fs.Int("members", 3, "number of cluster members")
	dir := fs.String("dir", "", "data directory; each member keeps its data in DIR/NAME (required)")
	prefix := fs.String("name-prefix", "member", "member names are this prefix followed by 1..N")
	startTimeout := fs.Duration("start-timeout", 30*time.Second, "how long the members may take to become ready")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *dir == "" {
		return fmt.Errorf("--dir is required")
	}
	if *members < 1 {
		return fmt.Errorf("--members must be at least 1, got %d", *members)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}

	// Registered before the members start, so a SIGUSR1 sent as soon as
	// the endpoints line appears is never lost to the default action
	// (which would kill the whole process).
	stopOne := make(chan os.Signal, 1)
	signal.Notify(stopOne, syscall.SIGUSR1)
	defer signal.Stop(stopOne)
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	c, err := startCluster(ctx, clusterConfig{
		Dir: abs, Members: *members, NamePrefix: *prefix, StartTimeout: *startTimeout,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(stdout, strings.Join(c.Endpoints(), ","))

	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stderr, "dev-etcd: shutting down")
			return nil
		case err := <-c.Errs():
			return fmt.Errorf("a member failed: %w", err)
		case <-stopOne:
			name, err := c.StopLeader()
			if err != nil {
				fmt.Fprintf(stdout, "stop refused: %v\n", err)
				continue
			}
			fmt.Fprintf(stdout, "stopped member %s (was the raft leader); %d of %d running\n", name, c.Running(), *members)
			// Waited for here, not in the background: the next signal is
			// only read once the cluster has settled, so each stop acts on
			// a cluster with a known leader.
			if next, err := c.WaitLeader(ctx, 10*time.Second); err != nil {
				fmt.Fprintf(stdout, "no new raft leader: %v\n", err)
			} else {
				fmt.Fprintf(stdout, "raft leader now %s\n", next)
			}
		}
	}
}
