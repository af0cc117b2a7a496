// Package fsm owns creditd's model and its deterministic state machine: credit
// types, features, plans, customers, pools, grants, reservations, purchases,
// idempotency records and the ledger, together with their storage on disk
// (bbolt) and their command encoding.
//
// Everything here is a pure function of the command log. Apply never reads
// the clock (every entry carries the leader's time), never draws random
// numbers, never uses floats and never depends on map iteration order. Two
// replicas that applied the same entries hold the same state and produce the
// same canonical Dump byte for byte. The package knows nothing of raft or the
// network: package node adapts it to raft.
//
// # Amounts and money
//
// Credit amounts are int64 counts of a credit type's smallest unit (a credit
// type with scale 2 counts hundredths of a credit). Rates and prices are exact
// Decimals. Money (currency amounts) is int64 micros of the currency unit
// (MoneyScale = 6 decimal places), rounded half-even where a product of
// credits and price is not exact. Every arithmetic step checks for overflow
// and fails the command rather than wrapping.
//
// A paid grant's deferred revenue is always round(remaining × cost basis). A
// movement's money is the change it makes to that figure, so the money
// identity holds exactly, whatever the rounding:
//
//	closing = opening + granted − burned − expired − revoked ± adjusted
//
// # Burn order
//
// Among the grants of a pool that are active at the command's time
// (effective_at ≤ t < expires_at, status active, remaining > 0), a burn takes
// credits from, in order:
//
//  1. the lowest priority number (0 is the highest priority);
//  2. the earliest expires_at (grants that never expire last);
//  3. promotional before paid;
//  4. the earliest effective_at;
//  5. the earliest created_at;
//  6. the smallest grant id (bytewise), which makes the order total.
//
// A burn that spans several grants writes one ledger entry per grant. The
// order is kept as the key of an index, so a burn reads grants in order
// instead of sorting them.
//
// # Enforcement
//
// available = Σ remaining of active grants − reserved − overdraft. An event
// whose credits exceed available is denied whole, unless the customer's plan
// allows overdraft: then available may fall to −limit and the shortfall is
// recorded as the pool's overdraft, which the next grant into the pool repays
// first (a ledger entry of kind repay).
//
// Credits for a usage event are quantity × the feature's rate, rounded up to
// the credit type's scale, so splitting usage never costs less than reporting
// it at once.
//
// # Storage
//
// State lives in one bbolt file. Each Apply call runs in one bbolt write
// transaction that also stores the applied log index, so after a crash the
// state and the index agree and a restart resumes from there (as etcd's
// backend does). Snapshots stream a consistent read transaction while applies
// go on.
package fsm
