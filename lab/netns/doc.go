// Package netns makes and removes named network namespaces — the ones under
// /run/netns that `ip netns` manages — and runs commands and long-lived
// processes inside them: the lab's and the privileged tests' one way into a
// namespace.
//
// Every function takes the namespace by name and touches nothing else: it
// never kills a process or deletes a namespace it was not given, and never
// this process itself. Errors are plain errors that name the command or the
// namespace; nothing here knows of testing.
package netns
