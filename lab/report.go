package lab

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Rows of the report for Services.
const (
	RuleServiceAcross = "pod→Service, backend on another node"
	RuleHairpin       = "hairpin (a pod via its own Service)"
	RuleNodeService   = "node→Service"
	RuleNodePort      = "NodePort from the ToR"
	RuleHeadless      = "headless Service: endpoints are pod addresses"
	RuleDNS           = "pod→Service by name (cluster DNS)"
)

// ServiceRules are the Service rows, in the report's order.
var ServiceRules = []string{RuleServiceAcross, RuleHairpin, RuleNodeService, RuleNodePort, RuleHeadless, RuleDNS}

// Session is one BGP session as one side reports it.
type Session struct {
	Node, Peer, State string
	Received          int64
}

// Check is one row of `flatnetctl verify`.
type Check struct {
	Rule, From, To, Target, Detail string
	OK                             bool
}

// Report is what the lab shows a person: sessions, routes, connectivity.
type Report struct {
	Sessions  []Session
	Routes    map[string][]string // node → its BGP-learned routes
	Checks    []Check
	Reachable time.Time // when every check first passed
	Err       error     // why checks could not run
}

// OK says every check passed.
func (r *Report) OK() bool {
	if r.Err != nil || len(r.Checks) == 0 {
		return false
	}
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Print writes the report for a person.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintln(w, "== BGP sessions")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPEER\tSTATE\tPREFIXES ACCEPTED")
	for _, s := range r.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", s.Node, s.Peer, s.State, s.Received)
	}
	tw.Flush()
	fmt.Fprintln(w, "\n== Routes learned over BGP (pod /32 routes of the CNI plugin left out)")
	for _, node := range slices.Sorted(maps.Keys(r.Routes)) {
		fmt.Fprintf(w, "%s:\n", node)
		for _, rt := range r.Routes[node] {
			fmt.Fprintf(w, "  %s\n", rt)
		}
	}
	fmt.Fprintln(w, "\n== Connectivity, measured (TCP, and ICMP from pods; source as the receiver saw it)")
	if r.Err != nil {
		fmt.Fprintf(w, "could not check: %v\n", r.Err)
		return
	}
	type cell struct{ ok, all int }
	rules := []string{"pod→pod same node", "pod→pod across nodes", "node→pod", "pod→node", "localhost in pod"}
	if slices.ContainsFunc(r.Checks, func(c Check) bool { return slices.Contains(ServiceRules, c.Rule) }) {
		rules = append(rules, ServiceRules...)
	}
	sum := map[string]*cell{}
	for _, rule := range rules {
		sum[rule] = &cell{}
	}
	srcOK, srcAll := 0, 0
	for _, c := range r.Checks {
		s := sum[c.Rule]
		if s == nil {
			continue
		}
		s.all++
		if c.OK {
			s.ok++
		}
		if strings.HasPrefix(c.Rule, "pod→") {
			srcAll++
			if c.OK {
				srcOK++
			}
		}
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT")
	for _, rule := range rules {
		fmt.Fprintf(tw, "%s\t%s (%d/%d)\n", rule, verdict(sum[rule].ok, sum[rule].all), sum[rule].ok, sum[rule].all)
	}
	fmt.Fprintf(tw, "source address preserved (no NAT)\t%s (%d/%d)\n", verdict(srcOK, srcAll), srcOK, srcAll)
	tw.Flush()
	for _, c := range r.Checks {
		if !c.OK {
			fmt.Fprintf(w, "FAILED %s %s -> %s (%s): %s\n", c.Rule, c.From, c.To, c.Target, c.Detail)
		}
	}
}

// verdict is a row's result: "yes" when every one of all cells passed,
// "NO" when one failed, "n/a" when there was nothing to try (one pod a node
// has no pod→pod on one node).
func verdict(ok, all int) string {
	switch {
	case all == 0:
		return "n/a"
	case ok == all:
		return "yes"
	}
	return "NO"
}
