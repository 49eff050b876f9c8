package config

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Errors show values, and a value may be as long as the file or an
// environment variable allows: an error shows its start only, so that a
// 10 MB value never becomes a 10 MB log line.

// maxShown is how much of a value an error shows: more than any valid value
// needs (a socket path is shorter than 108 bytes).
const maxShown = 128

// maxErrorLen bounds an error message this package did not word itself
// (mapstructure's, which may end with the value).
const maxErrorLen = 512

// shown is how an error shows v: a string quoted, anything else as %v, cut
// after maxShown bytes.
func shown(v any) string {
	if s, ok := v.(string); ok {
		if len(s) <= maxShown {
			return strconv.Quote(s)
		}
		return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(cut(s, maxShown)), len(s))
	}
	return clip(fmt.Sprint(v), maxShown)
}

// clip returns s, or its first n bytes (whole runes) followed by how long
// it is.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s… (%d bytes)", cut(s, n), len(s))
}

// cut returns at most the first n bytes of s, ending on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// parseErr is err, the error of parsing s as what is wanted, unless s is too
// long to be shown whole: then it says what was wanted and shows s's start.
func parseErr(err error, s, want string) error {
	if err == nil || len(s) <= maxShown {
		return err
	}
	return fmt.Errorf("want %s, got %s", want, shown(s))
}

// clippedError is an error whose message is cut to maxErrorLen; it still
// wraps the original for errors.Is and errors.As.
type clippedError struct{ err error }

func (e clippedError) Error() string { return clip(e.err.Error(), maxErrorLen) }
func (e clippedError) Unwrap() error { return e.err }

// clipErr returns err with its message cut to maxErrorLen.
func clipErr(err error) error {
	if err == nil || len(err.Error()) <= maxErrorLen {
		return err
	}
	return clippedError{err}
}
