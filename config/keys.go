package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// The key names come from Config's mapstructure tags and nowhere else: the
// defaults viper is given, the environment variables it reads and the check
// for unknown keys in the file are all derived from them here.

// setting is one leaf of Config: a scalar, or the list of pools.
type setting struct {
	key   string // dotted path as the file spells it: "ipam.strictAffinity"
	value any    // its value in the Config it was read from
}

// settings flattens c into its leaves, in declaration order.
func settings(c Config) []setting {
	return appendSettings(nil, "", reflect.ValueOf(c))
}

func appendSettings(out []setting, prefix string, section reflect.Value) []setting {
	for f, v := range section.Fields() {
		key := joinKey(prefix, keyName(f))
		if isSection(f.Type) {
			out = appendSettings(out, key, v)
			continue
		}
		out = append(out, setting{key: key, value: v.Interface()})
	}
	return out
}

// envVars returns the environment variables that set s, the first one set
// winning: FLATNET_ and the key upper-cased with "." turned into "_". Lists
// have none: they are set in the file only.
func envVars(s setting) []string {
	if reflect.TypeOf(s.value).Kind() == reflect.Slice {
		return nil
	}
	vars := []string{"FLATNET_" + strings.ToUpper(strings.ReplaceAll(s.key, ".", "_"))}
	if s.key == "nodeName" {
		vars = append(vars, "NODE_NAME") // what a DaemonSet sets from the downward API
	}
	return vars
}

// checkKeys checks val, read from the file at key, against the section type t:
// it must be a mapping whose keys all name fields of t, and so on down. It
// returns an error for each key t has no field for, spelt as in the file
// ("ipam.pools[0].blocksize2"), and for each section that is not a mapping.
func checkKeys(val any, t reflect.Type, key string) []error {
	m, ok := val.(map[string]any)
	if !ok {
		return []error{invalid(key, val, "want a mapping of keys")}
	}
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(m)) {
		f, ok := fieldByKey(t, k)
		if !ok {
			errs = append(errs, unknownKey(t, joinKey(key, k)))
			continue
		}
		fkey := joinKey(key, keyName(f))
		switch v := m[k]; {
		case v == nil: // "key:" with no value is the same as no key
		case isSection(f.Type):
			errs = append(errs, checkKeys(v, f.Type, fkey)...)
		case f.Type.Kind() == reflect.Slice && isSection(f.Type.Elem()):
			list, ok := v.([]any)
			if !ok {
				errs = append(errs, invalid(fkey, v, "want a list of mappings"))
				continue
			}
			for i, item := range list {
				errs = append(errs, checkKeys(item, f.Type.Elem(), fmt.Sprintf("%s[%d]", fkey, i))...)
			}
		}
	}
	return errs
}

// unknownKey returns the error for key, which section type t has no field
// for, suggesting the field it is closest to when it looks like a misspelling.
func unknownKey(t reflect.Type, key string) error {
	name := key[strings.LastIndex(key, ".")+1:]
	best, bestDist := "", 3 // suggest only within two edits
	for f := range t.Fields() {
		if d := editDistance(strings.ToLower(name), strings.ToLower(keyName(f))); d < bestDist {
			best, bestDist = keyName(f), d
		}
	}
	if best != "" {
		return fmt.Errorf("unknown key %s (did you mean %s?)", clip(key, maxShown), best)
	}
	return fmt.Errorf("unknown key %s", clip(key, maxShown))
}

// fieldByKey returns the field of t that key names. Keys match whatever their
// case, as they do in viper.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for f := range t.Fields() {
		if strings.EqualFold(keyName(f), key) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// isSection reports whether t is one of this package's structs, whose fields
// are keys, rather than a value such as netip.Addr.
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t.PkgPath() == reflect.TypeFor[Config]().PkgPath()
}

func keyName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	return name
}

func joinKey(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// editDistance returns the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := range len(a) {
		cur := make([]int, len(b)+1)
		cur[0] = i + 1
		for j := range len(b) {
			sub := prev[j]
			if a[i] != b[j] {
				sub++
			}
			cur[j+1] = min(sub, prev[j+1]+1, cur[j]+1)
		}
		prev = cur
	}
	return prev[len(b)]
}
