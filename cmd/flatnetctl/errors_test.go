package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flatnet-io/flatnet/agent/agentpb"
	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

// brokenAgent answers every call with the error a datastore failure gives.
type brokenAgent struct {
	ipampb.UnimplementedIPAMServer
	agentpb.UnimplementedAgentServer
}

var errDatastore = status.Error(codes.Unavailable, "list blocks: open /var/lib/flatnet/ipam/blocks: permission denied")

func (brokenAgent) Usage(context.Context, *ipampb.UsageRequest) (*ipampb.UsageResponse, error) {
	return nil, errDatastore
}

func (brokenAgent) Status(context.Context, *agentpb.StatusRequest) (*agentpb.StatusResponse, error) {
	return nil, errDatastore
}

// run runs flatnetctl with args and returns its error.
func run(t *testing.T, args ...string) error {
	t.Helper()
	root := newRoot()
	root.SetArgs(args)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	return root.ExecuteContext(t.Context())
}

func TestAgentErrors(t *testing.T) {
	dir := t.TempDir()

	// An agent that answers, with an error of its own.
	answering := filepath.Join(dir, "answering.sock")
	ln, err := net.Listen("unix", answering)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ipampb.RegisterIPAMServer(srv, brokenAgent{})
	agentpb.RegisterAgentServer(srv, brokenAgent{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	// An agent that takes the connection and never answers (frozen): the
	// kernel accepts on its socket.
	frozen := filepath.Join(dir, "frozen.sock")
	fl, err := net.Listen("unix", frozen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fl.Close() })

	for _, tc := range []struct {
		name string
		args []string
		want string
		not  []string
	}{
		{
			name: "the agent's own error is passed on",
			args: []string{"ipam", "show", "--socket", answering},
			want: "agent at " + answering + ": list blocks: open /var/lib/flatnet/ipam/blocks: permission denied (unavailable)",
		},
		{
			name: "status, the same",
			args: []string{"status", "--socket", answering},
			want: "agent at " + answering + ": list blocks: open /var/lib/flatnet/ipam/blocks: permission denied (unavailable)",
		},
		{
			name: "a frozen agent",
			args: []string{"status", "--socket", frozen, "--timeout", "300ms"},
			want: "agent at " + frozen + " not answering within 300ms (stopped, frozen or overloaded?)",
		},
		{
			name: "no agent",
			args: []string{"ipam", "show", "--socket", filepath.Join(dir, "none.sock")},
			want: "agent at " + filepath.Join(dir, "none.sock") + " is not reachable (is flatnet-agent running? is --socket right?): ",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(t, tc.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error:\n%s\nwant it to start with:\n%s", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}
