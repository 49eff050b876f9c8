// Package policy turns Kubernetes NetworkPolicy (networking.k8s.io/v1) into
// the policy one node enforces: for each pod of the node, keyed by its host
// veth, whether ingress and egress are isolated and which peers and ports
// are allowed, with the pods that selectors pick gathered into named address
// sets that rules share.
//
// It is pure logic: Pods, Namespaces and NetworkPolicies in (k8s.io/api
// types, as informers hold them), a [Ruleset] out. It must not touch the
// kernel (package policy/nft renders a Ruleset into nftables) nor talk to the
// API server (the agent's informers feed it).
//
// # Semantics
//
//   - A pod is isolated for ingress (egress) when a policy of its namespace
//     selects it (spec.podSelector; empty selects every pod of the
//     namespace) and has Ingress (Egress) among its policyTypes. Omitted
//     policyTypes mean Ingress, plus Egress when spec.egress has rules.
//     A pod no policy isolates allows everything in that direction.
//   - An isolated direction allows the union of the rules of every policy
//     that isolates it. A rule allows a connection when one of its peers
//     matches (no peers: every address) and one of its ports matches (no
//     ports: every port of every protocol).
//   - Peers: podSelector alone picks pods of the policy's namespace;
//     namespaceSelector alone, every pod of the namespaces it picks; both,
//     the pods podSelector picks in those namespaces; ipBlock, the addresses
//     of the CIDR less its excepts (pods' addresses included).
//   - Ports: a number, a number up to endPort, or a name. A name is resolved
//     against the destination pod's container ports (name and protocol): on
//     ingress that is the isolated pod itself; on egress every pod the peer
//     covers, giving (address, protocol, port) tuples. A port whose name
//     resolves to nothing matches nothing; a rule whose ports all resolve to
//     nothing allows nothing.
//   - Protocols TCP (the default), UDP, SCTP. IPv4 and IPv6 alike; an
//     ipBlock covers only its own family.
//   - hostNetwork pods are never isolated and no selector picks them (their
//     address is the node's); pods that have ended (Succeeded, Failed) and
//     pods without an address are left out of selections.
//   - A pod of this node whose Pod object is not known yet is isolated both
//     ways with nothing allowed: it is open only once its policy is known.
//
// What the kernel adds (conntrack: replies of allowed connections pass; the
// node's own traffic to its pods is never judged) is policy/nft's part; see
// docs/policy.md.
package policy
