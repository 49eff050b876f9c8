// Command coredns is upstream CoreDNS with the plugins a cluster.local
// server uses (kubernetes, errors, health, ready, cache, log, loadbalance),
// built from the Go module proxy for the lab's real nodes.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver" // the server type first
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
