// Package gobgp implements bgp.Speaker with an embedded GoBGP v4 server. It
// is the only package of flatnet that imports GoBGP, and no GoBGP type leaves
// it.
//
// What it owns: GoBGP's lifecycle (Start, and a Stop that keeps graceful
// restart intact), the translation of bgp.Peer and bgp.Advert into GoBGP's
// peers and paths, the routing policy (GoBGP defined sets and statements, see
// policy.go), and the reading of GoBGP's events back into learned routes,
// rejected-route counts and the convergence signal (monitor.go). GoBGP's logs
// go to the injected slog.Logger; its gRPC API is off unless
// bgp.Config.APIListen asks for it, and then on loopback only.
//
// What it must not do: touch the kernel. GoBGP never writes the FIB here
// (zebra is not used); the dataplane installs what Watch reports.
//
// GoBGP is v4.8.0 as patched in third_party/gobgp (see its README): a peer
// whose hold timer expires is not taken for a restarting one (its routes go
// at once), and a reset requested while a session is down (BFD) does not
// kill the next session. A reset (BFD down) holds the peer idle 1s, not
// GoBGP's 30s, and BFD peers are dialled every 2s, so that a session is back
// within a few seconds of its path.
//
// GoBGP v4.8.0 facts this package works around, found by reading its source
// and by the race detector:
//   - BgpServer.Stop always sends a Cease; Speaker.Stop calls StopBgp with
//     AllowGracefulRestart itself, then Stop for the BFD server and the API.
//   - Import policy applies to our own paths too; the policy accepts them
//     first.
//   - UpdatePeer ignores DoSoftResetIn; the soft reset is ours to do.
//   - A session GoBGP shuts down for the prefix limit stays down; a new limit
//     re-adds the peer. With graceful restart negotiated, GoBGP takes that
//     shutdown for the peer restarting and keeps its routes, stale, for the
//     peer's restart time.
//   - StartBgp writes process-wide settings (multipath, best-path options)
//     that every running server reads: one process should run one Speaker,
//     and tests start all theirs before any has peers.
//   - ListPath converts paths after releasing GoBGP's lock. A soft reset in
//     writes to the same Path objects (held off by pathsMu), and so does
//     marking a restarting peer's paths stale, which cannot be held off: the
//     race detector may report that one, a race inside GoBGP on a flag.
package gobgp
