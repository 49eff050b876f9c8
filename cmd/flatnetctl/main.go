// Command flatnetctl is the operator's view of a flatnet node: it asks the node's
// agent over its unix socket.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/flatnet-io/flatnet/wellknown"
)

// version is stamped by the build: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "flatnetctl:", err)
		os.Exit(1)
	}
}

// options are the flags every command shares.
type options struct {
	socket  string
	output  string
	timeout time.Duration
}

func newRoot() *cobra.Command {
	opts := &options{}
	root := &cobra.Command{
		Use:           "flatnetctl",
		Short:         "Inspect a flatnet node through its agent",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("flatnetctl {{.Version}}\n")
	root.PersistentFlags().StringVar(&opts.socket, "socket", wellknown.AgentSocket, "the agent's API socket")
	root.PersistentFlags().StringVarP(&opts.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().DurationVar(&opts.timeout, "timeout", 10*time.Second, "how long to wait for the agent")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if opts.output != "table" && opts.output != "json" {
			return fmt.Errorf("--output %q: want table or json", opts.output)
		}
		return nil
	}
	ipamCmd := &cobra.Command{Use: "ipam", Short: "Address management"}
	ipamCmd.AddCommand(newIPAMShow(opts))
	root.AddCommand(ipamCmd, newStatus(opts), newVerify(opts), newPolicy(opts))
	return root
}
