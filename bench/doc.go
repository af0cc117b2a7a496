// Package bench is creditd's load generator: it drives a running cluster
// over the public API (the generated Connect clients of package gen, never
// node or fsm directly), measures requests/s, events/s and latency
// percentiles per operation, and at the end checks that what the clients
// saw acknowledged is what the cluster holds: the credits burned equal the
// acknowledged burns, and every replica's balances equal the leader's.
//
// It owns the workload (setup, the operation mix, customer skew), the
// measurement (HDR histograms, error counts by code) and the report. It
// must never start nodes itself: package bench/local does that for
// `creditd bench --local N`, so that the numbers for a remote cluster and a
// local one come from the same client code.
package bench
