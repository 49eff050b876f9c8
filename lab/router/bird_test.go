package router

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestBirdSessions reads the sessions out of what BIRD 2.0.12 printed for
// `show protocols all` as the ToR of two-node-tor-bird.
func TestBirdSessions(t *testing.T) {
	b, err := os.ReadFile("testdata/birdc-show-protocols-all.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := []Session{
		{Peer: "node1 (10.0.1.2 AS64512)", State: "established", Received: 1},
		{Peer: "node2 (10.0.2.2 AS64513)", State: "established", Received: 1},
	}
	if diff := cmp.Diff(want, birdSessions(string(b))); diff != "" {
		t.Errorf("sessions (-want +got):\n%s", diff)
	}
}
