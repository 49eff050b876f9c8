package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
)

// Each of the three servers tells the client the address it connected from.
func TestEcho(t *testing.T) {
	httpLn := listen(t)
	tcpLn := listen(t)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, "echo-pod", httpLn, udp, tcpLn) }()

	t.Run("http", func(t *testing.T) {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		var local string
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				local = c.LocalAddr().String()
			}
			return c, err
		}
		client := &http.Client{Transport: tr}
		if got := get(t, client, "http://"+httpLn.Addr().String()+"/"); got != local+"\n" {
			t.Errorf("GET /: %q, want %q", got, local+"\n")
		}
		if got := get(t, client, "http://"+httpLn.Addr().String()+"/hostname"); got != "echo-pod\n" {
			t.Errorf("GET /hostname: %q", got)
		}
	})
	t.Run("udp", func(t *testing.T) {
		c, err := net.Dial("udp", udp.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(buf[:n]), c.LocalAddr().String()+"\n"; got != want {
			t.Errorf("udp reply %q, want %q", got, want)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		c, err := net.Dial("tcp", tcpLn.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		want := c.LocalAddr().String() + "\n"
		for i, send := range []string{"", "a line\n", "another\n"} {
			if send != "" {
				if _, err := io.WriteString(c, send); err != nil {
					t.Fatal(err)
				}
			}
			got, err := r.ReadString('\n')
			if err != nil || got != want {
				t.Errorf("line %d: %q (%v), want %q", i, got, err, want)
			}
		}
	})

	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(body)
}
