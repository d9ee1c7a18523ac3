package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// clusterConfig describes the cluster startCluster runs.
type clusterConfig struct {
	// Dir holds each member's data in Dir/<name> and the members' peer
	// sockets; it must be an absolute path.
	Dir        string
	Members    int
	NamePrefix string
	// StartTimeout bounds how long the members may take to become ready.
	StartTimeout time.Duration
}

// cluster is a running set of embedded etcd members.
type cluster struct {
	mu      sync.Mutex
	members []*embed.Etcd // nil once stopped
	names   []string
	errs    chan error
}

// startCluster starts every member and waits until all are ready.
//
// Members talk to each other over unix sockets named by the peer URL's
// host, which etcd resolves against the working directory; the process
// therefore changes into Dir. That way no peer TCP port has to be guessed
// free before start (a peer URL must be known to every member up front,
// so port 0 cannot be used), while clients still get kernel-chosen ports.
func startCluster(ctx context.Context, cc clusterConfig) (*cluster, error) {
	if err := os.Chdir(cc.Dir); err != nil {
		return nil, fmt.Errorf("entering the data directory: %w", err)
	}
	cfgs := make([]*embed.Config, cc.Members)
	initial := ""
	for i := range cfgs {
		name := fmt.Sprintf("%s%d", cc.NamePrefix, i+1)
		cfg, err := memberConfig(name, filepath.Join(cc.Dir, name), i+1)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			initial += ","
		}
		initial += name + "=" + cfg.AdvertisePeerUrls[0].String()
		cfgs[i] = cfg
	}
	c := &cluster{errs: make(chan error, cc.Members)}
	for _, cfg := range cfgs {
		cfg.InitialCluster = initial
		cfg.InitialClusterToken = "dev-etcd-" + cc.NamePrefix
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("starting etcd member %s: %w", cfg.Name, err)
		}
		c.members = append(c.members, e)
		c.names = append(c.names, cfg.Name)
		go c.forwardErrors(e, cfg.Name)
	}
	// Members of a new cluster only become ready together, once they have
	// elected a leader: start all of them first, then wait.
	timer := time.NewTimer(cc.StartTimeout)
	defer timer.Stop()
	for i, e := range c.members {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-c.errs:
			c.Close()
			return nil, err
		case <-timer.C:
			c.Close()
			return nil, fmt.Errorf("etcd member %s not ready after %s", c.names[i], cc.StartTimeout)
		case <-ctx.Done():
			c.Close()
			return nil, ctx.Err()
		}
	}
	return c, nil
}

// memberConfig is a fast loopback configuration: short raft ticks so a
// lost leader is replaced in well under a second, no fsync, small
// snapshots. Good for a laptop, wrong for data anyone cares about.
func memberConfig(name, dataDir string, peerSocket int) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dataDir
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	cfg.TickMs = 50
	cfg.ElectionMs = 500
	cfg.UnsafeNoFsync = true
	cfg.SnapshotCount = 1000
	client, err := url.Parse("http://127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("client URL: %w", err)
	}
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	peer, err := url.Parse(fmt.Sprintf("unix://localhost:%d", peerSocket))
	if err != nil {
		return nil, fmt.Errorf("peer URL: %w", err)
	}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	// No separate metrics listener: the default would bind a fixed port.
	cfg.ListenMetricsUrls = nil
	return cfg, nil
}

// forwardErrors reports a member's fatal error (for example a listener
// that died) so the process exits instead of serving a degraded cluster
// unannounced. Errors after the member was stopped on purpose are dropped.
func (c *cluster) forwardErrors(e *embed.Etcd, name string) {
	err, ok := <-e.Err()
	if !ok || err == nil {
		return
	}
	c.mu.Lock()
	stopped := true
	for _, m := range c.members {
		if m == e {
			stopped = false
		}
	}
	c.mu.Unlock()
	if stopped {
		return
	}
	select {
	case c.errs <- fmt.Errorf("etcd member %s: %w", name, err):
	default:
	}
}

// Errs reports members failing on their own.
func (c *cluster) Errs() <-chan error { return c.errs }

// Endpoints are the client URLs, one per member, in member order.
func (c *cluster) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.members {
		if e != nil {
			out = append(out, "http://"+e.Clients[0].Addr().String())
		}
	}
	return out
}

// Running counts the members not stopped.
func (c *cluster) Running() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.members {
		if e != nil {
			n++
		}
	}
	return n
}

// StopLeader stops the running member that is the raft leader and returns
// its name. It refuses when the rest would be short of a quorum: such a
// cluster only looks alive (every request times out), which confuses more
// than it shows.
func (c *cluster) StopLeader() (string, error) {
	c.mu.Lock()
	running := 0
	for _, e := range c.members {
		if e != nil {
			running++
		}
	}
	if quorum := len(c.members)/2 + 1; running-1 < quorum {
		c.mu.Unlock()
		return "", fmt.Errorf("%d of %d members running: stopping one more loses the quorum of %d", running, len(c.members), quorum)
	}
	i := c.leaderLocked()
	if i < 0 {
		c.mu.Unlock()
		return "", errors.New("no member is the raft leader now")
	}
	e := c.members[i]
	c.members[i] = nil
	c.mu.Unlock()
	e.Close()
	return c.names[i], nil
}

// leaderLocked is the index of the running member that leads, or -1.
func (c *cluster) leaderLocked() int {
	for i, e := range c.members {
		if e != nil && e.Server.Leader() == e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// WaitLeader waits until a running member leads and returns its name.
func (c *cluster) WaitLeader(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		c.mu.Lock()
		i := c.leaderLocked()
		c.mu.Unlock()
		if i >= 0 {
			return c.names[i], nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for a raft leader: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// Close stops every running member.
func (c *cluster) Close() {
	c.mu.Lock()
	running := c.members
	c.members = make([]*embed.Etcd, len(running))
	c.mu.Unlock()
	for _, e := range running {
		if e != nil {
			e.Close()
		}
	}
}
