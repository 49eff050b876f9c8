package agent

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flatnet-io/flatnet/test/harness"
)

// Only SIGTERM (ErrPlannedRestart as the context's cause) is a planned
// restart, recorded for the next start: not SIGINT, nor an agent that
// failed. The next start reads the record and removes it.
func TestPrivilegedPlannedRestartOnlyOnSIGTERM(t *testing.T) {
	harness.Require(t)
	netns := harness.NewNetNS(t, "agent")
	cfg := testConfig(t)
	cfg.BGP.Enabled = true
	cfg.BGP.Mesh = false
	cfg.BGP.NodeIPv4 = netip.MustParseAddr("127.0.0.1")
	cfg.BGP.ListenPort = -1
	marker := filepath.Join(filepath.Dir(cfg.API.Socket), "bgp-planned-restart")
	recorded := func() bool {
		_, err := os.Stat(marker)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		return err == nil
	}
	// stopWith runs the agent until it serves, then stops it with cause.
	stopWith := func(t *testing.T, cause error, e env) (string, error) {
		t.Helper()
		e.netns = netns.NetNS
		log, logs := logTo(t)
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		err := runUntil(t, cfg, e, ctx, func() { cancel(cause) }, log)
		return logs.String(), err
	}

	t.Run("SIGINT", func(t *testing.T) {
		if _, err := stopWith(t, errors.New("interrupt signal received"), env{}); err != nil {
			t.Fatal(err)
		}
		if recorded() {
			t.Error("a stop that is not a planned restart was recorded as one")
		}
	})
	t.Run("serving fails", func(t *testing.T) {
		api, err := listenUnix(cfg.API.Socket)
		if err != nil {
			t.Fatal(err)
		}
		broken := &failingListener{Listener: api, fail: make(chan struct{})}
		log, _ := logTo(t)
		err = runUntil(t, cfg, env{netns: netns.NetNS, api: broken}, context.Background(), func() { close(broken.fail) }, log)
		if !errors.Is(err, errAcceptBroken) {
			t.Fatalf("run = %v, want the serving error", err)
		}
		if recorded() {
			t.Error("an agent that failed recorded a planned restart")
		}
	})
	t.Run("SIGTERM", func(t *testing.T) {
		if _, err := stopWith(t, ErrPlannedRestart, env{}); err != nil {
			t.Fatal(err)
		}
		if !recorded() {
			t.Fatal("a planned restart was not recorded")
		}
	})
	t.Run("next start", func(t *testing.T) {
		logs, err := stopWith(t, context.Canceled, env{})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(logs, "planned restart: peers hold our routes") {
			t.Error("the start after a planned restart did not say so")
		}
		if recorded() {
			t.Error("the record outlived the start that read it (and a stop that was not planned)")
		}
	})
}
