package router

import (
	"fmt"
	"strings"
)

// birdSessions reads the BGP protocols out of `birdc show protocols all`: a
// header line per protocol ("node1 BGP --- up 12:00:00 Established"), then
// indented details, among them the neighbour, its AS and, per channel,
// "Routes: 1 imported, 2 exported, 1 preferred".
func birdSessions(out string) []Session {
	var sessions []Session
	var cur *Session
	var addr, asn string
	flush := func() {
		if cur != nil {
			if addr != "" {
				cur.Peer = fmt.Sprintf("%s (%s AS%s)", cur.Peer, addr, asn)
			}
			sessions = append(sessions, *cur)
		}
		cur, addr, asn = nil, "", ""
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			flush()
			if len(f) >= 6 && f[1] == "BGP" {
				cur = &Session{Peer: f[0], State: strings.ToLower(f[5])}
			}
			continue
		}
		if cur == nil {
			continue
		}
		switch {
		case len(f) == 3 && f[0] == "Neighbor" && f[1] == "address:":
			addr = f[2]
		case len(f) == 3 && f[0] == "Neighbor" && f[1] == "AS:":
			asn = f[2]
		case len(f) >= 3 && f[0] == "Routes:" && f[2] == "imported,":
			var n int64
			if _, err := fmt.Sscan(f[1], &n); err == nil {
				cur.Received += n
			}
		}
	}
	flush()
	return sessions
}
