// Package router runs a lab's BGP routers — FRR (zebra and bgpd) and BIRD,
// as Debian packages them — in a network namespace with the configuration
// file it is given, and asks them for their BGP sessions. It writes no
// router configuration and touches nothing outside the namespace and the
// directory it is given.
package router

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/flatnet-io/flatnet/lab/netns"
)

// startTimeout bounds how long each daemon may take to be ready.
const startTimeout = 10 * time.Second

// Options says where a router runs.
type Options struct {
	// NetNS names the router's namespace.
	NetNS string
	// Dir holds the daemons' files: their copy of the configuration,
	// sockets, pid files and logs.
	Dir string
	// Config is the configuration file: bgpd's for FRR, bird's for BIRD.
	Config string
	// Detach lets the daemons outlive this process (the lab).
	Detach bool
	// BFD also runs FRR's bfdd: bgpd's `neighbor X bfd` sessions reach it
	// through zebra; it needs no configuration of its own for FRR's
	// defaults (300 ms × 3).
	BFD bool
}

// Session is one BGP session as the router reports it.
type Session struct {
	Peer, State string
	// Received is the number of prefixes the router accepted from the peer.
	Received int64
}

// Router is a running router's daemons.
type Router struct {
	procs []*netns.Process
}

// Stop kills the router's daemons and waits for them.
func (r *Router) Stop() {
	for _, p := range slices.Backward(r.procs) {
		p.Kill()
	}
}

func (r *Router) start(ctx context.Context, o Options, ready func() bool, what string, args ...string) error {
	name := filepath.Base(args[0])
	p, err := netns.Start(netns.Options{NetNS: o.NetNS, Log: filepath.Join(o.Dir, name+".log"), Detach: o.Detach}, args...)
	if err != nil {
		return err
	}
	r.procs = append(r.procs, p)
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	return p.Await(ctx, what, ready)
}

// StartFRR runs zebra and bgpd in the namespace as the frr user, with
// o.Config as bgpd's configuration (copied into o.Dir), and waits until
// bgpd has read it. FRR's own run directory for the namespace is
// /var/run/frr/<namespace> (RemoveFRRRunDir). On failure nothing it started
// runs.
func StartFRR(ctx context.Context, o Options) (_ *Router, err error) {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(o.Config)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "bgpd.conf"), b, 0o640); err != nil {
		return nil, err
	}
	if _, err := netns.Run("chown", "-R", "frr:frr", o.Dir); err != nil {
		return nil, err
	}
	r := &Router{}
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	zserv := filepath.Join(o.Dir, "zserv.api")
	common := []string{"-N", o.NetNS, "-z", zserv, "--vty_socket", o.Dir, "-u", "frr", "-g", "frr", "-P", "0"}
	// bgpd needs zebra's socket.
	if err := r.start(ctx, o, netns.FileExists(zserv), "listening on "+zserv,
		append([]string{"/usr/lib/frr/zebra", "-i", filepath.Join(o.Dir, "zebra.pid")}, common...)...); err != nil {
		return nil, err
	}
	if o.BFD {
		bfdVty := filepath.Join(o.Dir, "bfdd.vty")
		if err := r.start(ctx, o, netns.FileExists(bfdVty), "listening on "+bfdVty,
			append([]string{"/usr/lib/frr/bfdd", "-i", filepath.Join(o.Dir, "bfdd.pid"), "--bfdctl", filepath.Join(o.Dir, "bfdd.sock")}, common...)...); err != nil {
			return nil, err
		}
	}
	// bgpd opens its vty socket once it has read its config, by when it
	// listens for BGP too.
	vty := filepath.Join(o.Dir, "bgpd.vty")
	if err := r.start(ctx, o, netns.FileExists(vty), "listening on "+vty,
		append([]string{"/usr/lib/frr/bgpd", "-f", filepath.Join(o.Dir, "bgpd.conf"), "-i", filepath.Join(o.Dir, "bgpd.pid")}, common...)...); err != nil {
		return nil, err
	}
	return r, nil
}

// RemoveFRRRunDir removes the run directory FRR's daemons made for a
// namespace they ran in (-N).
func RemoveFRRRunDir(netnsName string) error {
	return os.RemoveAll(filepath.Join("/var/run/frr", netnsName))
}

// Vtysh runs an FRR command on the router whose files are in dir.
func Vtysh(dir, command string) (string, error) {
	return netns.Run("vtysh", "--vty_socket", dir, "-c", command)
}

// VtyshJSON runs a vtysh command ending in "json" and decodes its output.
func VtyshJSON(dir, command string, v any) error {
	out, err := Vtysh(dir, command)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("vtysh %s: %w", command, err)
	}
	return nil
}

// FRRSessions lists an FRR router's BGP sessions, one per peer and address
// family (`show bgp summary json`).
func FRRSessions(dir string) ([]Session, error) {
	var sum map[string]struct {
		Peers map[string]struct {
			RemoteAs int64  `json:"remoteAs"`
			State    string `json:"state"`
			PfxRcd   int64  `json:"pfxRcd"`
		} `json:"peers"`
	}
	if err := VtyshJSON(dir, "show bgp summary json", &sum); err != nil {
		return nil, err
	}
	var out []Session
	for _, af := range []string{"ipv4Unicast", "ipv6Unicast"} {
		peers := sum[af].Peers
		for _, addr := range slices.Sorted(maps.Keys(peers)) {
			p := peers[addr]
			out = append(out, Session{Peer: fmt.Sprintf("%s AS%d %s", addr, p.RemoteAs, af), State: strings.ToLower(p.State), Received: p.PfxRcd})
		}
	}
	return out, nil
}

// StartBIRD runs bird in the namespace with o.Config and waits until its
// control socket is there. On failure nothing it started runs.
func StartBIRD(ctx context.Context, o Options) (_ *Router, err error) {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	r := &Router{}
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	ctl := BIRDSocket(o.Dir)
	if err := r.start(ctx, o, netns.FileExists(ctl), "listening on "+ctl,
		"bird", "-f", "-c", o.Config, "-s", ctl, "-P", filepath.Join(o.Dir, "bird.pid")); err != nil {
		return nil, err
	}
	return r, nil
}

// BIRDSocket is the control socket of the BIRD whose files are in dir.
func BIRDSocket(dir string) string { return filepath.Join(dir, "bird.ctl") }

// Birdc runs a BIRD command on the router whose files are in dir.
func Birdc(dir, command string) (string, error) {
	return netns.Run("birdc", append([]string{"-s", BIRDSocket(dir)}, strings.Fields(command)...)...)
}

// BIRDSessions lists a BIRD router's BGP sessions (`show protocols all`).
func BIRDSessions(dir string) ([]Session, error) {
	out, err := Birdc(dir, "show protocols all")
	if err != nil {
		return nil, err
	}
	return birdSessions(out), nil
}
