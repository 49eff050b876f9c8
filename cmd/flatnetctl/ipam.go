package main

import (
	"context"
	"encoding/json"
	"fmt"
	"google.golang.org/grpc"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

func newIPAMShow(opts *options) *cobra.Command {
	var handles bool
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show pools, claimed blocks and, with --handles, allocations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return opts.withAgent(cmd.Context(), func(ctx context.Context, c *agentclient.Client) error {
				client := c.IPAM
				var usage *ipampb.UsageResponse
				err := opts.call(func(co ...grpc.CallOption) (err error) {
					usage, err = client.Usage(ctx, &ipampb.UsageRequest{}, co...)
					return err
				})
				if err != nil {
					return err
				}
				var list *ipampb.ListResponse
				if handles {
					err := opts.call(func(co ...grpc.CallOption) (err error) {
						list, err = client.List(ctx, &ipampb.ListRequest{}, co...)
						return err
					})
					if err != nil {
						return err
					}
				}
				if opts.output == "json" {
					return writeJSON(cmd.OutOrStdout(), usage, list)
				}
				return writeTable(cmd.OutOrStdout(), usage, list)
			})
		},
	}
	cmd.Flags().BoolVar(&handles, "handles", false, "also list every allocation with its handle")
	return cmd
}

// withAgent connects to the agent at --socket and calls fn with the connection
// and a context that ends after --timeout.
func (o *options) withAgent(ctx context.Context, fn func(context.Context, *agentclient.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c, err := agentclient.Dial(o.socket)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c)
}

// call makes one call to the agent (rpc passes the options on) and turns
// its failure into one line that says what happened: the agent cannot be
// reached, it did not answer within --timeout, or it answered with an error,
// which is passed on as it is.
func (o *options) call(rpc func(...grpc.CallOption) error) error {
	var p peer.Peer
	err := rpc(grpc.Peer(&p))
	if err == nil {
		return nil
	}
	return o.explain(err, p.Addr != nil)
}

// explain is call's account of err; answered says the call reached the
// agent.
func (o *options) explain(err error, answered bool) error {
	st := status.Convert(err)
	switch {
	case st.Code() == codes.DeadlineExceeded:
		// A frozen or overloaded agent: its socket takes the connection, then
		// nothing comes back.
		return fmt.Errorf("agent at %s not answering within %v (stopped, frozen or overloaded?)", o.socket, o.timeout)
	case answered:
		return fmt.Errorf("agent at %s: %s (%s)", o.socket, oneLine(st.Message()), strings.ToLower(st.Code().String()))
	case st.Code() == codes.Unavailable:
		return fmt.Errorf("agent at %s is not reachable (is flatnet-agent running? is --socket right?): %s", o.socket, oneLine(st.Message()))
	}
	return fmt.Errorf("agent at %s: %s", o.socket, oneLine(st.Message()))
}

// oneLine joins the lines of a message.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func writeJSON(w io.Writer, usage *ipampb.UsageResponse, list *ipampb.ListResponse) error {
	out := map[string]json.RawMessage{}
	m := protojson.MarshalOptions{EmitUnpopulated: true}
	b, err := m.Marshal(usage)
	if err != nil {
		return err
	}
	out["usage"] = b
	if list != nil {
		if b, err = m.Marshal(list); err != nil {
			return err
		}
		out["allocations"] = b
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func writeTable(w io.Writer, usage *ipampb.UsageResponse, list *ipampb.ListResponse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Node %s\n\n", usage.GetNode())
	fmt.Fprintln(tw, "POOL\tCIDR\tBLOCK SIZE\tBLOCKS CLAIMED\tADDRESSES USED")
	for _, p := range usage.GetPools() {
		used := 0
		for _, b := range p.GetBlocks() {
			used += int(b.GetUsed())
		}
		fmt.Fprintf(tw, "%s\t%s\t/%d\t%d of %s\t%d\n", p.GetName(), p.GetCidr(), p.GetBlockSize(), len(p.GetBlocks()), powerOfTwo(p.GetBlockBits()), used)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "BLOCK\tPOOL\tNODE\tUSED\tFREE\tNOTE")
	row := func(pool string, b *ipampb.BlockUsage) {
		note := ""
		if b.GetEmptySince() != nil {
			note = "empty since " + b.GetEmptySince().AsTime().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", b.GetCidr(), pool, b.GetAffinity(), b.GetUsed(), b.GetSize()-b.GetUsed(), note)
	}
	for _, p := range usage.GetPools() {
		for _, b := range p.GetBlocks() {
			row(p.GetName(), b)
		}
	}
	for _, b := range usage.GetUnpooledBlocks() {
		row("(not in any pool)", b)
	}
	if list != nil {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "ADDRESS\tHANDLE\tNODE\tPOD\tBLOCK\tALLOCATED")
		for _, a := range list.GetAllocations() {
			pod := "-"
			if a.GetAttrs().GetPod() != "" {
				pod = a.GetAttrs().GetNamespace() + "/" + a.GetAttrs().GetPod()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.GetAddress(), a.GetHandle(), a.GetAttrs().GetNode(), pod, a.GetBlock(), a.GetAllocated().AsTime().Format(time.RFC3339))
		}
	}
	return tw.Flush()
}

// powerOfTwo prints 2^bits exactly while it is small, and as a power beyond.
func powerOfTwo(bits int32) string {
	if bits < 32 {
		return fmt.Sprint(uint64(1) << bits)
	}
	return fmt.Sprintf("2^%d", bits)
}
