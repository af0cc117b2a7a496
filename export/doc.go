// Package export owns creditd's exports for finance: the ledger and the grants
// written as Parquet files (through Apache Arrow) to a directory or any
// gocloud.dev/blob bucket, the manifest whose sequence watermark makes exports
// incremental and exactly once, and the reconciliation report that ties the
// ledger out in credits and in money.
//
// It reads state only through one consistent fsm read transaction (a cut):
// any replica can export from its own applied state, and two replicas that
// applied the same log produce the same files, byte for byte. Ledger parts
// depend on the ledger alone. A grants snapshot is the replica's state at its
// cut (the state file holds no older one): its amounts agree with the ledger
// up to its snapshot_seq, but statuses and updated_at may already reflect
// later commands that wrote no ledger entry (a Tick activating a pending
// grant), so two replicas' snapshots at one seq can differ in those columns.
// It never writes to the state machine, never talks to raft and never reads
// the clock to decide what goes into a file.
//
// # Exactly once
//
// A run reads the manifest's watermark W, takes a cut C (the last ledger
// sequence of its read transaction), deletes parts and day lists left beyond
// W by an interrupted run, writes the parts of (W, C], a grants snapshot at C
// and the lists of the UTC days C closes, and only then replaces the manifest
// with watermark C. Each object appears whole or not at all (blob writes
// commit on Close; fileblob renames a temporary file). Part names depend only
// on the range and the ledger, so a rerun writes the same names; a day list is
// named for its content, so no write replaces a list a manifest names with
// other bytes. A crash between a part or list and the manifest leaves at most
// complete objects the manifest does not name, which the next run deletes or
// writes again before it commits. One exporter per destination at a time:
// should two overlap, a run commits only over the manifest it started from,
// byte for byte, naming only objects that are there, and a sweep deletes
// only while the manifest is the one it read; the other run is refused
// (ErrConcurrentExport). A run also refuses to build on day lists that are
// missing or damaged (ErrDamagedList).
//
// # Bounded manifest
//
// A closed day's parts (and, when every snapshot is kept, its snapshots) move
// out of the manifest into an immutable day list under the hidden _lists/
// folder (never beside the Parquet files, which warehouses load by folder),
// that the manifest names with its digest: the manifest grows by a summary
// per day, not by a part per run.
package export
