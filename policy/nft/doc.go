// Package nft enforces a policy.Ruleset with nftables: it renders the
// ruleset into one table of flatnet's own, inet flatnet-policy, and keeps
// that table equal to it. It must not decide policy (package policy does)
// and must never touch another table.
//
// # The table
//
//	chain forward (hook forward, priority filter, policy accept)
//	    ct state established,related accept   replies of allowed connections
//	    iifname vmap @pod-egress               a local pod's egress
//	    oifname vmap @pod-ingress              a local pod's ingress
//	chain input (hook input, priority filter, policy accept)
//	    ct state established,related accept
//	    icmpv6 neighbour discovery accept      a pod finds its gateway
//	    iifname vmap @pod-egress               a local pod's egress to this node
//	map pod-ingress, pod-egress                host veth → jump <direction>-<veth>
//	chain ingress-<veth>, egress-<veth>        one per isolated direction of a pod:
//	    <peer> <ports> counter accept|return   one rule per allowed peer, family, protocol
//	    counter drop                           default deny
//	set pods-<id>-v4, pods-<id>-v6             the addresses of the pods a selector picks
//	set ports-<id>-v4, ports-<id>-v6           (address . protocol . port) for named ports
//
// A pod's chain exists only for a direction some policy isolates; a pod no
// policy isolates has no element in the maps and passes. Egress chains
// return on a match (ingress of a local destination pod is judged next);
// ingress chains accept. The node's own traffic to its pods (the output
// hook: kubelet probes) is never judged. Chains and map elements are keyed
// by veth name, so a pod's rules can exist before its veth does: the agent
// installs them while the CNI ADD is still running, and the pod's first
// packet already meets them.
//
// Sets are named by what selects their members: a pod that comes or goes
// changes set elements and its own chains and map elements, never another
// pod's rules.
//
// # Reconcile
//
// A [Reconciler] holds the desired table (Set), and one goroutine (Run)
// writes the difference between it and the kernel in one nft transaction
// per change (nft -f: all or nothing). Every rule carries a comment ending
// in a hash of its chain and text; a chain whose rules' comments differ from
// the wanted ones, in order, is flushed and rewritten in the same
// transaction, so a rule deleted, added or reordered by hand is repaired.
// Sets and maps are repaired element by element; chains, sets and maps of
// the table that nobody wants are removed. The kernel is read again on
// every resync (default 10s) and after a failed write.
//
// Startup writes only the difference and Close removes nothing: the table
// outlives the agent, so policy stays enforced while it is down or
// restarting. [RemoveIfPresent] deletes the table, for when policy is turned off.
package nft
