package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/spf13/cobra"
)

// Endpoint is a pod or a node that verify sends traffic from and to: a
// network namespace and its addresses. The lab writes a list of them.
type Endpoint struct {
	Name  string       `json:"name"`
	Kind  string       `json:"kind"` // "pod" or "node"
	Node  string       `json:"node"` // the node a pod runs on; a node's own name
	NetNS string       `json:"netns"`
	Addrs []netip.Addr `json:"addrs"`
}

// Check is one measured cell of the verification table.
type Check struct {
	Rule   string `json:"rule"`
	From   string `json:"from"`
	To     string `json:"to"`
	Target string `json:"target"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

func newVerify(opts *options) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "verify --endpoints FILE",
		Short: "Prove the Kubernetes network model with real traffic between pods and nodes",
		Long: `verify sends real traffic between the given pods and nodes (network
namespaces, as the lab makes them) and checks the rules every Kubernetes
network must hold: every pod reaches every pod on every node (ICMP and TCP),
the receiver sees the sender's own pod address (no NAT), every node reaches
every pod, and two processes in one pod reach each other on localhost.
It prints one row per check and exits non-zero on any failure. Run as root.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			var eps []Endpoint
			if err := json.Unmarshal(b, &eps); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			checks := Verify(eps)
			if opts.output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(checks); err != nil {
					return err
				}
			} else {
				WriteChecks(cmd.OutOrStdout(), checks)
			}
			for _, c := range checks {
				if !c.OK {
					return fmt.Errorf("the network model does not hold: see the failed checks")
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "endpoints", "", "JSON list of pods and nodes (name, kind, node, netns, addrs)")
	_ = cmd.MarkFlagRequired("endpoints")
	return cmd
}

// Verify runs every check between eps, a few at a time.
func Verify(eps []Endpoint) []Check {
	var pods, nodes []Endpoint
	for _, e := range eps {
		if e.Kind == "node" {
			nodes = append(nodes, e)
		} else {
			pods = append(pods, e)
		}
	}
	type job struct {
		rule     string
		from, to Endpoint
		target   netip.Addr
	}
	var jobs []job
	for _, from := range pods {
		for _, to := range pods {
			if from.Name == to.Name {
				continue
			}
			rule := "pod→pod across nodes"
			if from.Node == to.Node {
				rule = "pod→pod same node"
			}
			for _, a := range to.Addrs {
				jobs = append(jobs, job{rule, from, to, a})
			}
		}
		for _, n := range nodes {
			for _, a := range n.Addrs {
				jobs = append(jobs, job{"pod→node", from, n, a})
			}
		}
	}
	for _, n := range nodes {
		for _, to := range pods {
			for _, a := range to.Addrs {
				jobs = append(jobs, job{"node→pod", n, to, a})
			}
		}
	}
	checks := make([]Check, len(jobs)+len(pods))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, j := range jobs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			checks[i] = probe(j.rule, j.from, j.to, j.target)
		})
	}
	for i, p := range pods {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			checks[len(jobs)+i] = probe("localhost in pod", p, p, netip.MustParseAddr("127.0.0.1"))
		})
	}
	wg.Wait()
	return checks
}

// probe connects over TCP from one namespace to a listener in another and
// checks the source address the listener saw: it must be one of the sender's
// own (no NAT). For pods it also pings.
func probe(rule string, from, to Endpoint, target netip.Addr) Check {
	c := Check{Rule: rule, From: from.Name, To: to.Name, Target: target.String()}
	fail := func(format string, args ...any) Check {
		c.Detail = fmt.Sprintf(format, args...)
		return c
	}
	lis, err := inNS(to.NetNS, func() (net.Listener, error) {
		return net.Listen("tcp", netip.AddrPortFrom(target, 0).String())
	})
	if err != nil {
		return fail("listen in %s: %v", to.Name, err)
	}
	defer lis.Close()
	seen := make(chan netip.Addr, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			close(seen)
			return
		}
		defer conn.Close()
		ap, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
		seen <- ap.Addr().Unmap()
	}()
	conn, err := inNS(from.NetNS, func() (net.Conn, error) {
		return net.DialTimeout("tcp", lis.Addr().String(), 3*time.Second)
	})
	if err != nil {
		return fail("TCP: %v", err)
	}
	defer conn.Close()
	var src netip.Addr
	select {
	case src = <-seen:
	case <-time.After(3 * time.Second):
		return fail("TCP: connected, but the listener saw nothing")
	}
	if target.IsLoopback() {
		c.OK = true
		c.Detail = "TCP"
		return c
	}
	own := false
	for _, a := range from.Addrs {
		own = own || a == src
	}
	if from.Kind == "pod" && !own {
		return fail("TCP: receiver saw source %s, not the pod's own %v (NAT)", src, from.Addrs)
	}
	if from.Kind == "pod" {
		if out, err := pingFrom(from.NetNS, target); err != nil {
			return fail("ICMP: %v %s", err, strings.TrimSpace(out))
		}
	}
	c.OK = true
	c.Detail = "TCP+ICMP, source " + src.String()
	if from.Kind != "pod" {
		c.Detail = "TCP, source " + src.String()
	}
	return c
}

// inNS runs fn with the calling goroutine in the named network namespace;
// sockets made there stay there.
func inNS[T any](name string, fn func() (T, error)) (T, error) {
	var out T
	h, err := ns.GetNS(nsPath(name))
	if err != nil {
		return out, err
	}
	defer h.Close()
	err = h.Do(func(ns.NetNS) error {
		var err error
		out, err = fn()
		return err
	})
	return out, err
}

func pingFrom(netns string, dst netip.Addr) (string, error) {
	return runCmd("nsenter", "--net="+nsPath(netns), "ping", "-c", "1", "-W", "2", dst.String())
}

// nsPath is the file of a network namespace: a name under /run/netns, or a
// path as it is (/proc/<pid>/ns/net: a real pod's, made by its runtime).
func nsPath(name string) string {
	if strings.HasPrefix(name, "/") {
		return name
	}
	return "/run/netns/" + name
}

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// WriteChecks prints the checks as a table.
func WriteChecks(w io.Writer, checks []Check) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tFROM\tTO\tTARGET\tRESULT\tDETAIL")
	failed := 0
	for _, c := range checks {
		res := "ok"
		if !c.OK {
			res = "FAIL"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Rule, c.From, c.To, c.Target, res, c.Detail)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d checks, %d failed\n", len(checks), failed)
}
