// Command flatnet-lab brings a containerlab topology file up on this machine
// with network namespaces instead of containers: `flatnet-lab up -t FILE`
// builds it (and attaches --pods pods to every flatnet node), `down` removes
// everything it made, `exec` runs a command in a node, `status` prints the
// report: BGP sessions, learned routes and a measured connectivity table.
// The lab itself is package lab.
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

	"github.com/flatnet-io/flatnet/lab"
	"github.com/flatnet-io/flatnet/lab/kubenode"
	"github.com/flatnet-io/flatnet/lab/topology"
)

func init() { runtime.LockOSThread() }

func main() {
	kubenode.MaybeInit() // a real node's first process, started by the lab
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "flatnet-lab:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage: flatnet-lab up|down|status|exec -t FILE [--pods N] [--datastore file|kubernetes] [node command...]")

func run(ctx context.Context, args []string) error {
	if len(args) < 1 {
		return errUsage
	}
	verb := args[0]
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	file := fs.String("t", "", "topology file (*.clab.yml)")
	pods := fs.Int("pods", 2, "pods to create on every flatnet node (up)")
	bin := fs.String("bin", "", "directory of the flatnet binaries (default: the directory of flatnet-lab)")
	kubeBin := fs.String("kube-bin", os.Getenv("FLATNET_KUBE_BIN"), "directory of kube-apiserver, for --datastore kubernetes (default $FLATNET_KUBE_BIN)")
	topologies := fs.String("topologies", "", "directory of the topologies -t names (default: test/topologies here, or next to the binary's directory)")
	state := fs.String("state", "", "state directory (default /run/flatnet-lab/NAME)")
	datastore := fs.String("datastore", lab.DatastoreFile, "where the agents keep IPAM and the node registry (up): file, or kubernetes (an API server the lab runs; always, with real nodes)")
	images := fs.String("images", "", "directory of the image archives real nodes import (default: images/ beside flatnet-lab, where make image puts them)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *file == "" {
		return errUsage
	}
	t, err := loadTopology(*file, topologyDirs(*topologies)...)
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
	if *images == "" {
		*images = filepath.Join(*bin, "images")
	}
	l := &lab.Lab{T: t, Bin: *bin, KubeBin: *kubeBin, ImageDir: *images, StateDir: *state, Log: os.Stderr, Datastore: *datastore}
	if l.HasRealNodes() {
		datastoreSet := false
		fs.Visit(func(f *flag.Flag) { datastoreSet = datastoreSet || f.Name == "datastore" })
		if !datastoreSet {
			l.Datastore = lab.DatastoreKubernetes
		}
	}
	switch verb {
	case "up":
		return l.UpWithPods(ctx, *pods, os.Stdout)
	case "down":
		return l.Down()
	case "status":
		return l.Status(ctx, os.Stdout)
	case "exec":
		if fs.NArg() < 2 {
			return errUsage
		}
		out, err := l.Exec(l.NS(fs.Arg(0)), fs.Args()[1:]...)
		fmt.Print(out)
		return err
	}
	return errUsage
}

// loadTopology loads the topology arg names: a file, or a topology's name
// in one of dirs.
func loadTopology(arg string, dirs ...string) (*topology.Topology, error) {
	path, err := topology.Resolve(arg, dirs...)
	if err != nil {
		return nil, err
	}
	return topology.Load(path)
}

// topologyDirs are where -t looks for a topology by name: dir if given,
// else test/topologies in the working directory and next to the binary's
// directory (bin/flatnet-lab in the repository).
func topologyDirs(dir string) []string {
	if dir != "" {
		return []string{dir}
	}
	dirs := []string{filepath.Join("test", "topologies")}
	if exe, err := os.Executable(); err == nil {
		d := filepath.Join(filepath.Dir(exe), "..", "test", "topologies")
		if abs, err := filepath.Abs(dirs[0]); err != nil || abs != d {
			dirs = append(dirs, d)
		}
	}
	return dirs
}
