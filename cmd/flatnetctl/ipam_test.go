package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flatnet-io/flatnet/ipam/ipampb"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func sample() (*ipampb.UsageResponse, *ipampb.ListResponse) {
	at := timestamppb.New(time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC))
	usage := &ipampb.UsageResponse{
		Node: "node1",
		Pools: []*ipampb.PoolUsage{
			{Name: "default-ipv4", Cidr: "10.244.0.0/16", BlockSize: 26, BlockBits: 10, Blocks: []*ipampb.BlockUsage{
				{Cidr: "10.244.0.0/26", Affinity: "node1", Used: 2, Size: 64},
				{Cidr: "10.244.0.64/26", Affinity: "node2", Used: 0, Size: 64, EmptySince: at},
			}},
			{Name: "default-ipv6", Cidr: "fd00:10:244::/56", BlockSize: 122, BlockBits: 66},
		},
		UnpooledBlocks: []*ipampb.BlockUsage{{Cidr: "10.99.0.0/26", Affinity: "node3", Used: 1, Size: 64}},
	}
	list := &ipampb.ListResponse{Allocations: []*ipampb.Allocation{
		{Address: "10.244.0.0", Handle: "c1/eth0", Attrs: &ipampb.Attributes{Node: "node1", Namespace: "default", Pod: "web-0"}, Allocated: at, Block: "10.244.0.0/26"},
		{Address: "10.244.0.1", Handle: "c2/eth0", Attrs: &ipampb.Attributes{Node: "node1"}, Allocated: at, Block: "10.244.0.0/26"},
	}}
	return usage, list
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", name, diff)
	}
}

func TestIPAMShowOutput(t *testing.T) {
	usage, list := sample()
	for _, tc := range []struct {
		name string
		list *ipampb.ListResponse
		json bool
	}{
		{"show.txt", nil, false},
		{"show-handles.txt", list, false},
		{"show-handles.json", list, true},
	} {
		var buf bytes.Buffer
		var err error
		if tc.json {
			err = writeJSON(&buf, usage, tc.list)
		} else {
			err = writeTable(&buf, usage, tc.list)
		}
		if err != nil {
			t.Fatal(err)
		}
		golden(t, tc.name, buf.Bytes())
	}
}

func TestBadOutputFormat(t *testing.T) {
	root := newRoot()
	root.SetArgs([]string{"-o", "yaml", "ipam", "show"})
	if err := root.Execute(); err == nil {
		t.Error("-o yaml accepted")
	}
}
