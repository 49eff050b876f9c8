package config

import "time"

// validate checks BFD settings at key ("bgp.meshBFD"). Peer.validate has
// the same rules for a peer's bfd.
func (f BFD) validate(key string) []error {
	if !f.Enabled {
		return nil
	}
	var errs []error
	if i := f.Interval; i != 0 && (i < time.Millisecond || i%time.Microsecond != 0 || i > time.Hour) {
		errs = append(errs, invalid(key+".interval", i, "want 1ms..1h in whole microseconds, or 0 for 300ms"))
	}
	if m := f.Multiplier; m < 0 || m > 255 {
		errs = append(errs, invalid(key+".multiplier", m, "want 1..255, or 0 for 3"))
	}
	return errs
}
