// Command flatnet-lab brings a containerlab topology file up on this machine
// with network namespaces instead of containers: `flatnet-lab up -t FILE`
// builds it (and attaches --pods pods to every flatnet node), `down` removes
// everything it made, `exec` runs a command in a node, `status` prints the
// report: BGP sessions, learned routes and a measured connectivity table.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/flatnet-io/flatnet/test/harness"
	"github.com/flatnet-io/flatnet/test/lab/labnet"
)

func init() { runtime.LockOSThread() }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "flatnet-lab:", err)
		os.Exit(1)
	}
}

func usage() error {
	return errors.New("usage: flatnet-lab up|down|status|exec -t FILE [--pods N] [--datastore file|kubernetes] [-- node command...]")
}

func run() error {
	if len(os.Args) < 2 {
		return usage()
	}
	verb := os.Args[1]
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	file := fs.String("t", "", "topology file (*.clab.yml)")
	pods := fs.Int("pods", 2, "pods to create on every flatnet node (up)")
	bin := fs.String("bin", "", "directory of the flatnet binaries (default: the directory of flatnet-lab)")
	state := fs.String("state", "", "state directory (default /run/flatnet-lab/NAME)")
	datastore := fs.String("datastore", labnet.DatastoreFile, "where the agents keep IPAM and the node registry (up): file, or kubernetes (an API server the lab runs)")
	if err := fs.Parse(os.Args[2:]); err != nil {
		return err
	}
	if *file == "" {
		return usage()
	}
	t, err := labnet.Load(*file)
	if err != nil {
		return err
	}
	if *bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*bin = filepath.Dir(exe)
	}
	l := &labnet.Lab{T: t, Bin: *bin, StateDir: *state, Log: os.Stderr, Datastore: *datastore}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	switch verb {
	case "up":
		start := time.Now()
		if err := l.Up(ctx); err != nil {
			return err
		}
		for _, n := range t.NodesOf(labnet.RoleFlatnet) {
			for i := 1; i <= *pods; i++ {
				p, err := l.AddPod(ctx, n.Name, fmt.Sprintf("pod%d", i))
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "pod %s on %s: %v\n", p.Name, p.Node, p.Addrs)
			}
		}
		r, err := l.Report(ctx, 30*time.Second)
		if err != nil {
			return err
		}
		r.Print(os.Stdout)
		if k := l.Kube(); k != nil {
			if err := printKube(k); err != nil {
				return err
			}
		}
		if !r.OK() {
			return errors.New("connectivity check failed: see the table")
		}
		fmt.Printf("\nlab %s: every pod reachable from every pod and node %s after `up` began. `make lab-down` removes it.\n",
			t.Name, r.Reachable.Sub(start).Round(time.Millisecond))
	case "down":
		return l.Down()
	case "status":
		r, err := l.Report(ctx, 0)
		if err != nil {
			return err
		}
		r.Print(os.Stdout)
		if !r.OK() {
			return errors.New("connectivity check failed: see the table")
		}
	case "exec":
		args := fs.Args()
		if len(args) < 2 {
			return usage()
		}
		out, err := l.Exec(l.NS(args[0]), args[1:]...)
		fmt.Print(out)
		return err
	default:
		return usage()
	}
	return nil
}

// printKube shows what the agents keep in the lab's API server, and how to
// look further.
func printKube(k *harness.Kube) error {
	out, err := k.Kubectl("get", "nodes,pods,ipamblocks", "-A", "-o", "wide")
	if err != nil {
		return err
	}
	fmt.Printf("\nKubernetes (%s):\n%s", k.URL, out)
	fmt.Printf("more: ip netns exec %s kubectl --kubeconfig %s get ipamblocks -o yaml\n", k.NetNS(), k.Kubeconfig)
	return nil
}
