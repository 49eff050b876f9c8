package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/pflag"

	"github.com/flatnet-io/flatnet/cni/install"
)

// installCNI parses the flags of `flatnet-agent install-cni` and installs.
// The defaults are the DaemonSet's paths: the image's plugins, the host's
// directories mounted under /host, the conflist from its ConfigMap.
func installCNI(args []string) error {
	fs := pflag.NewFlagSet("flatnet-agent install-cni", pflag.ContinueOnError)
	var opts install.Options
	fs.StringVar(&opts.SourceDir, "source-dir", "/opt/flatnet/cni", "directory of the plugin binaries to install, each under its own name")
	fs.StringVar(&opts.BinDir, "bin-dir", "/host/opt/cni/bin", "the node's CNI plugin directory")
	fs.StringVar(&opts.Conflist, "conflist", "/etc/flatnet/cni/10-flatnet.conflist", "the network configuration list to install (its name is kept)")
	fs.StringVar(&opts.ConfDir, "conf-dir", "/host/etc/cni/net.d", "the node's CNI configuration directory")
	fs.StringSliceVar(&opts.IfMissing, "if-missing", []string{"loopback"}, "binaries installed only where the node has none of that name")
	fs.BoolVar(&opts.Force, "force", false, "replace a conflist of the same name that is not flatnet's")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("install-cni: unexpected argument %q", fs.Arg(0))
	}
	_, err := install.Install(opts, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	return err
}
