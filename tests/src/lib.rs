//! Test harness: starts real etcd, control servers and agents on free loopback ports.
