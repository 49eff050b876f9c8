// Command flatnet-agent is flatnet's per-node agent: it serves IPAM to the node's
// CNI plugin on a unix socket. `flatnet-agent install-cni` installs the CNI
// plugin and its conflist on the node instead (the DaemonSet's init container).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/flatnet-io/flatnet/agent"
	"github.com/flatnet-io/flatnet/config"
)

// version is stamped by the build: -ldflags "-X main.version=...".
var version = "dev"

// gcPercent is the agent's GOGC unless the environment sets one. Go lets the
// heap grow to (1 + GOGC/100) times what was live at the last collection
// before it collects again. The agent's heap is mostly the routes it learned
// (about 700 bytes a route, two thirds of it GoBGP's tables), so at Go's
// default of 100 its RSS with 100k routes is 240 MiB; at 40, 170-180 MiB,
// under the 200 MiB it must stay below (docs/operations.md, "Memory"), with
// the 100k routes still installed as fast as FRR installs them (bgpbench).
const gcPercent = 40

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	ctx, stop := stopOnSignal()
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "flatnet-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "install-cni" {
		return installCNI(args[1:])
	}
	fs := pflag.NewFlagSet("flatnet-agent", pflag.ContinueOnError)
	config.AddFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: name a configuration file with --config %s", fs.Arg(0), fs.Arg(0))
	}
	if *showVersion {
		fmt.Println("flatnet-agent", version)
		return nil
	}
	path, _ := fs.GetString("config")
	cfg, err := config.Load(path, fs)
	if err != nil {
		return err
	}
	agent.Version = version
	return agent.Run(ctx, cfg, slog.New(cfg.Log.Handler(os.Stderr)))
}

// stopOnSignal returns a context cancelled by the first SIGTERM, with
// agent.ErrPlannedRestart as its cause (what kubelet, systemd and the lab
// send to restart the agent), or SIGINT; stop stops listening.
func stopOnSignal() (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		if s, ok := <-sigs; ok {
			cancel(stopCause(s))
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(sigs)
		cancel(nil)
	}
}

// stopCause is why the agent stops on signal s.
func stopCause(s os.Signal) error {
	if s == syscall.SIGTERM {
		return fmt.Errorf("%v: %w", s, agent.ErrPlannedRestart)
	}
	return fmt.Errorf("%v: stop (not a planned restart)", s)
}
