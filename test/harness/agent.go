package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
	"github.com/flatnet-io/flatnet/lab/netns"
)

// Pool is an IPAM pool for an agent's configuration.
type Pool struct {
	Name      string
	CIDR      string
	BlockSize int
}

// AgentConfig is what a test agent differs in.
type AgentConfig struct {
	Node           string
	Pools          []Pool
	StrictAffinity bool
	// StoreDir is the file datastore; agents sharing one are one cluster.
	// Empty: a directory of the agent's own.
	StoreDir string
	// Kubeconfig, when set, makes the datastore kubernetes, reached with this
	// kubeconfig, instead of the file store (StoreDir is then unused).
	Kubeconfig string
}

// Agent is a flatnet-agent process running inside a namespace.
type Agent struct {
	Socket  string
	LogPath string
	proc    *netns.Process
}

// StartAgent runs bin/flatnet-agent inside ns (nil: in this process's
// namespace, with no health endpoint, so that several can run), waits until
// it serves, and stops it when t ends.
func StartAgent(t testing.TB, ns *NetNS, cfg AgentConfig) *Agent {
	t.Helper()
	// A short directory: unix socket paths end at 107 bytes.
	dir, err := os.MkdirTemp("", "ft")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cfg.StoreDir == "" {
		cfg.StoreDir = filepath.Join(dir, "store")
	}
	var pools strings.Builder
	for _, p := range cfg.Pools {
		fmt.Fprintf(&pools, "    - {name: %s, cidr: %q, blockSize: %d}\n", p.Name, p.CIDR, p.BlockSize)
	}
	datastore := fmt.Sprintf("{type: file, file: {dir: %s, fsync: false}}", cfg.StoreDir)
	if cfg.Kubeconfig != "" {
		// Test allocations name no pods: the garbage collector leaves them.
		datastore = fmt.Sprintf("{type: kubernetes, kubernetes: {kubeconfig: %s}}", cfg.Kubeconfig)
	}
	health, nsName := "127.0.0.1:9797", ""
	if ns == nil {
		health = ""
	} else {
		nsName = ns.Name
	}
	yaml := fmt.Sprintf(`nodeName: %s
log: {level: debug, format: text}
api: {socket: %s}
health: {address: %q}
datastore: %s
ipam:
  strictAffinity: %v
  blockReleaseGrace: 0s
  pools:
%s`, cfg.Node, filepath.Join(dir, "flatnet.sock"), health, datastore, cfg.StrictAffinity, pools.String())
	confPath := filepath.Join(dir, "flatnet.yaml")
	if err := os.WriteFile(confPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &Agent{Socket: filepath.Join(dir, "flatnet.sock"), LogPath: filepath.Join(dir, "agent.log")}
	a.proc, err = netns.Start(netns.Options{NetNS: nsName, Log: a.LogPath}, Bin("flatnet-agent"), "--config", confPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(a.LogPath)
			t.Logf("agent %s log:\n%s", cfg.Node, b)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := a.proc.Await(ctx, "serving on "+a.Socket, netns.Serving(a.Socket)); err != nil {
		t.Fatal(err)
	}
	return a
}

// Stop ends the agent with SIGTERM (SIGKILL after 10 s) and waits for it;
// stopping twice is fine.
func (a *Agent) Stop(t testing.TB) { a.proc.Stop(10 * time.Second) }

// Kill ends the agent with SIGKILL, a crash, and waits for it.
func (a *Agent) Kill() { a.proc.Kill() }

// Allocations lists what the agent's IPAM holds.
func (a *Agent) Allocations(t testing.TB) []*ipampb.Allocation {
	t.Helper()
	c, err := agentclient.Dial(a.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.IPAM.List(ctx, &ipampb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetAllocations()
}
