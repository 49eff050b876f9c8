package cni

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// agentError turns a failed call to the agent into the CNI error a runtime can
// act on: try again later while the agent cannot answer, our own code when the
// pools are exhausted.
func agentError(op, socket string, err error) *types.Error {
	st := status.Convert(err)
	msg := fmt.Sprintf("%s: %s", op, st.Message())
	switch st.Code() {
	case codes.ResourceExhausted:
		return types.NewError(ErrPoolExhausted, "pool exhausted", msg)
	case codes.InvalidArgument:
		return types.NewError(types.ErrInvalidEnvironmentVariables, "agent refused the request", msg)
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.Canceled:
		return types.NewError(types.ErrTryAgainLater, "flatnet agent unavailable", fmt.Sprintf("%s (agent socket %s)", msg, socket))
	}
	return types.NewError(types.ErrInternal, "flatnet agent failed", msg)
}

// ioError is a failure to change the kernel's state.
func ioError(what string, err error) *types.Error {
	return types.NewError(types.ErrIOFailure, what, err.Error())
}
