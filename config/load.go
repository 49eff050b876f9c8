package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/flatnet-io/flatnet/ipam"
)

// agentFlags are the flags that set a key. --config is not one of them: it
// names the file, it is not a setting.
var agentFlags = []struct {
	name, key, usage string
}{
	{"node-name", "nodeName", "name of this node as Kubernetes knows it"},
	{"log-level", "log.level", "lowest level logged: debug, info, warn or error"},
	{"log-format", "log.format", "log format: text or json"},
	{"socket", "api.socket", "unix socket of the agent's gRPC API"},
	{"datastore-dir", "datastore.file.dir", "directory of the file datastore"},
}

// AddFlags registers the agent's flags on fs: --config, the path of the YAML
// file to pass to Load, and one flag per key that is often set by hand
// (--node-name, --log-level, --log-format, --socket, --datastore-dir). The
// flags have no default of their own: Load applies only those the user set.
func AddFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "path of the YAML configuration file (none: defaults, FLATNET_* environment and flags only)")
	for _, f := range agentFlags {
		fs.String(f.name, "", fmt.Sprintf("%s (sets %s)", f.usage, f.key))
	}
}

// Load builds the configuration: defaults, then the YAML file at path (path
// "" = no file), then FLATNET_* environment variables, then the flags in fs
// that the user changed (fs may be nil). It validates before returning.
//
// A missing file, a YAML syntax error or a key Config does not have is an
// error naming the file; every other error names the key path, and Load
// reports all of them at once, joined.
func Load(path string, fs *pflag.FlagSet) (Config, error) {
	v := viper.New()
	for _, s := range settings(Default()) {
		v.SetDefault(s.key, s.value)
		if vars := envVars(s); len(vars) > 0 {
			if err := v.BindEnv(append([]string{s.key}, vars...)...); err != nil {
				return Config{}, fmt.Errorf("bind %s to the environment: %w", s.key, err)
			}
		}
	}
	if path != "" {
		file, err := readFile(path)
		if err != nil {
			return Config{}, err
		}
		if err := v.MergeConfigMap(file); err != nil {
			return Config{}, fmt.Errorf("merge config %s: %w", path, err)
		}
	}
	if err := bindChangedFlags(v, fs); err != nil {
		return Config{}, err
	}

	var c Config
	if err := v.UnmarshalExact(&c, viper.DecodeHook(decodeHook)); err != nil {
		return Config{}, decodeErrors(err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	for i, p := range c.IPAM.Pools {
		if p.BlockSize == 0 {
			c.IPAM.Pools[i].BlockSize = ipam.DefaultBlockSize(ipam.FamilyOf(p.CIDR.Addr()))
		}
	}
	return c, nil
}

// Bounds on the file: what Load reads and what it lets the YAML decoder
// see. A configuration is a few kilobytes with a few dozen keys.
const (
	// maxFileSize keeps --config /dev/zero (or a log file given by mistake)
	// from filling memory.
	maxFileSize = 1 << 20
	// maxMappingKeys bounds the keys of one mapping. The YAML decoder checks
	// a mapping for repeated keys by comparing every key with every other:
	// 100,000 keys, which fit in maxFileSize, take a minute. No section of
	// Config has more than about twenty keys, so a mapping with more than
	// this holds unknown or repeated ones anyway.
	maxMappingKeys = 256
)

// readFile parses the YAML file at path, whatever its extension, and checks
// that every key in it is one Config has.
func readFile(path string) (map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("read config %s: larger than 1 MiB; a configuration file is a few kilobytes", path)
	}
	// Parsed as viper would parse it (go.yaml.in/yaml/v3), but first into
	// nodes, to be checked before the decoder sees them; keys keep the case
	// they are written in, for the errors below.
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	// yaml.Unmarshal would read the first document and ignore the rest.
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("more than one YAML document (---); put every key in one")
		}
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	if errs := checkMappings(&doc, ""); len(errs) > 0 {
		for i, err := range errs {
			errs[i] = fmt.Errorf("config %s: %w", path, err)
		}
		return nil, errors.Join(errs...)
	}
	raw := map[string]any{}
	if doc.Kind != 0 {
		if err := doc.Decode(&raw); err != nil {
			return nil, fmt.Errorf("parse config %s: %w", path, err)
		}
	}
	if errs := checkKeys(raw, reflect.TypeFor[Config](), ""); len(errs) > 0 {
		for i, err := range errs {
			errs[i] = fmt.Errorf("config %s: %w", path, err)
		}
		return nil, errors.Join(errs...)
	}
	return raw, nil
}

// checkMappings checks the mappings under n, which is at key: none may
// have more than maxMappingKeys keys, and no two keys of one may differ only
// in case (keys match whatever their case, so viper would merge them).
func checkMappings(n *yaml.Node, key string) []error {
	switch n.Kind {
	case yaml.MappingNode:
		if len(n.Content)/2 > maxMappingKeys {
			return []error{fmt.Errorf("line %d: a mapping of %d keys, at most %d allowed", n.Line, len(n.Content)/2, maxMappingKeys)}
		}
		var errs []error
		first := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				continue
			}
			folded := strings.ToLower(k.Value)
			if f, dup := first[folded]; dup && f.Value != k.Value {
				errs = append(errs, fmt.Errorf("line %d: key %s repeats %s of line %d (keys match whatever their case)",
					k.Line, clip(joinKey(key, k.Value), maxShown), clip(joinKey(key, f.Value), maxShown), f.Line))
				continue
			}
			first[folded] = k
			errs = append(errs, checkMappings(v, joinKey(key, k.Value))...)
		}
		return errs
	case yaml.SequenceNode:
		var errs []error
		for i, c := range n.Content {
			errs = append(errs, checkMappings(c, fmt.Sprintf("%s[%d]", key, i))...)
		}
		return errs
	case yaml.DocumentNode:
		var errs []error
		for _, c := range n.Content {
			errs = append(errs, checkMappings(c, key)...)
		}
		return errs
	}
	return nil // scalars, and aliases, whose target is checked where it is defined
}

// bindChangedFlags binds to its key each agent flag the user set in fs. An
// unset flag is left out, so its empty default never hides the file or the
// environment.
func bindChangedFlags(v *viper.Viper, fs *pflag.FlagSet) error {
	if fs == nil {
		return nil
	}
	for _, f := range agentFlags {
		flag := fs.Lookup(f.name)
		if flag == nil || !flag.Changed {
			continue
		}
		if err := v.BindPFlag(f.key, flag); err != nil {
			return fmt.Errorf("bind --%s to %s: %w", f.name, f.key, err)
		}
	}
	return nil
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	addrType     = reflect.TypeFor[netip.Addr]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
)

// decodeHook turns the strings of the file, the environment and the flags
// into durations, addresses, prefixes, booleans and integers, with errors
// that quote the value (mapstructure's own hooks drop it).
func decodeHook(from, to reflect.Type, data any) (any, error) {
	s, isString := data.(string)
	switch {
	case to == durationType && from != durationType:
		if isString {
			d, err := time.ParseDuration(s)
			return d, parseErr(err, s, `a duration with a unit, such as "5m" or "300s"`)
		}
		if v := reflect.ValueOf(data); (v.CanInt() || v.CanUint() || v.CanFloat()) && v.IsZero() {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("want a duration with a unit, such as \"5m\" or \"300s\", got %s", shown(data))
	case to == addrType && from != addrType:
		if !isString {
			return nil, fmt.Errorf("want an IP address, got %s", shown(data))
		}
		a, err := netip.ParseAddr(s)
		return a, parseErr(err, s, "an IP address")
	case to == prefixType && from != prefixType:
		if !isString {
			return nil, fmt.Errorf("want a CIDR such as 10.244.0.0/16, got %s", shown(data))
		}
		p, err := netip.ParsePrefix(s)
		return p, parseErr(err, s, "a CIDR such as 10.244.0.0/16")
	case to.Kind() == reflect.Bool && from.Kind() != reflect.Bool:
		// Only a YAML boolean: mapstructure's weak decoding would take any
		// number (12345, -7, 0.5) as true.
		if b, ok := yamlBools[s]; isString && ok {
			return b, nil
		}
		return nil, fmt.Errorf("want true or false, got %s", shown(data))
	case isInteger(to) && from != to:
		return toInteger(to, data)
	}
	return data, nil
}

// yamlBools are the booleans of YAML 1.2's core schema, as a string spells
// them (an environment variable, a flag, a quoted value in the file).
var yamlBools = map[string]bool{
	"true": true, "True": true, "TRUE": true,
	"false": false, "False": false, "FALSE": false,
}

func isInteger(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return t != durationType
	}
	return false
}

// toInteger converts data, a string or a number, to the integer type to,
// with an error that quotes the value when it is not an integer or does not
// fit.
func toInteger(to reflect.Type, data any) (any, error) {
	var n big.Int
	switch v := reflect.ValueOf(data); {
	case v.Kind() == reflect.String:
		// No integer type has more than 20 digits; a longer string is not
		// worth parsing (decimal parsing is not linear).
		if len(v.String()) > 64 {
			return nil, fmt.Errorf("want an integer, got %s", shown(data))
		}
		if _, ok := n.SetString(v.String(), 10); !ok {
			return nil, fmt.Errorf("want an integer, got %s", shown(data))
		}
	case v.CanInt():
		n.SetInt64(v.Int())
	case v.CanUint():
		n.SetUint64(v.Uint())
	case v.CanFloat() && v.Float() == math.Trunc(v.Float()) && math.Abs(v.Float()) < 1<<63:
		n.SetInt64(int64(v.Float()))
	default:
		return nil, fmt.Errorf("want an integer, got %s", shown(data))
	}
	out := reflect.New(to).Elem()
	lo, hi := new(big.Int), new(big.Int)
	if out.CanInt() {
		lo.Lsh(big.NewInt(-1), uint(to.Bits()-1))
		hi.Lsh(big.NewInt(1), uint(to.Bits()-1)).Sub(hi, big.NewInt(1))
	} else {
		hi.Lsh(big.NewInt(1), uint(to.Bits())).Sub(hi, big.NewInt(1))
	}
	if n.Cmp(lo) < 0 || n.Cmp(hi) > 0 {
		return nil, fmt.Errorf("want an integer in %s..%s, got %s", lo, hi, &n)
	}
	if out.CanInt() {
		out.SetInt(n.Int64())
	} else {
		out.SetUint(n.Uint64())
	}
	return out.Interface(), nil
}

// decodeErrors rewrites each of mapstructure's "'ipam.blockReleaseGrace'
// time: ..." errors as "ipam.blockReleaseGrace: time: ...", joined, without
// the preamble mapstructure puts before several of them.
func decodeErrors(err error) error {
	var errs []error
	var walk func(error)
	walk = func(err error) {
		// Joins first: errors.As on a join would stop at its first DecodeError.
		var joined interface{ Unwrap() []error }
		var decodeErr *mapstructure.DecodeError
		switch {
		case errors.As(err, &joined):
			for _, err := range joined.Unwrap() {
				walk(err)
			}
		case errors.As(err, &decodeErr):
			errs = append(errs, clipErr(fmt.Errorf("%s: %w", decodeErr.Name(), decodeErr.Unwrap())))
		default:
			errs = append(errs, clipErr(err))
		}
	}
	walk(err)
	return errors.Join(errs...)
}
