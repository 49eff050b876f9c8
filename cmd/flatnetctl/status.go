package main

import (
	"cmp"
	"context"
	"fmt"
	"google.golang.org/grpc"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/agent/agentpb"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

func newStatus(opts *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show this node's BGP sessions, what it announces, its blocks and its route counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return opts.withAgent(cmd.Context(), func(ctx context.Context, c *agentclient.Client) error {
				var st *agentpb.StatusResponse
				var usage *ipampb.UsageResponse
				err := opts.call(func(co ...grpc.CallOption) (err error) {
					st, err = agentpb.NewAgentClient(c.Conn()).Status(ctx, &agentpb.StatusRequest{}, co...)
					return err
				})
				if err == nil {
					err = opts.call(func(co ...grpc.CallOption) (err error) {
						usage, err = c.IPAM.Usage(ctx, &ipampb.UsageRequest{}, co...)
						return err
					})
				}
				if err != nil {
					return err
				}
				if opts.output == "json" {
					b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(st)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintln(cmd.OutOrStdout(), string(b))
					return err
				}
				return writeStatus(cmd.OutOrStdout(), st, usage)
			})
		},
	}
}

// now is the clock writeStatus reads, for tests.
var now = time.Now

func writeStatus(w io.Writer, st *agentpb.StatusResponse, usage *ipampb.UsageResponse) error {
	fmt.Fprintf(w, "node %s", st.GetNode())
	if !st.GetBgpEnabled() {
		fmt.Fprintln(w, ": BGP is off (bgp.enabled: false)")
	} else {
		fmt.Fprintf(w, ", AS %d, router ID %s, addresses %v\n", st.GetAsn(), st.GetRouterId(), st.GetAddresses())
	}
	if st.GetBgpEnabled() {
		fmt.Fprintln(w, "\nBGP sessions:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PEER\tADDRESS\tASN\tSTATE\tBFD\tUPTIME\tRECEIVED\tACCEPTED\tREJECTED\tADVERTISED")
		for _, p := range st.GetPeers() {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", p.GetName(), p.GetAddress(), p.GetAsn(), p.GetState(), cmp.Or(p.GetBfd(), "-"),
				time.Duration(p.GetUptimeSeconds())*time.Second, p.GetReceived(), p.GetAccepted(), p.GetRejected(), p.GetAdvertised())
		}
		tw.Flush()
		fmt.Fprintln(w, "\nAnnounced:")
		for _, a := range st.GetAdverts() {
			fmt.Fprintf(w, "  %s next hop %s\n", a.GetPrefix(), a.GetNextHop())
		}
		r := st.GetRoutes()
		fmt.Fprintf(w, "\nKernel routes: %d learned (%d ECMP), %d blackholes, %d pending, %d conflicts, %d stale; converged %v\n",
			r.GetLearned(), r.GetEcmp(), r.GetBlackholes(), r.GetPending(), r.GetConflicts(), r.GetStale(), r.GetConverged())
		if r.GetLastError() != "" {
			at := r.GetLastErrorAt().AsTime()
			fmt.Fprintf(w, "last route error, %s ago (%s): %s\n", now().Sub(at).Round(time.Second), at.Format(time.RFC3339), r.GetLastError())
		}
	}
	fmt.Fprintln(w, "\nBlocks:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BLOCK\tAFFINITY\tUSED\tFREE")
	for _, p := range usage.GetPools() {
		for _, b := range p.GetBlocks() {
			if b.GetAffinity() == usage.GetNode() {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", b.GetCidr(), b.GetAffinity(), b.GetUsed(), b.GetSize()-b.GetUsed())
			}
		}
	}
	return tw.Flush()
}
