package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flatnet-io/flatnet/lab/topology"
)

// reportWait is how long `up` retries the connectivity checks while BGP
// converges.
const reportWait = 30 * time.Second

// errChecks is the error of a report with a failed check.
var errChecks = errors.New("connectivity check failed: see the table")

// UpWithPods is `flatnet-lab up`: it brings the lab up (Up), attaches pods
// pods, pod1…podN, to every flatnet node, and writes the report to w (and
// progress to l.Log). It fails when a check failed.
func (l *Lab) UpWithPods(ctx context.Context, pods int, w io.Writer) error {
	if pods < 0 {
		return fmt.Errorf("pods %d: want 0 or more", pods)
	}
	start := time.Now()
	if err := l.Up(ctx); err != nil {
		return err
	}
	if l.HasRealNodes() && pods > 0 {
		if err := l.runEchoPods(pods); err != nil {
			return err
		}
	}
	for _, n := range l.T.NodesOf(topology.RoleFlatnet) {
		if isReal(n) {
			continue // its pods are the kubelet's
		}
		for i := 1; i <= pods; i++ {
			p, err := l.AddPod(ctx, n.Name, fmt.Sprintf("pod%d", i))
			if err != nil {
				return err
			}
			l.logf("pod %s on %s: %v", p.Name, p.Node, p.Addrs)
		}
	}
	r, err := l.Report(ctx, reportWait)
	if err != nil {
		return err
	}
	r.Print(w)
	if l.kube != nil {
		if err := l.printKube(w); err != nil {
			return err
		}
	}
	if !r.OK() {
		return errChecks
	}
	fmt.Fprintf(w, "\nlab %s: every pod reachable from every pod and node %s after `up` began. `make lab-down` removes it.\n",
		l.T.Name, r.Reachable.Sub(start).Round(time.Millisecond))
	return nil
}

// Status is `flatnet-lab status`: the report, measured now, written to w.
// It fails when a check failed.
func (l *Lab) Status(ctx context.Context, w io.Writer) error {
	if err := l.AttachKube(); err != nil {
		return err
	}
	r, err := l.Report(ctx, 0)
	if err != nil {
		return err
	}
	r.Print(w)
	if !r.OK() {
		return errChecks
	}
	return nil
}

// printKube shows what the agents keep in the lab's API server, and how to
// look further.
func (l *Lab) printKube(w io.Writer) error {
	out, err := l.kube.Kubectl("get", "nodes,pods,ipamblocks", "-A", "-o", "wide")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nKubernetes (%s):\n%s", l.kube.URL, out)
	fmt.Fprintf(w, "more: ip netns exec %s kubectl --kubeconfig %s get ipamblocks -o yaml\n", l.kube.NetNS(), l.kube.Kubeconfig)
	return nil
}
