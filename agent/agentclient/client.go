// Package agentclient dials the node agent's API on its unix socket. The CNI
// plugin and flatnetctl reach the agent through it.
//
// It must stay small: gRPC's client and the generated IPAM stubs, nothing of
// the agent, the allocator or the dataplane, so that the plugin, executed for
// every pod, links only what it uses. Callers that want the agent's own
// service (agentpb) build its client on Conn.
package agentclient

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

// Client is a connection to the agent.
type Client struct {
	conn *grpc.ClientConn
	// IPAM is the agent's address management service.
	IPAM ipampb.IPAMClient
}

// Dial returns a client of the agent listening on socket. It does not
// connect until the first call, so an agent that is down shows as an
// UNAVAILABLE call, not as an error here.
func Dial(socket string) (*Client, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial agent at %s: %w", socket, err)
	}
	return &Client{conn: conn, IPAM: ipampb.NewIPAMClient(conn)}, nil
}

// Conn is the connection, for the clients of the agent's other services.
func (c *Client) Conn() grpc.ClientConnInterface { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
