// Package agent is flatnet's composition root: it builds the node's datastore,
// IPAM allocator, BGP speaker, route reconciler and API server from one
// validated config.Config (and, on Kubernetes, the IPPool and BGPPeer objects,
// merged with the config's pools and peers), runs them, and stops them in
// order. It is the only package that knows all the others; below it they
// know each other only through the seams they must use (ipam.Store,
// bgp.Speaker, mesh.Registry), and data flows one way: datastore → allocator
// → routing (routing.go) → speaker and kernel. It must not hold allocation,
// BGP protocol or CNI logic itself.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/flatnet-io/flatnet/agent/agentpb"
	"github.com/flatnet-io/flatnet/config"
	"github.com/flatnet-io/flatnet/ipam"
	"github.com/flatnet-io/flatnet/ipam/ipamgrpc"
	"github.com/flatnet-io/flatnet/metrics"
)

// stopTimeout bounds how long in-flight API calls may finish after a stop.
const stopTimeout = 5 * time.Second

// ErrPlannedRestart, as the cause of Run's context (context.Cause), says
// that the stop is a planned restart (SIGTERM): the agent records it, and
// stops BGP without a NOTIFICATION, so that peers keep the node's routes
// until it is back. Any other stop — another cause, a failure, a failed
// start — ends the sessions with a Cease and records nothing.
var ErrPlannedRestart = errors.New("planned restart")

// Run runs the agent until ctx is done, then stops it and returns nil; it returns
// an error when something could not start or failed while running.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	return run(ctx, cfg, env{}, log)
}

// env is what a test puts in place of the agent's surroundings; the zero
// value is the real ones.
type env struct {
	// netns holds the kernel's routes; nil is the agent's own namespace.
	netns ns.NetNS
	// health serves /healthz and /readyz instead of a listener on
	// health.address.
	health net.Listener
	// api serves the API instead of a socket at api.socket.
	api net.Listener
}

// run is Run in e, so that a test can run a whole agent with BGP.
//
// Every goroutine it starts, itself or through the datastore, is a task of
// one errgroup, and it stops in one order: cancel the tasks (and let the
// API's in-flight calls finish), wait for all of them, then stop what they
// used — the policy stack, routing (its own goroutines, then the speaker,
// then the route reconciler) and last the datastore. A task that fails stops the agent.
func run(ctx context.Context, cfg config.Config, e env, log *slog.Logger) (err error) {
	log = log.With("node", cfg.NodeName)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	tasks, ctx := errgroup.WithContext(ctx)
	var (
		ds  *datastore
		rs  *routing
		pol *policyStack
		lis net.Listener
		srv *grpc.Server
	)
	defer func() {
		cancel()
		if srv != nil {
			stopGracefully(srv)
		}
		if lis != nil {
			lis.Close() // Serve closed it already, if it ran
		}
		if werr := tasks.Wait(); werr != nil {
			err = errors.Join(err, werr)
		}
		pol.stop() // after the API: an Allocate in flight waits for its rules
		if rs != nil {
			rs.stop(err == nil && errors.Is(context.Cause(parent), ErrPlannedRestart))
		}
		if ds != nil {
			ds.close()
		}
	}()

	health := newHealth()
	m := metrics.New(Version, log)
	if e.health == nil && cfg.Health.Address != "" {
		if e.health, err = net.Listen("tcp", cfg.Health.Address); err != nil {
			return fmt.Errorf("health.address %s: %w", cfg.Health.Address, err)
		}
	}
	if e.health != nil {
		tasks.Go(func() error { health.serve(ctx, e.health, m.Handler(), log); return nil })
	}

	if ds, err = openDatastore(ctx, tasks, cfg, log); err != nil {
		return err
	}
	pools, err := mergePools(cfg.IPAM.Pools, ds.pools)
	if err != nil {
		return err
	}
	// Routing learns what to announce from the allocator's writes.
	var blocks *ownBlocks
	if cfg.BGP.Enabled {
		blocks = newOwnBlocks(cfg.NodeName)
	}
	alloc, err := newAllocator(ds.store, cfg, pools, blocks, m.IPAMTimed, log)
	if err != nil {
		return err
	}
	m.CollectIPAM(alloc)
	if ds.start != nil {
		ds.start(ctx, tasks, alloc)
	}
	health.set("datastore", true)
	// Claim the socket before BGP starts: an agent that cannot serve (another
	// one is live on the socket) must fail before it touches routing.
	if lis = e.api; lis == nil {
		if lis, err = listenUnix(cfg.API.Socket); err != nil {
			return err
		}
	}

	// Policy before the API: an Allocate answers once the pod's rules are in.
	if pol, err = startPolicy(ctx, cfg, alloc, e.netns, log); err != nil {
		return err
	}

	status := &statusServer{adverts: &advertLog{}}
	if cfg.BGP.Enabled {
		if rs, err = startRouting(ctx, cfg, ds, alloc, blocks, status.adverts, e.netns, m, log); err != nil {
			return err
		}
		status.self, status.asn, status.routerID = rs.self, rs.self.ASN, rs.routerID
		status.speaker, status.counts = rs.speaker, rs.counts
		m.CollectBGP(rs.speaker)
		m.CollectRoutes(rs.counts)
	} else {
		status.self.Name = cfg.NodeName
	}
	health.set("bgp", true)

	// In-flight calls use the allocator and its store: the server waits
	// for them when it stops, even when it stops them.
	srv = grpc.NewServer(grpc.WaitForHandlers(true), grpc.ChainUnaryInterceptor(m.UnaryInterceptor()))
	pol.register(srv, ipamgrpc.NewServer(alloc, ipamgrpc.Gateways{IPv4: cfg.IPAM.GatewayIPv4, IPv6: cfg.IPAM.GatewayIPv6}, log))
	agentpb.RegisterAgentServer(srv, status)
	m.InitAPI(srv)
	tasks.Go(func() error {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve API on %s: %w", cfg.API.Socket, err)
		}
		return nil // stopped (maybe before it started)
	})
	tasks.Go(func() error { sweepIdleBlocks(ctx, alloc, cfg.IPAM.BlockReleaseGrace, log); return nil })
	tasks.Go(func() error { retryReleases(ctx, alloc, retryReleaseInterval, log); return nil })
	health.set("api", true)
	log.Info("agent ready", "socket", cfg.API.Socket, "datastore", cfg.Datastore.Type, "pools", len(pools))

	<-ctx.Done() // Run's context, or a task that failed
	log.Info("agent stopping", "cause", context.Cause(ctx))
	return nil
}

// newAllocator returns the node's allocator; blocks, when not nil, is told
// every write, and timed how long each operation took.
func newAllocator(store ipam.Store, cfg config.Config, pools []ipam.Pool, blocks *ownBlocks, timed func(string, time.Duration), log *slog.Logger) (*ipam.Allocator, error) {
	c := ipam.Config{
		Node:           cfg.NodeName,
		Pools:          pools,
		StrictAffinity: cfg.IPAM.StrictAffinity,
		ReleaseGrace:   cfg.IPAM.BlockReleaseGrace,
		Timed:          timed,
		Logger:         log,
	}
	if blocks != nil {
		c.Changed = blocks.apply
	}
	return ipam.New(store, c)
}

// sweepIdleBlocks gives back this node's blocks once they have been empty for the
// grace period, checking twice per period (between once a second and once a minute).
func sweepIdleBlocks(ctx context.Context, alloc *ipam.Allocator, grace time.Duration, log *slog.Logger) {
	t := time.NewTicker(min(max(grace/2, time.Second), time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := alloc.ReleaseIdleBlocks(ctx); err != nil && ctx.Err() == nil {
				log.Warn("release idle blocks", "err", err)
			}
		}
	}
}

// retryReleaseInterval is how often the releases the datastore did not
// take (a full disk) are tried again.
const retryReleaseInterval = 5 * time.Second

// retryReleases writes the releases the datastore did not take, every
// interval, until ctx is done.
func retryReleases(ctx context.Context, alloc *ipam.Allocator, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if len(alloc.PendingReleases()) == 0 {
				continue
			}
			// Each deferral was logged as a warning; its retries are not.
			if err := alloc.RetryReleases(ctx); err != nil && ctx.Err() == nil {
				log.Debug("deferred releases still not written", "err", err)
			}
		}
	}
}

// stopGracefully lets in-flight calls finish, for a while, then ends them;
// it returns once they have.
func stopGracefully(srv *grpc.Server) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopTimeout):
		srv.Stop()
		<-done
	}
}
