package ipamtest_test

import (
	"testing"

	"github.com/flatnet-io/flatnet/ipam/ipamtest"
	"github.com/flatnet-io/flatnet/ipam/storetest"
)

func TestMemStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store { return ipamtest.NewMemStore() })
}
