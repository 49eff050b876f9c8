package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"google.golang.org/grpc"
	"io"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flatnet-io/flatnet/agent/agentclient"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
	"github.com/flatnet-io/flatnet/wellknown"
)

// runNFT runs nft with args and returns its output; tests replace it.
var runNFT = func(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "nft", args...).CombinedOutput()
	return string(out), err
}

func newPolicy(opts *options) *cobra.Command {
	return &cobra.Command{
		Use:   "policy NAMESPACE/POD",
		Short: "Show the network policy of a pod of this node: its nftables chains, with counters",
		Long: `Show the network policy the agent enforces on a pod of this node: for each of
the pod's attachments (found through the agent), whether its ingress and egress
are isolated and, if so, its chain in the nftables table inet ` + wellknown.PolicyTable + `,
rule by rule with the policy each comes from and its packet and byte counters.
Needs nft on PATH and the right to read the node's nftables (root).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, pod, ok := strings.Cut(args[0], "/")
			if !ok || ns == "" || pod == "" {
				return fmt.Errorf("%q: want NAMESPACE/POD", args[0])
			}
			return opts.withAgent(cmd.Context(), func(ctx context.Context, c *agentclient.Client) error {
				var usage *ipampb.UsageResponse
				if err := opts.call(func(co ...grpc.CallOption) (err error) {
					usage, err = c.IPAM.Usage(ctx, &ipampb.UsageRequest{}, co...)
					return err
				}); err != nil {
					return err
				}
				var list *ipampb.ListResponse
				if err := opts.call(func(co ...grpc.CallOption) (err error) {
					list, err = c.IPAM.List(ctx, &ipampb.ListRequest{Node: usage.GetNode()}, co...)
					return err
				}); err != nil {
					return err
				}
				atts := podAttachments(list, usage.GetNode(), ns, pod)
				if len(atts) == 0 {
					return fmt.Errorf("%s/%s has no address on node %s", ns, pod, usage.GetNode())
				}
				if _, err := runNFT(ctx, "list", "table", "inet", wellknown.PolicyTable); err != nil {
					return fmt.Errorf("no policy enforced on node %s: nft list table inet %s: %w", usage.GetNode(), wellknown.PolicyTable, err)
				}
				for i := range atts {
					for _, d := range []*direction{&atts[i].Ingress, &atts[i].Egress} {
						args := []string{"list", "chain", "inet", wellknown.PolicyTable, d.Chain}
						if opts.output == "json" {
							args = append([]string{"-j"}, args...)
						}
						out, err := runNFT(ctx, args...)
						switch {
						case err == nil:
							d.Isolated, d.Rules = true, out
						case strings.Contains(out, "No such file or directory"):
						default:
							return fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, out)
						}
					}
				}
				if opts.output == "json" {
					return writePolicyJSON(cmd.OutOrStdout(), atts)
				}
				return writePolicy(cmd.OutOrStdout(), ns, pod, atts)
			})
		},
	}
}

// attachment is one of a pod's interfaces and its policy on this node.
type attachment struct {
	Handle    string    `json:"handle"`
	Veth      string    `json:"veth"`
	Addresses []string  `json:"addresses"`
	Ingress   direction `json:"ingress"`
	Egress    direction `json:"egress"`
}

type direction struct {
	Chain    string `json:"chain"`
	Isolated bool   `json:"isolated"`
	// Rules is nft's listing of the chain (its JSON with -o json).
	Rules string `json:"-"`
	JSON  any    `json:"nft,omitempty"`
}

// podAttachments gathers ns/pod's allocations on node by handle, in order.
func podAttachments(list *ipampb.ListResponse, node, ns, pod string) []attachment {
	var out []attachment
	index := map[string]int{}
	for _, a := range list.GetAllocations() {
		at := a.GetAttrs()
		if at.GetNode() != node || at.GetNamespace() != ns || at.GetPod() != pod {
			continue
		}
		i, ok := index[a.GetHandle()]
		if !ok {
			veth := vethOf(a.GetHandle())
			out = append(out, attachment{Handle: a.GetHandle(), Veth: veth,
				Ingress: direction{Chain: "ingress-" + veth}, Egress: direction{Chain: "egress-" + veth}})
			i = len(out) - 1
			index[a.GetHandle()] = i
		}
		out[i].Addresses = append(out[i].Addresses, a.GetAddress())
	}
	return out
}

// vethOf is the host veth of the attachment with IPAM handle
// "<containerID>/<ifname>", as the CNI plugin names it (cni.HostVethName;
// a test keeps the two equal).
func vethOf(handle string) string {
	sum := sha256.Sum256([]byte(handle))
	return wellknown.HostVethPrefix + hex.EncodeToString(sum[:6])
}

func writePolicy(w io.Writer, ns, pod string, atts []attachment) error {
	for _, a := range atts {
		fmt.Fprintf(w, "Pod %s/%s  handle %s  veth %s  addresses %s\n", ns, pod, a.Handle, a.Veth, strings.Join(a.Addresses, ", "))
		for _, d := range []struct {
			name string
			d    direction
		}{{"ingress", a.Ingress}, {"egress", a.Egress}} {
			if !d.d.Isolated {
				fmt.Fprintf(w, "\n%s: not isolated (no policy selects the pod for %s): everything allowed\n", d.name, d.name)
				continue
			}
			fmt.Fprintf(w, "\n%s: isolated, only what these rules allow (then the default deny):\n", d.name)
			for _, line := range strings.Split(strings.TrimRight(d.d.Rules, "\n"), "\n") {
				fmt.Fprintf(w, "  %s\n", line)
			}
		}
	}
	return nil
}

func writePolicyJSON(w io.Writer, atts []attachment) error {
	for i := range atts {
		for _, d := range []*direction{&atts[i].Ingress, &atts[i].Egress} {
			if d.Isolated {
				var v any
				if err := json.Unmarshal([]byte(d.Rules), &v); err != nil {
					return fmt.Errorf("nft's JSON for %s: %w", d.Chain, err)
				}
				d.JSON = v
			}
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"attachments": atts})
}
