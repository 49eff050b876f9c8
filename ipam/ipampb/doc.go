// Package ipampb is the IPAM service's wire API, generated from ipam.proto by
// `make generate`. Edit the .proto, never the generated files.
package ipampb
