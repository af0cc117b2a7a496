// Package duckdbtest checks creditd's Parquet exports with an independent
// reader, DuckDB: SQL over the exported files must find every ledger entry
// exactly once, per-pool sums equal to the state's balances, and the
// reconciliation identities holding to the cent. Its tests are all it has.
package duckdbtest
