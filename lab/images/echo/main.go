// Command echo is the lab's test server, image ghcr.io/flatnet-io/flatnet-echo:
// it tells each client the address it saw the client connect from, so a test
// proves that a pod's source address arrives unchanged (no NAT):
//
//   - HTTP on TCP 8080: GET / answers "<ip>:<port>\n", GET /hostname the
//     server's host name (the pod's name) and a newline;
//   - UDP 8081: every datagram is answered with "<ip>:<port>\n";
//   - TCP 8082, raw: "<ip>:<port>\n" on connect and again for every line the
//     client sends, until it closes (nc-style clients).
//
// Flags change the ports. SIGTERM and SIGINT stop it.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

func main() {
	httpPort := flag.Int("http-port", 8080, "TCP port of the HTTP server")
	udpPort := flag.Int("udp-port", 8081, "UDP port of the datagram echo")
	tcpPort := flag.Int("tcp-port", 8082, "TCP port of the line echo")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, *httpPort, *udpPort, *tcpPort)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, httpPort, udpPort, tcpPort int) error {
	hostname, err := os.Hostname()
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	httpLn, err := lc.Listen(ctx, "tcp", fmt.Sprintf(":%d", httpPort))
	if err != nil {
		return err
	}
	udp, err := lc.ListenPacket(ctx, "udp", fmt.Sprintf(":%d", udpPort))
	if err != nil {
		httpLn.Close()
		return err
	}
	tcpLn, err := lc.Listen(ctx, "tcp", fmt.Sprintf(":%d", tcpPort))
	if err != nil {
		httpLn.Close()
		udp.Close()
		return err
	}
	return serve(ctx, hostname, httpLn, udp, tcpLn)
}

// serve answers on the three sockets until ctx is done, then closes them.
func serve(ctx context.Context, hostname string, httpLn net.Listener, udp net.PacketConn, tcpLn net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, r.RemoteAddr)
	})
	mux.HandleFunc("GET /hostname", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, hostname)
	})
	srv := &http.Server{Handler: mux}

	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Go(func() {
		if err := srv.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("http: %w", err)
		}
	})
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			_, peer, err := udp.ReadFrom(buf)
			if err != nil {
				if ctx.Err() == nil {
					errs <- fmt.Errorf("udp: %w", err)
				}
				return
			}
			_, _ = udp.WriteTo([]byte(peer.String()+"\n"), peer)
		}
	})
	var conns sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := tcpLn.Accept()
			if err != nil {
				if ctx.Err() == nil {
					errs <- fmt.Errorf("tcp: %w", err)
				}
				return
			}
			conns.Go(func() { lineEcho(ctx, c) })
		}
	})

	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	_ = srv.Close()
	_ = udp.Close()
	_ = tcpLn.Close()
	wg.Wait()
	conns.Wait()
	return err
}

// lineEcho writes the peer's address on connect and for every line it
// sends, until it closes or ctx is done.
func lineEcho(ctx context.Context, c net.Conn) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	line := []byte(c.RemoteAddr().String() + "\n")
	if _, err := c.Write(line); err != nil {
		return
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if _, err := c.Write(line); err != nil {
			return
		}
	}
}
