package nft

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// read returns the table as the kernel has it (rules by comment only); a
// missing table reads as empty.
func read(ctx context.Context, nft knftables.Interface) (*table, error) {
	t := newTable()
	names := map[string][]string{}
	for _, kind := range []string{"chains", "sets", "maps"} {
		list, err := nft.List(ctx, kind)
		if err != nil {
			if knftables.IsNotFound(err) {
				return t, nil
			}
			return nil, fmt.Errorf("list %s: %w", kind, err)
		}
		names[kind] = list
	}
	for _, name := range names["chains"] {
		t.chains[name] = &chain{}
	}
	rules, err := nft.ListRules(ctx, "")
	if err != nil && !knftables.IsNotFound(err) {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	for _, r := range rules {
		c := t.chains[r.Chain]
		if c == nil { // made between the two reads
			c = &chain{}
			t.chains[r.Chain] = c
		}
		comment := ""
		if r.Comment != nil {
			comment = *r.Comment
		}
		c.rules = append(c.rules, rule{comment: comment})
	}
	for _, kind := range []string{"set", "map"} {
		into := t.sets
		if kind == "map" {
			into = t.maps
		}
		for _, name := range names[kind+"s"] {
			elems, err := nft.ListElements(ctx, kind, name)
			if err != nil {
				if knftables.IsNotFound(err) {
					continue // deleted between the two reads
				}
				return nil, fmt.Errorf("list elements of %s %s: %w", kind, name, err)
			}
			s := &set{elems: map[string]element{}}
			for _, e := range elems {
				s.add(element{key: e.Key, value: e.Value})
			}
			into[name] = s
		}
	}
	return t, nil
}

// plan adds to tx what turns have into want, in an order the kernel accepts
// within one transaction, and returns how many operations it added.
func plan(tx *knftables.Transaction, want, have *table) int {
	before := tx.NumOperations()
	var ops []func()
	do := func(f func()) { ops = append(ops, f) }

	// New sets and maps first: rules and elements refer to them.
	for _, name := range sortedKeys(want.sets) {
		if _, ok := have.sets[name]; !ok {
			s := want.sets[name]
			do(func() { tx.Add(&knftables.Set{Name: name, Type: s.typ, Comment: optional(s.comment)}) })
		}
	}
	for _, name := range sortedKeys(want.maps) {
		if _, ok := have.maps[name]; !ok {
			m := want.maps[name]
			do(func() { tx.Add(&knftables.Map{Name: name, Type: m.typ, Comment: optional(m.comment)}) })
		}
	}
	// Chains: new ones made, ones whose rules differ flushed and rewritten.
	for _, name := range sortedKeys(want.chains) {
		c, old := want.chains[name], have.chains[name]
		if old != nil && sameRules(c.rules, old.rules) {
			continue
		}
		if old == nil {
			do(func() { tx.Add(chainObject(name, c)) })
		} else {
			do(func() { tx.Flush(&knftables.Chain{Name: name}) })
		}
		for _, r := range c.rules {
			do(func() { tx.Add(&knftables.Rule{Chain: name, Rule: r.text, Comment: optional(r.comment)}) })
		}
	}
	// Elements: the unwanted out, the missing in.
	elements := func(wantSets, haveSets map[string]*set, isMap bool) {
		for _, name := range sortedKeys(wantSets) {
			ws, hs := wantSets[name], haveSets[name]
			if hs == nil {
				hs = &set{}
			}
			for _, k := range sortedKeys(hs.elems) {
				if we, ok := ws.elems[k]; !ok || !slices.Equal(we.value, hs.elems[k].value) {
					do(func() { tx.Delete(elementObject(name, hs.elems[k], isMap)) })
				}
			}
			for _, k := range sortedKeys(ws.elems) {
				if he, ok := hs.elems[k]; !ok || !slices.Equal(ws.elems[k].value, he.value) {
					do(func() { tx.Add(elementObject(name, ws.elems[k], isMap)) })
				}
			}
		}
	}
	elements(want.sets, have.sets, false)
	elements(want.maps, have.maps, true)
	// What nobody wants goes last, once nothing refers to it.
	for _, name := range sortedKeys(have.chains) {
		if _, ok := want.chains[name]; !ok {
			do(func() {
				tx.Flush(&knftables.Chain{Name: name})
				tx.Delete(&knftables.Chain{Name: name})
			})
		}
	}
	for _, name := range sortedKeys(have.sets) {
		if _, ok := want.sets[name]; !ok {
			do(func() { tx.Delete(&knftables.Set{Name: name}) })
		}
	}
	for _, name := range sortedKeys(have.maps) {
		if _, ok := want.maps[name]; !ok {
			do(func() { tx.Delete(&knftables.Map{Name: name}) })
		}
	}
	if len(ops) == 0 {
		return 0
	}
	tx.Add(&knftables.Table{Comment: optional(tableComment)})
	for _, op := range ops {
		op()
	}
	return tx.NumOperations() - before
}

func sameRules(want, have []rule) bool {
	return slices.EqualFunc(want, have, func(a, b rule) bool { return a.comment == b.comment })
}

func chainObject(name string, c *chain) *knftables.Chain {
	ch := &knftables.Chain{Name: name, Comment: optional(c.comment)}
	switch c.hook {
	case "forward":
		ch.Type, ch.Hook, ch.Priority = ptr(knftables.FilterType), ptr(knftables.ForwardHook), ptr(knftables.FilterPriority)
	case "input":
		ch.Type, ch.Hook, ch.Priority = ptr(knftables.FilterType), ptr(knftables.InputHook), ptr(knftables.FilterPriority)
	}
	return ch
}

func elementObject(name string, e element, isMap bool) *knftables.Element {
	if isMap {
		return &knftables.Element{Map: name, Key: e.key, Value: e.value}
	}
	return &knftables.Element{Set: name, Key: e.key}
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func ptr[T any](v T) *T { return &v }

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// clone copies t deeply enough that later changes to either do not show in
// the other.
func (t *table) clone() *table {
	out := newTable()
	for name, c := range t.chains {
		cc := *c
		cc.rules = slices.Clone(c.rules)
		out.chains[name] = &cc
	}
	for _, pair := range []struct{ from, to map[string]*set }{{t.sets, out.sets}, {t.maps, out.maps}} {
		for name, s := range pair.from {
			cs := *s
			cs.elems = maps.Clone(s.elems)
			pair.to[name] = &cs
		}
	}
	return out
}

// String renders t as nft commands, sorted: for golden files and diffs.
func (t *table) String() string {
	tx := knftables.NewFake(knftables.InetFamily, TableName).NewTransaction()
	plan(tx, t, newTable())
	return strings.TrimSuffix(tx.String(), "\n") + "\n"
}
