package export

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// EachLedgerPart calls fn with every committed ledger part, in sequence
// order: those of the closed days from their lists (read one at a time,
// each refused unless it is the list the manifest committed), then the
// open day's, listed in the manifest itself.
func (m *Manifest) EachLedgerPart(ctx context.Context, b *blob.Bucket, fn func(p Part) error) error {
	for _, d := range m.LedgerDays {
		list, err := readDayList(ctx, b, d, true)
		if err != nil {
			return err
		}
		for _, p := range list.LedgerParts {
			if err := fn(p); err != nil {
				return err
			}
		}
	}
	for _, p := range m.LedgerParts {
		if err := fn(p); err != nil {
			return err
		}
	}
	return nil
}

// EachGrantSnapshot calls fn with every committed grants snapshot, in
// sequence order, as EachLedgerPart does with parts.
func (m *Manifest) EachGrantSnapshot(ctx context.Context, b *blob.Bucket, fn func(s Snapshot) error) error {
	for _, d := range m.GrantSnapshotDays {
		list, err := readDayList(ctx, b, d, false)
		if err != nil {
			return err
		}
		for _, s := range list.GrantSnapshots {
			if err := fn(s); err != nil {
				return err
			}
		}
	}
	for _, s := range m.GrantSnapshots {
		if err := fn(s); err != nil {
			return err
		}
	}
	return nil
}

// readDayList reads the list d sums up, of ledger parts or of grants
// snapshots, and refuses it (ErrDamagedList, naming it) unless it is the
// one committed: present, within maxListBytes, of the committed digest, and
// holding what the summary says.
func readDayList(ctx context.Context, b *blob.Bucket, d Day, parts bool) (*DayList, error) {
	damaged := func(format string, args ...any) error { return damagedList(d, format, args...) }
	data, err := readObject(ctx, b, d.Key, maxListBytes)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, damaged("missing, but the manifest lists it")
	}
	if err != nil {
		return nil, damaged("%v", err)
	}
	if sum := hexSHA256(data); sum != d.SHA256 {
		return nil, damaged("its SHA-256 is %s, the manifest committed %s: changed after it was written", sum, d.SHA256)
	}
	var list DayList
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, damaged("decode: %v", err)
	}
	if err := checkDayList(&list, d, parts); err != nil {
		return nil, damaged("%v", err)
	}
	return &list, nil
}

// damagedList is ErrDamagedList for the list d sums up, saying what is
// wrong with it.
func damagedList(d Day, format string, args ...any) error {
	return fmt.Errorf("%w %s (day %s): %s", ErrDamagedList, d.Key, d.Date, fmt.Sprintf(format, args...))
}

// checkCommittedLists refuses to build on a manifest whose day lists are
// not the ones it committed, as a reader would refuse them: a run carries
// every list into the manifest it commits, and committing on top of a
// missing or damaged one keeps a destination that every report refuses.
//
// Every list must be in present, the lists the manifest names that the
// sweep's listing of _lists/ found: no request of its own. Reading every
// list whole on every run would cost a read per closed day ever exported
// (at --export-every 1m, ≈ 600 KB a day: 220 MB for a year of history,
// every minute), so a run reads and checks whole (digest, then contents
// against the summary) only the newest list of each kind, the one the last
// day-closing run committed, and one more of each, picked by the watermark,
// which moves with every commit: a destination exported regularly has each
// of its lists read now and then, for at most four list reads a run. The
// lists a retention makes a run read are checked whole there too.
func (e *Exporter) checkCommittedLists(ctx context.Context, m *Manifest, present map[string]bool) error {
	for _, kind := range []struct {
		days  []Day
		parts bool
	}{{m.LedgerDays, true}, {m.GrantSnapshotDays, false}} {
		for _, d := range kind.days {
			if !present[d.Key] {
				return damagedList(d, "missing, but the manifest lists it")
			}
		}
		n := len(kind.days)
		if n == 0 {
			continue
		}
		whole := []int{n - 1}
		if picked := int(m.WatermarkSeq % uint64(n)); picked != n-1 {
			whole = append(whole, picked)
		}
		for _, i := range whole {
			if _, err := readDayList(ctx, e.dst, kind.days[i], kind.parts); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkDayList asserts a list holds what its summary says: the day's parts
// contiguous over its range (or its snapshots at its first and last seq),
// each dated that day and named for its range, and their counts and sums.
func checkDayList(list *DayList, d Day, parts bool) error {
	if list.Format != formatVersion || list.Date != d.Date {
		return fmt.Errorf("format %d of %q, expected format %d of %s", list.Format, list.Date, formatVersion, d.Date)
	}
	var (
		rows, bytes int64
		files       int
		first, last uint64
	)
	if parts {
		if len(list.GrantSnapshots) > 0 {
			return fmt.Errorf("lists grants snapshots in a list of ledger parts")
		}
		next, err := checkParts(list.LedgerParts, d.FirstSeq, "")
		if err != nil {
			return err
		}
		for _, p := range list.LedgerParts {
			if p.Date != d.Date {
				return fmt.Errorf("ledger part %s of %s", p.Key, p.Date)
			}
			rows, bytes = rows+p.Rows, bytes+p.Bytes
		}
		files, first, last = len(list.LedgerParts), d.FirstSeq, next-1
	} else {
		if len(list.LedgerParts) > 0 {
			return fmt.Errorf("lists ledger parts in a list of grants snapshots")
		}
		for i, s := range list.GrantSnapshots {
			if s.Key != grantsKey(s.Seq) || s.Date != d.Date || (i > 0 && s.Seq <= last) {
				return fmt.Errorf("grants snapshot %s of %s at %d after %d", s.Key, s.Date, s.Seq, last)
			}
			if i == 0 {
				first = s.Seq
			}
			last = s.Seq
			rows, bytes = rows+s.Rows, bytes+s.Bytes
		}
		files = len(list.GrantSnapshots)
	}
	if files != d.Files || first != d.FirstSeq || last != d.LastSeq || rows != d.Rows || bytes != d.Bytes {
		return fmt.Errorf("lists %d files at %d..%d, %d rows, %d bytes; the manifest says %d files at %d..%d, %d rows, %d bytes",
			files, first, last, rows, bytes, d.Files, d.FirstSeq, d.LastSeq, d.Rows, d.Bytes)
	}
	return nil
}

// writeDayList stores a closed day's list and returns its summary. The list
// is checked against the summary as a reader will, and refused past
// maxListBytes, before it is written. Its name holds its digest: writing it
// again (a rerun at the same cut) writes the same bytes under the same
// name, and another list of the day gets another name.
func (e *Exporter) writeDayList(ctx context.Context, list DayList) (Day, error) {
	d := Day{Date: list.Date}
	parts := len(list.LedgerParts) > 0
	prefix, what := grantsListsPrefix, "grants snapshots"
	if parts {
		prefix, what = ledgerListsPrefix, "ledger parts"
		d.FirstSeq, d.LastSeq = list.LedgerParts[0].FirstSeq, list.LedgerParts[len(list.LedgerParts)-1].LastSeq
		for _, p := range list.LedgerParts {
			d.Rows, d.Bytes = d.Rows+p.Rows, d.Bytes+p.Bytes
		}
		d.Files = len(list.LedgerParts)
	} else {
		d.FirstSeq, d.LastSeq = list.GrantSnapshots[0].Seq, list.GrantSnapshots[len(list.GrantSnapshots)-1].Seq
		for _, s := range list.GrantSnapshots {
			d.Rows, d.Bytes = d.Rows+s.Rows, d.Bytes+s.Bytes
		}
		d.Files = len(list.GrantSnapshots)
	}
	data, err := encodeJSON(&list)
	if err != nil {
		return d, fmt.Errorf("export: encode the list of %s of %s: %w", what, d.Date, err)
	}
	d.SHA256 = hexSHA256(data)
	d.Key = listKey(prefix, d.Date, d.SHA256)
	if err := checkDayList(&list, d, parts); err != nil {
		return d, fmt.Errorf("export: refusing to write %s: %w", d.Key, err)
	}
	if len(data) > maxListBytes {
		return d, fmt.Errorf("%w: the list %s of %d files is %d bytes, more than the %d a reader accepts; "+
			"the committed export stays readable; export less often or with more --file-rows to a new destination",
			ErrManifestTooLarge, d.Key, d.Files, len(data), maxListBytes)
	}
	// Written whole or not at all, before the manifest that names it: a
	// crash in between leaves a list no manifest names, which the next run
	// deletes (sweep) or writes again.
	if err := e.dst.WriteAll(ctx, d.Key, data, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		return d, fmt.Errorf("export: store %s: %w", d.Key, err)
	}
	return d, e.after(d.Key)
}

// splitClosed splits items, in sequence order, into the runs of each day
// before open (closed: no later entry can fall into them) and the rest.
func splitClosed[T any](items []T, dateOf func(T) string, open string) (closed [][]T, rest []T) {
	i := 0
	for i < len(items) && dateOf(items[i]) < open {
		j := i + 1
		for j < len(items) && dateOf(items[j]) == dateOf(items[i]) {
			j++
		}
		closed = append(closed, items[i:j])
		i = j
	}
	return closed, items[i:]
}

// dropped is what retention took out of a committed manifest: deleted once
// the manifest that no longer lists them is committed.
type dropped struct {
	snapshots []Snapshot
	// days says whole snapshot days left the manifest (dropped or listed
	// in it again): their files and lists are found by a sweep.
	days bool
}

// rollUp fills next's parts and snapshots from m's and this run's: the days
// closed by this run's cut (the day of snap, its last entry) go into lists
// written now, before next is committed. With a retention, the snapshots
// past it are dropped; without one, the closed days' snapshots go into
// lists as the parts do.
func (e *Exporter) rollUp(ctx context.Context, m, next *Manifest, parts []Part, snap Snapshot) (dropped, error) {
	open := snap.Date
	closed, rest := splitClosed(slices.Concat(m.LedgerParts, parts), func(p Part) string { return p.Date }, open)
	next.LedgerDays = slices.Clone(m.LedgerDays)
	for _, ps := range closed {
		d, err := e.writeDayList(ctx, DayList{Format: formatVersion, Date: ps[0].Date, LedgerParts: ps})
		if err != nil {
			return dropped{}, err
		}
		next.LedgerDays = append(next.LedgerDays, d)
	}
	next.LedgerParts = rest

	snaps := slices.Concat(m.GrantSnapshots, []Snapshot{snap})
	days := slices.Clone(m.GrantSnapshotDays)
	keep := e.opts.KeepGrantSnapshots
	if keep == 0 {
		closedSnaps, restSnaps := splitClosed(snaps, func(s Snapshot) string { return s.Date }, open)
		for _, ss := range closedSnaps {
			d, err := e.writeDayList(ctx, DayList{Format: formatVersion, Date: ss[0].Date, GrantSnapshots: ss})
			if err != nil {
				return dropped{}, err
			}
			days = append(days, d)
		}
		next.GrantSnapshotDays, next.GrantSnapshots = days, restSnaps
		return dropped{}, nil
	}
	// A retention keeps the newest keep snapshots, oldest (listed in day
	// lists, from a time without retention) first to go. Whole days go
	// without reading their lists; if the cut falls inside a day, that day
	// and the later ones come back into the manifest (at most keep
	// snapshots), since a list is never changed.
	var out dropped
	total := len(snaps)
	for _, d := range days {
		total += d.Files
	}
	drop := max(total-keep, 0)
	for len(days) > 0 && days[0].Files <= drop {
		drop -= days[0].Files
		days, out.days = days[1:], true
	}
	if drop > 0 && len(days) > 0 {
		var back []Snapshot
		for _, d := range days {
			list, err := readDayList(ctx, e.dst, d, false)
			if err != nil {
				return dropped{}, fmt.Errorf("export: apply the grants snapshot retention: %w", err)
			}
			back = append(back, list.GrantSnapshots...)
		}
		snaps, days, out.days = append(back, snaps...), nil, true
	}
	out.snapshots = snaps[:drop]
	next.GrantSnapshotDays, next.GrantSnapshots = days, snaps[drop:]
	return out, nil
}

// committed says which objects a manifest covers, for the sweep.
type committed struct {
	watermark uint64
	snapshots map[string]bool // listed in the manifest itself
	snapDays  []Day           // their snapshots are those within their seqs
	lists     map[string]bool
}

func committedBy(m *Manifest) *committed {
	c := &committed{watermark: m.WatermarkSeq, snapshots: map[string]bool{}, snapDays: m.GrantSnapshotDays, lists: map[string]bool{}}
	for _, s := range m.GrantSnapshots {
		c.snapshots[s.Key] = true
	}
	for _, d := range slices.Concat(m.LedgerDays, m.GrantSnapshotDays) {
		c.lists[d.Key] = true
	}
	return c
}

// covers says whether the manifest covers a snapshot at seq: listed in it,
// or within the seqs of a day list (whose snapshots are never dropped
// singly: a retention drops whole days or lists them in the manifest again).
func (c *committed) coversSnapshot(key string, seq uint64) bool {
	if seq > c.watermark {
		return false
	}
	if c.snapshots[key] {
		return true
	}
	_, ok := slices.BinarySearchFunc(c.snapDays, seq, func(d Day, s uint64) int { return cmpRange(d.FirstSeq, d.LastSeq, s) })
	return ok
}

func hexSHA256(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
