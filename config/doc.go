// Package config owns the flatnet agent's configuration: the Config struct,
// its defaults (Default), how it is loaded from a YAML file, FLATNET_*
// environment variables and command-line flags (Load, AddFlags), and the rules
// that make it valid (Validate).
//
// Precedence, highest first: the flags the user set, the environment, the
// file, the defaults. Decoding is strict: a key that Config does not have is an
// error that names it, and Validate reports every invalid value at once, each
// with its key path ("ipam.pools[1].cidr") and the value.
//
// Only this package and cmd/ may import viper, and this package keeps it
// inside Load: a local instance, never viper's global one, and no viper type in
// its API. It must not act on the configuration: it opens no socket, creates
// no directory and talks to no datastore. It reads the file it is given, the
// environment and the host name, nothing else.
package config
