package v1alpha1

import (
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
)

// Deep copies, written by hand instead of generated: the types are few and
// small. TestDeepCopy checks that a copy shares no memory with its original,
// so a field added without a copy here fails it.

// DeepCopyObject implements runtime.Object.
func (p *IPPool) DeepCopyObject() runtime.Object { return p.DeepCopy() }

// DeepCopy returns a copy sharing no memory with p.
func (p *IPPool) DeepCopy() *IPPool {
	out := &IPPool{TypeMeta: p.TypeMeta, Spec: p.Spec}
	p.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *IPPoolList) DeepCopyObject() runtime.Object {
	out := &IPPoolList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]IPPool, len(l.Items))
	for i := range l.Items {
		out.Items[i] = *l.Items[i].DeepCopy()
	}
	return out
}

// DeepCopyObject implements runtime.Object.
func (b *IPAMBlock) DeepCopyObject() runtime.Object { return b.DeepCopy() }

// DeepCopy returns a copy sharing no memory with b.
func (b *IPAMBlock) DeepCopy() *IPAMBlock {
	out := &IPAMBlock{TypeMeta: b.TypeMeta, Spec: b.Spec}
	b.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if b.Spec.EmptySince != nil {
		t := *b.Spec.EmptySince
		out.Spec.EmptySince = &t
	}
	out.Spec.Allocations = slices.Clone(b.Spec.Allocations)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *IPAMBlockList) DeepCopyObject() runtime.Object {
	out := &IPAMBlockList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]IPAMBlock, len(l.Items))
	for i := range l.Items {
		out.Items[i] = *l.Items[i].DeepCopy()
	}
	return out
}

// DeepCopyObject implements runtime.Object.
func (p *BGPPeer) DeepCopyObject() runtime.Object { return p.DeepCopy() }

// DeepCopy returns a copy sharing no memory with p.
func (p *BGPPeer) DeepCopy() *BGPPeer {
	out := &BGPPeer{TypeMeta: p.TypeMeta, Spec: p.Spec}
	p.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	s := &out.Spec
	s.NodeSelector = p.Spec.NodeSelector.DeepCopy()
	s.Password = clonePtr(p.Spec.Password)
	s.HoldTime = clonePtr(p.Spec.HoldTime)
	s.KeepaliveInterval = clonePtr(p.Spec.KeepaliveInterval)
	if p.Spec.Import != nil {
		s.Import = &BGPImport{Allow: slices.Clone(p.Spec.Import.Allow), AllowDefault: p.Spec.Import.AllowDefault}
	}
	if p.Spec.BFD != nil {
		s.BFD = &BGPBFD{Interval: clonePtr(p.Spec.BFD.Interval), Multiplier: p.Spec.BFD.Multiplier}
	}
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *BGPPeerList) DeepCopyObject() runtime.Object {
	out := &BGPPeerList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]BGPPeer, len(l.Items))
	for i := range l.Items {
		out.Items[i] = *l.Items[i].DeepCopy()
	}
	return out
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
