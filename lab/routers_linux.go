package lab

import (
	"context"
	"fmt"

	"github.com/flatnet-io/flatnet/lab/router"
	"github.com/flatnet-io/flatnet/lab/topology"
)

// frrDir holds an FRR router's files: its vtysh socket directory.
func (l *Lab) frrDir(node string) string { return l.state(node, "frr") }

// birdDir holds a BIRD router's files.
func (l *Lab) birdDir(node string) string { return l.state(node, "bird") }

// startFRR runs zebra and bgpd in a router's namespace, with the
// configuration bound at FRRConfigPath as bgpd's, and bfdd too when the
// daemons file bound at FRRDaemonsPath says bfdd=yes.
func (l *Lab) startFRR(ctx context.Context, n *topology.Node) error {
	conf, _ := l.T.Bind(n, topology.FRRConfigPath)
	bfdd, err := l.T.DaemonEnabled(n, "bfdd")
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if _, err := router.StartFRR(ctx, router.Options{NetNS: l.NS(n.Name), Dir: l.frrDir(n.Name), Config: conf, Detach: true, BFD: bfdd}); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	l.logf("node %s: FRR up (vtysh --vty_socket %s)", n.Name, l.frrDir(n.Name))
	return nil
}

// startBIRD runs bird in a router's namespace with the configuration bound
// at BIRDConfigPath.
func (l *Lab) startBIRD(ctx context.Context, n *topology.Node) error {
	conf, _ := l.T.Bind(n, topology.BIRDConfigPath)
	if _, err := router.StartBIRD(ctx, router.Options{NetNS: l.NS(n.Name), Dir: l.birdDir(n.Name), Config: conf, Detach: true}); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	l.logf("node %s: BIRD up (birdc -s %s)", n.Name, router.BIRDSocket(l.birdDir(n.Name)))
	return nil
}

// Vtysh runs an FRR command on a router.
func (l *Lab) Vtysh(node, command string) (string, error) {
	return router.Vtysh(l.frrDir(node), command)
}

// VtyshJSON runs a vtysh command ending in "json" and decodes its output.
func (l *Lab) VtyshJSON(node, command string, v any) error {
	return router.VtyshJSON(l.frrDir(node), command, v)
}

// Birdc runs a BIRD command on a router.
func (l *Lab) Birdc(node, command string) (string, error) {
	return router.Birdc(l.birdDir(node), command)
}
