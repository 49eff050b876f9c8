package v1alpha1

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// The API group and version of flatnet's resources.
const (
	Group   = "flatnet.io"
	Version = "v1alpha1"
)

// GroupVersion is flatnet.io/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// Resource names (plural, lower case), as in URLs and RBAC rules.
const (
	IPPools    = "ippools"
	IPAMBlocks = "ipamblocks"
	BGPPeers   = "bgppeers"
)

// Scheme knows flatnet's types and the meta types a client needs around them
// (ListOptions, Status, WatchEvent).
var Scheme = newScheme()

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	s.AddKnownTypes(GroupVersion,
		&IPPool{}, &IPPoolList{},
		&IPAMBlock{}, &IPAMBlockList{},
		&BGPPeer{}, &BGPPeerList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return s
}

// NewRESTClient returns a client for flatnet.io/v1alpha1 that speaks JSON and
// decodes into this package's types. cfg is copied, not changed.
func NewRESTClient(cfg *rest.Config) (*rest.RESTClient, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &GroupVersion
	c.APIPath = "/apis"
	c.ContentType = runtime.ContentTypeJSON
	c.AcceptContentTypes = runtime.ContentTypeJSON
	c.NegotiatedSerializer = serializer.NewCodecFactory(Scheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = "flatnet"
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("new %s client: %w", GroupVersion, err)
	}
	return rc, nil
}
