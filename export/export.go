package export

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/creditd/creditd/fsm"
)

// Defaults and limits of Options.
const (
	DefaultRowGroupRows = 1 << 20 // ≈ 1M rows: 20–40 MB compressed, what warehouses load best
	DefaultFileRows     = 8 << 20
	DefaultBatchRows    = 64 << 10
	MinRows             = 1
	MaxRowGroupRows     = 16 << 20
	MaxFileRows         = 256 << 20
)

// Options tune an Exporter. The zero value is production's default.
type Options struct {
	// RowGroupRows caps a Parquet row group; a row group is buffered in
	// memory (encoded, compressed) until full. 0 = DefaultRowGroupRows.
	RowGroupRows int
	// FileRows caps one ledger part; a day with more entries is split into
	// several parts. 0 = DefaultFileRows.
	FileRows int
	// BatchRows is the size of the Arrow record batches fed to the writer.
	// 0 = DefaultBatchRows.
	BatchRows int
	// TempDir holds each part while it is written, before it is stored
	// under its final name. "" = os.TempDir().
	TempDir string
	// Barrier, when set, runs before the cut is taken: a read barrier
	// (node.LinearizableRead) makes the export include every write
	// acknowledged before the run started.
	Barrier func(ctx context.Context) error
	// Progress, when set, receives a progress line (entries done of total,
	// entries/s) at most twice a second. Set it only for a terminal.
	Progress io.Writer
	// AfterObject, when set, is called after each part, grants snapshot
	// and day list is stored and before the manifest is committed; an error
	// aborts the run there. Tests use it to simulate a crash between them.
	AfterObject func(key string) error
	// KeepGrantSnapshots keeps only the newest this many grants snapshots
	// (each run that exports new entries writes one), at most
	// MaxKeepGrantSnapshots. 0 = keep them all (in day lists once their
	// day is closed).
	KeepGrantSnapshots int
	// Logger receives one line per run. nil = no logging.
	Logger *slog.Logger
	// Allocator for Arrow buffers. nil = Go's allocator.
	Allocator memory.Allocator
}

func (o *Options) defaults() error {
	for _, f := range []struct {
		v        *int
		def, max int
		name     string
	}{
		{&o.RowGroupRows, DefaultRowGroupRows, MaxRowGroupRows, "RowGroupRows"},
		{&o.FileRows, DefaultFileRows, MaxFileRows, "FileRows"},
		{&o.BatchRows, DefaultBatchRows, MaxRowGroupRows, "BatchRows"},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < MinRows || *f.v > f.max {
			return fmt.Errorf("export options: %s %d out of range [%d, %d]", f.name, *f.v, MinRows, f.max)
		}
	}
	if o.KeepGrantSnapshots < 0 || o.KeepGrantSnapshots > MaxKeepGrantSnapshots {
		return fmt.Errorf("export options: KeepGrantSnapshots %d out of range [0 (keep all), %d]", o.KeepGrantSnapshots, MaxKeepGrantSnapshots)
	}
	if o.Allocator == nil {
		o.Allocator = memory.NewGoAllocator()
	}
	return nil
}

// Exporter writes a replica's ledger and grants to one destination.
type Exporter struct {
	src  Source
	dst  *blob.Bucket
	opts Options
	// dirDest says dst is a directory (fileblob), whose folders outlive
	// the objects in them.
	dirDest bool
	// wait is how Every waits, and false once ctx is done first; nil =
	// sleep. Tests replace it.
	wait func(ctx context.Context, d time.Duration) bool
}

// New makes an Exporter from src to dst. The caller keeps dst and closes it.
func New(src Source, dst *blob.Bucket, opts Options) (*Exporter, error) {
	if src == nil || dst == nil {
		return nil, errors.New("export: source and destination are required")
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	return &Exporter{src: src, dst: dst, opts: opts, dirDest: isDirectory(dst)}, nil
}

// ErrBehind is returned when the replica has applied less of the ledger
// than the destination already holds; export from a replica that caught up
// (or ask for a read barrier).
var ErrBehind = errors.New("export: replica is behind the destination's watermark")

// ErrConcurrentExport is returned by a run that another exporter overlapped
// on the same destination: the manifest changed after the run read it (the
// other committed), or an object the run stored was removed (the other's
// sweep) before its commit. The run commits nothing and deletes what it
// stored that the committed manifest does not name; the next run goes on
// from the manifest the other committed.
var ErrConcurrentExport = errors.New("export: another exporter is writing to the destination")

// Result says what a run did.
type Result struct {
	FromSeq, ToSeq uint64 // exported range; FromSeq > ToSeq when nothing was new
	Entries        int64
	Parts          []Part
	Grants         *Snapshot
	ClosedDays     []Day    // days whose parts this run moved into day lists
	Removed        []string // uncommitted objects of an interrupted run that were deleted
	Elapsed        time.Duration
}

// Run exports every ledger entry after the destination's watermark up to the
// replica's last applied entry, plus a grants snapshot at that point, then
// commits the manifest. Running it again exports nothing twice; after a
// failure at any step, the next Run completes the job. It refuses to build
// on a committed day list that is missing or damaged (ErrDamagedList), and
// to commit over a manifest another exporter committed since it read it
// (ErrConcurrentExport).
func (e *Exporter) Run(ctx context.Context) (Result, error) {
	start := time.Now()
	var res Result
	m, base, err := readManifestStored(ctx, e.dst)
	if err != nil {
		return res, err
	}
	if e.opts.Barrier != nil {
		if err := e.opts.Barrier(ctx); err != nil {
			return res, fmt.Errorf("export: read barrier: %w", err)
		}
	}
	err = e.src.Read(func(c Cut) error {
		cut := c.LastSeq()
		res.FromSeq, res.ToSeq = m.WatermarkSeq+1, cut
		if cut < m.WatermarkSeq {
			// Which of the two it is cannot be told from here: the
			// watermark's fingerprint is of an entry this replica lacks.
			return fmt.Errorf("%w: replica at ledger sequence %d, destination at %d (a replica that has not caught up yet, "+
				"or a destination holding another, longer ledger's export: check the destination)", ErrBehind, cut, m.WatermarkSeq)
		}
		if err := checkDigest(c, m); err != nil {
			return err
		}
		removed, err := e.sweep(ctx, m, base, cut, func(present map[string]bool) error {
			if err := e.checkCommittedLists(ctx, m, present); err != nil {
				return fmt.Errorf("export: refusing to build on the committed export: %w", err)
			}
			return nil
		})
		res.Removed = removed
		if err != nil {
			return err
		}
		if cut == m.WatermarkSeq {
			return nil
		}
		parts, err := e.writeLedger(ctx, c, m.WatermarkSeq+1, cut)
		if err != nil {
			return err
		}
		res.Parts = parts
		for _, p := range parts {
			res.Entries += p.Rows
		}
		// The snapshot is dated by the cut's entry, the last part's.
		snap, err := e.writeGrants(ctx, c, cut, parts[len(parts)-1].Date)
		if err != nil {
			return err
		}
		res.Grants = &snap
		next := Manifest{Format: formatVersion, WatermarkSeq: cut, AppliedIndex: c.AppliedIndex(),
			LogTime: c.LastTime().Time().Format(time.RFC3339Nano)}
		if next.WatermarkDigest, err = digestAt(c, cut); err != nil {
			return err
		}
		drop, err := e.rollUp(ctx, m, &next, parts, snap)
		if err != nil {
			return err
		}
		res.ClosedDays = next.LedgerDays[len(m.LedgerDays):]
		data, err := encodeManifest(&next)
		if err != nil {
			return err
		}
		own := storedBy(m, &next, parts, snap)
		if err := e.commit(ctx, base, data, own); err != nil {
			if errors.Is(err, ErrConcurrentExport) {
				removed, rerr := e.removeOwn(ctx, own)
				res.Removed = append(res.Removed, removed...)
				if rerr != nil {
					err = fmt.Errorf("%w; removing what this run stored: %v", err, rerr)
				}
			}
			return err
		}
		// Committed: snapshots past retention go now; if this is cut short,
		// the next run's sweep removes what the manifest no longer lists.
		for _, s := range drop.snapshots {
			if err := e.delete(ctx, s.Key); err != nil {
				return fmt.Errorf("export: delete old grants snapshot %s: %w", s.Key, err)
			}
			res.Removed = append(res.Removed, s.Key)
		}
		if drop.days {
			removed, err := e.sweep(ctx, &next, storedManifest{data: data, exists: true}, cut, nil)
			res.Removed = append(res.Removed, removed...)
			return err
		}
		return nil
	})
	res.Elapsed = time.Since(start)
	if err != nil {
		return res, err
	}
	if l := e.opts.Logger; l != nil {
		l.Info("export done", "from_seq", res.FromSeq, "to_seq", res.ToSeq, "entries", res.Entries,
			"parts", len(res.Parts), "closed_days", len(res.ClosedDays), "removed", len(res.Removed), "elapsed", res.Elapsed)
	}
	return res, nil
}

// sweep deletes what an interrupted run left beyond the watermark: parts and
// grants snapshots past it, snapshots retention dropped, day lists the
// manifest does not name (written before a commit that did not happen, or
// of snapshot days retention took out), and the blob driver's temporary
// files (of parts, snapshots, lists and the manifest). Nothing the manifest
// covers is touched (the lists it names, what they list), and no object of
// another name is.
//
// It lists first and deletes only if the manifest is still base, the one m
// was read from: what lies past an old watermark may be what another
// exporter committed since (ErrConcurrentExport, nothing deleted). check,
// when set, gets the lists m names that the listing found, before anything
// is deleted; its error ends the sweep.
func (e *Exporter) sweep(ctx context.Context, m *Manifest, base storedManifest, cut uint64, check func(present map[string]bool) error) ([]string, error) {
	c := committedBy(m)
	var orphans []string
	present := map[string]bool{}
	listPrefix := func(prefix string) error {
		it := e.dst.List(&blob.ListOptions{Prefix: prefix})
		for {
			obj, err := it.Next(ctx)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("export: list %s: %w", prefix, err)
			}
			switch {
			case obj.IsDir:
			case c.lists[obj.Key]:
				present[obj.Key] = true
			case c.orphan(obj.Key):
				orphans = append(orphans, obj.Key)
			}
		}
	}
	ledger, err := e.ledgerPrefixesToSweep(ctx, m)
	if err != nil {
		return nil, err
	}
	grants := grantsPrefixesToSweep(m, cut, e.opts.KeepGrantSnapshots)
	// The manifest's temporary files sit at the root, next to it.
	for _, prefix := range slices.Concat(ledger, grants, []string{listsPrefix, ManifestKey + "."}) {
		if err := listPrefix(prefix); err != nil {
			return nil, err
		}
	}
	if check != nil {
		if err := check(present); err != nil {
			return nil, err
		}
	}
	return e.deleteFenced(ctx, base, orphans, "delete what an interrupted run left past the watermark")
}

// deleteFenced deletes keys once the manifest is still base (fence), and
// returns those it removed.
func (e *Exporter) deleteFenced(ctx context.Context, base storedManifest, keys []string, doing string) ([]string, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	if err := e.fence(ctx, base, doing); err != nil {
		return nil, err
	}
	var removed []string
	for _, key := range keys {
		if err := e.delete(ctx, key); err != nil {
			return removed, fmt.Errorf("export: %s: delete %s: %w", doing, key, err)
		}
		removed = append(removed, key)
	}
	return removed, nil
}

// fence refuses (ErrConcurrentExport) unless the manifest is still base,
// byte for byte: otherwise another exporter committed since this run read
// it. It narrows the window to what follows the read (the write or the
// deletions it guards, a round trip or a few) and does not close it: blob
// stores have no portable lock, and gocloud.dev/blob (v0.47) has one write
// condition, IfNotExist, which could make only a destination's first
// manifest exclusive, not the replacement of one (and fileblob's is a check
// then a rename, exclusive within one process only). A true compare-and-swap
// (S3's If-Match, GCS's generation match) is reachable only through each
// driver's own types in WriterOptions.BeforeWrite.
func (e *Exporter) fence(ctx context.Context, base storedManifest, before string) error {
	now, err := readStored(ctx, e.dst)
	if err != nil {
		return fmt.Errorf("export: re-read the manifest to %s: %w", before, err)
	}
	if !now.same(base) {
		return fmt.Errorf("%w: the manifest changed since this run read it (another exporter committed); refusing to %s",
			ErrConcurrentExport, before)
	}
	return nil
}

// ownObject is an object a run stored and its manifest names.
type ownObject struct {
	key  string
	date string
	size int64 // -1 for a list (named for its content)
	kind objectKind
}

type objectKind int

const (
	ledgerPart objectKind = iota
	grantSnapshot
	dayList
)

// storedBy lists what the run stored for next: its parts, its snapshot and
// the day lists next names that m does not.
func storedBy(m, next *Manifest, parts []Part, snap Snapshot) []ownObject {
	var own []ownObject
	for _, p := range parts {
		own = append(own, ownObject{key: p.Key, date: p.Date, size: p.Bytes, kind: ledgerPart})
	}
	own = append(own, ownObject{key: snap.Key, date: snap.Date, size: snap.Bytes, kind: grantSnapshot})
	had := committedBy(m).lists
	for _, d := range slices.Concat(next.LedgerDays, next.GrantSnapshotDays) {
		if !had[d.Key] {
			own = append(own, ownObject{key: d.Key, date: d.Date, size: -1, kind: dayList})
		}
	}
	return own
}

// commit replaces the manifest with data, once every object the run stored
// is there as it was written (another exporter's sweep may have removed
// one: a manifest naming it would be refused by every reader) and the
// manifest is still base. Both are checked without reading an object: a
// stat per object stored, a read of the manifest.
func (e *Exporter) commit(ctx context.Context, base storedManifest, data []byte, own []ownObject) error {
	for _, o := range own {
		attrs, err := e.dst.Attributes(ctx, o.key)
		switch {
		case gcerrors.Code(err) == gcerrors.NotFound:
			return fmt.Errorf("%w: %s, stored by this run, is gone (another exporter's sweep removed it); refusing to commit",
				ErrConcurrentExport, o.key)
		case err != nil:
			return fmt.Errorf("export: look for %s before the commit: %w", o.key, err)
		case o.size >= 0 && attrs.Size != o.size:
			return fmt.Errorf("%w: %s, stored by this run, is %d bytes, not the %d it wrote (another exporter wrote it again); refusing to commit",
				ErrConcurrentExport, o.key, attrs.Size, o.size)
		}
	}
	if err := e.fence(ctx, base, "commit"); err != nil {
		return err
	}
	return storeManifest(ctx, e.dst, data)
}

// removeOwn deletes, once the run was refused its commit, what it stored
// that the manifest committed now (another exporter's) does not name. Left
// for the next run's sweep, its parts could lie inside that manifest's
// watermark with other boundaries than the committed ones, where no sweep
// looks (it removes only what lies past the watermark), and a loader
// reading the folders would read their rows twice. What the committed
// manifest names (the same part, snapshot or list, written by both) stays,
// and nothing is deleted unless the manifest is still the one read here.
func (e *Exporter) removeOwn(ctx context.Context, own []ownObject) ([]string, error) {
	cur, stored, err := readManifestStored(ctx, e.dst)
	if err != nil {
		return nil, err
	}
	named := committedBy(cur).lists
	for _, p := range cur.LedgerParts {
		named[p.Key] = true
	}
	for _, s := range cur.GrantSnapshots {
		named[s.Key] = true
	}
	// A part or snapshot of a day closed in cur is named in that day's list.
	listed := map[string]bool{}
	readDay := func(days []Day, date string, parts bool) error {
		i := slices.IndexFunc(days, func(d Day) bool { return d.Date == date })
		if i < 0 || listed[days[i].Key] {
			return nil
		}
		listed[days[i].Key] = true
		list, err := readDayList(ctx, e.dst, days[i], parts)
		if err != nil {
			return err
		}
		for _, p := range list.LedgerParts {
			named[p.Key] = true
		}
		for _, s := range list.GrantSnapshots {
			named[s.Key] = true
		}
		return nil
	}
	var doomed []string
	for _, o := range own {
		switch o.kind {
		case ledgerPart:
			err = readDay(cur.LedgerDays, o.date, true)
		case grantSnapshot:
			err = readDay(cur.GrantSnapshotDays, o.date, false)
		}
		if err != nil {
			return nil, err
		}
		if !named[o.key] {
			doomed = append(doomed, o.key)
		}
	}
	return e.deleteFenced(ctx, stored, doomed, "remove what this run stored")
}

// ledgerPrefixesToSweep are the ledger's date folders an uncommitted part
// can be in: those from the date of the last committed part on, since an
// uncommitted part holds entries past the watermark and log time never
// goes backwards. Listing every part of every day on every run would cost
// a destination exported every minute half a million objects a year,
// listed every minute.
func (e *Exporter) ledgerPrefixesToSweep(ctx context.Context, m *Manifest) ([]string, error) {
	from := ""
	switch {
	case len(m.LedgerParts) > 0:
		from = m.LedgerParts[len(m.LedgerParts)-1].Date
	case len(m.LedgerDays) > 0:
		from = m.LedgerDays[len(m.LedgerDays)-1].Date
	}
	if from == "" {
		return []string{ledgerPrefix}, nil
	}
	var prefixes []string
	it := e.dst.List(&blob.ListOptions{Prefix: ledgerPrefix, Delimiter: "/"})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			return prefixes, nil
		}
		if err != nil {
			return nil, fmt.Errorf("export: list %s: %w", ledgerPrefix, err)
		}
		switch date, ok := strings.CutPrefix(strings.TrimSuffix(obj.Key, "/"), ledgerPrefix+"date="); {
		case !obj.IsDir:
			prefixes = append(prefixes, obj.Key) // a file beside the date folders: looked at alone
		case !ok || date >= from:
			prefixes = append(prefixes, obj.Key)
		}
	}
}

// maxSweepPrefixes bounds the prefixes, each a list request, the sweep
// lists snapshots under.
const maxSweepPrefixes = 10

// grantsPrefixesToSweep are the prefixes under grants/ an uncommitted
// snapshot can be in, for a run whose cut is cut. Without a retention,
// snapshots of closed days are in day lists and never deleted: a snapshot
// past the watermark, or one of the open day the manifest does not name,
// has a seq above the last closed snapshot day's, so the seqs from there to
// the cut are listed, by prefixes of their zero-padded names. Listing every
// snapshot on every run would cost a destination exported every minute
// half a million objects a year, listed every minute. Under a retention
// (or before any snapshot day), grants/ holds about the snapshots the
// manifest names, and it is listed whole: a snapshot the retention dropped
// whose deletion was cut short lies below every kept one.
func grantsPrefixesToSweep(m *Manifest, cut uint64, keep int) []string {
	if keep > 0 || len(m.GrantSnapshotDays) == 0 {
		return []string{grantsPrefix}
	}
	last := m.GrantSnapshotDays[len(m.GrantSnapshotDays)-1]
	return seqPrefixes(grantsPrefix+"snapshot=", last.FirstSeq, last.LastSeq+1, cut)
}

// seqPrefixes returns prefix followed by the leading digits of 20-digit
// zero-padded seqs, covering every seq of [from, to] once (to < from is
// taken as from), with at most maxSweepPrefixes prefixes: the block of from
// at the coarsest digit that does not start before floor, the blocks after
// it up to that of to (those above to hold seqs not written yet). When that
// takes more than maxSweepPrefixes prefixes (a long range after a short
// day), the block of from is taken coarser, reaching below floor.
func seqPrefixes(prefix string, floor, from, to uint64) []string {
	to = max(to, from)
	a, b := fmt.Sprintf("%020d", from), fmt.Sprintf("%020d", to)
	j := 0 // a[:j] == b[:j]
	for j < len(a) && a[j] == b[j] {
		j++
	}
	count := func(k int) int { // prefixes with from's block at k digits
		n := 1
		for l := k - 1; l > j; l-- {
			n += int('9' - a[l])
		}
		if j < len(a) {
			n += int(b[j] - a[j])
		}
		return n
	}
	k := 0
	for k < len(a) && blockStart(a[:k]) < floor {
		k++
	}
	for k > j+1 && count(k) > maxSweepPrefixes {
		k--
	}
	if k <= j {
		return []string{prefix + a[:k]}
	}
	out := []string{prefix + a[:k]}
	for l := k - 1; l > j; l-- {
		for d := a[l] + 1; d <= '9'; d++ {
			out = append(out, prefix+a[:l]+string(d))
		}
	}
	for d := a[j] + 1; d <= b[j]; d++ {
		out = append(out, prefix+a[:j]+string(d))
	}
	return out
}

// blockStart is the least 20-digit seq whose name starts with digits.
func blockStart(digits string) uint64 {
	v, _ := strconv.ParseUint(digits+strings.Repeat("0", 20-len(digits)), 10, 64)
	return v
}

// delete deletes key (already gone is fine) and, in a directory
// destination, the folders it leaves empty: retention deletes a snapshot
// (in its own folder) every run, and a folder left behind for each would
// pile up forever. A folder that cannot be removed is logged, not failed
// on: the object is gone, and the export does not depend on its folder.
func (e *Exporter) delete(ctx context.Context, key string) error {
	if err := e.dst.Delete(ctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return err
	}
	if !e.dirDest {
		return nil
	}
	if err := removeEmptyFolders(ctx, e.dst, key); err != nil && e.opts.Logger != nil {
		e.opts.Logger.Warn("export: a folder left empty stays", "deleted", key, "err", err)
	}
	return nil
}

// orphan says whether key is an object of ours that the manifest does not
// cover: a part or snapshot past the watermark, a snapshot dropped by
// retention, a day list it does not name, or a blob driver's temporary file
// of any of them or of the manifest.
func (c *committed) orphan(key string) bool {
	if first, last, ok := parsePartKey(key); ok {
		return last > c.watermark || first > c.watermark
	}
	if seq, ok := parseGrantsKey(key); ok {
		return !c.coversSnapshot(key, seq)
	}
	if isListKey(key) {
		return !c.lists[key]
	}
	// fileblob's temporary files of a killed writer are never committed.
	// Only names of ours match: other objects are not ours to delete.
	name, ok := tempTarget(key)
	if !ok {
		return false
	}
	_, _, isPart := parsePartKey(name)
	_, isSnapshot := parseGrantsKey(name)
	return name == ManifestKey || isPart || isSnapshot || isListKey(name)
}

// tempTarget returns the name a temporary file fileblob writes is renamed
// to: key is name + "." + hex digits + ".tmp".
func tempTarget(key string) (name string, ok bool) {
	rest, ok := strings.CutSuffix(key, ".tmp")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 || !isLowerHex(rest[i+1:]) {
		return "", false
	}
	return rest[:i], true
}

// partWriter streams one ledger part into a local temporary file.
type partWriter struct {
	f     *os.File
	buf   *bufio.Writer
	fw    *fileWriter
	date  string
	first uint64
	last  uint64
}

// nonCloser hides Close from the Parquet writer, which would otherwise close
// the file before it is stored.
type nonCloser struct{ io.Writer }

func (e *Exporter) startPart(date string, first uint64, meta map[string]string) (*partWriter, error) {
	f, err := os.CreateTemp(e.opts.TempDir, "creditd-export-*.parquet")
	if err != nil {
		return nil, fmt.Errorf("export: temporary file: %w", err)
	}
	buf := bufio.NewWriterSize(f, 1<<20)
	fw, err := newFileWriter(nonCloser{buf}, ledgerSchema, LedgerColumns, e.opts.Allocator, e.opts.RowGroupRows, meta)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &partWriter{f: f, buf: buf, fw: fw, date: date, first: first}, nil
}

func (p *partWriter) discard() {
	p.f.Close()
	os.Remove(p.f.Name())
}

// store finishes the part's file and uploads it under its final name.
func (e *Exporter) storePart(ctx context.Context, p *partWriter) (Part, error) {
	defer p.discard()
	if err := p.fw.close(); err != nil {
		return Part{}, err
	}
	key := partKey(p.date, p.first, p.last)
	size, err := e.upload(ctx, key, p.f, p.buf)
	if err != nil {
		return Part{}, err
	}
	if err := e.after(key); err != nil {
		return Part{}, err
	}
	return Part{Key: key, Date: p.date, FirstSeq: p.first, LastSeq: p.last, Rows: int64(p.fw.rows), Bytes: size}, nil
}

func (e *Exporter) upload(ctx context.Context, key string, f *os.File, buf *bufio.Writer) (int64, error) {
	if err := buf.Flush(); err != nil {
		return 0, fmt.Errorf("export: write %s: %w", key, err)
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, fmt.Errorf("export: write %s: %w", key, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("export: write %s: %w", key, err)
	}
	// blob writes are atomic: a cancelled or failed upload leaves nothing
	// under key (fileblob renames its temporary file only on success).
	if err := e.dst.Upload(ctx, key, f, &blob.WriterOptions{ContentType: "application/vnd.apache.parquet"}); err != nil {
		return 0, fmt.Errorf("export: store %s: %w", key, err)
	}
	return size, nil
}

func (e *Exporter) after(key string) error {
	if e.opts.AfterObject == nil {
		return nil
	}
	if err := e.opts.AfterObject(key); err != nil {
		return fmt.Errorf("export: after storing %s: %w", key, err)
	}
	return nil
}

// writeLedger writes entries from..to as parts: a new part starts at every
// change of UTC date and after FileRows rows, so part boundaries depend only
// on the ledger and the range.
func (e *Exporter) writeLedger(ctx context.Context, c Cut, from, to uint64) ([]Part, error) {
	var (
		parts  []Part
		part   *partWriter
		lb     = newLedgerBuilder(e.opts.Allocator)
		look   = newLookups(c)
		expect = from
		prog   = NewProgress(e.opts.Progress, "export")
		// lastTime asserts what closing a day relies on: log time never
		// goes backwards, so no entry falls into a day a later one closed.
		lastTime fsm.Timestamp
	)
	prog.setTotal(int64(to - from + 1))
	lb.b.Reserve(min(e.opts.BatchRows, int(to-from+1)))
	defer lb.release()
	defer func() {
		if part != nil {
			part.discard()
		}
	}()
	flush := func() error {
		if lb.rows() == 0 {
			return nil
		}
		return part.fw.write(lb.batch(e.opts.BatchRows))
	}
	finish := func() error {
		if err := flush(); err != nil {
			return err
		}
		p, err := e.storePart(ctx, part)
		part = nil
		if err != nil {
			return err
		}
		parts = append(parts, p)
		return nil
	}
	err := c.ScanLedger(from, to, func(le *fsm.LedgerEntry) error {
		if le.Seq != expect {
			return fmt.Errorf("export: ledger sequence %d follows %d: a gap or reordering in the ledger", le.Seq, expect-1)
		}
		expect++
		if le.Time < lastTime {
			return fmt.Errorf("entry %d: log time goes backwards", le.Seq)
		}
		lastTime = le.Time
		date := dateOf(le.Time)
		if part != nil && (part.date != date || part.fw.rows+lb.rows() >= e.opts.FileRows) {
			if err := finish(); err != nil {
				return err
			}
		}
		if part == nil {
			if err := ctx.Err(); err != nil {
				return err
			}
			p, err := e.startPart(date, le.Seq, map[string]string{"creditd.format": "1", "creditd.first_seq": fmt.Sprint(le.Seq)})
			if err != nil {
				return err
			}
			part = p
		}
		scale, err := look.scale(le.CreditTypeID)
		if err != nil {
			return fmt.Errorf("export: credit type %q of entry %d: %w", le.CreditTypeID, le.Seq, err)
		}
		var cat fsm.GrantCategory
		if le.GrantID != "" {
			g, err := look.grant(le.GrantID)
			if err != nil {
				return fmt.Errorf("export: grant %q of entry %d: %w", le.GrantID, le.Seq, err)
			}
			cat = g.category
		}
		if err := lb.add(le, scale, cat); err != nil {
			return err
		}
		part.last = le.Seq
		if lb.rows() >= e.opts.BatchRows {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := flush(); err != nil {
				return err
			}
		}
		prog.add(1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("export ledger %d..%d: %w", from, to, err)
	}
	if expect != to+1 {
		return nil, fmt.Errorf("export ledger %d..%d: the ledger ends at %d", from, to, expect-1)
	}
	if part != nil {
		if err := finish(); err != nil {
			return nil, fmt.Errorf("export ledger %d..%d: %w", from, to, err)
		}
	}
	prog.done()
	return parts, nil
}

// writeGrants writes every grant of the cut, in id order, as one snapshot
// at seq, an entry of the given day.
func (e *Exporter) writeGrants(ctx context.Context, c Cut, seq uint64, date string) (Snapshot, error) {
	key := grantsKey(seq)
	f, err := os.CreateTemp(e.opts.TempDir, "creditd-grants-*.parquet")
	if err != nil {
		return Snapshot{}, fmt.Errorf("export: temporary file: %w", err)
	}
	defer func() { f.Close(); os.Remove(f.Name()) }()
	buf := bufio.NewWriterSize(f, 1<<20)
	fw, err := newFileWriter(nonCloser{buf}, grantSchema, GrantColumns, e.opts.Allocator, e.opts.RowGroupRows,
		map[string]string{"creditd.format": "1", "creditd.snapshot_seq": fmt.Sprint(seq)})
	if err != nil {
		return Snapshot{}, err
	}
	gb := newGrantBuilder(e.opts.Allocator)
	defer gb.release()
	look := newLookups(c)
	var rows int64
	err = c.ScanGrants(func(g *fsm.Grant) error {
		scale, err := look.scale(g.CreditTypeID)
		if err != nil {
			return fmt.Errorf("credit type %q of grant %q: %w", g.CreditTypeID, g.ID, err)
		}
		if err := gb.add(g, scale, seq); err != nil {
			return err
		}
		rows++
		if gb.rows() >= e.opts.BatchRows {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fw.write(gb.batch())
		}
		return nil
	})
	if err == nil && gb.rows() > 0 {
		err = fw.write(gb.batch())
	}
	if err == nil {
		err = fw.close()
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("export grants at %d: %w", seq, err)
	}
	size, err := e.upload(ctx, key, f, buf)
	if err != nil {
		return Snapshot{}, err
	}
	if err := e.after(key); err != nil {
		return Snapshot{}, err
	}
	return Snapshot{Key: key, Date: date, Seq: seq, Rows: rows, Bytes: size}, nil
}

// Every returns a loop that runs an export every interval until its context
// is cancelled: the function node.RunOnLeader runs while this node leads.
// A failed run is logged and retried at the next tick; a run is never
// started while another is in progress, and a tick missed while a run went
// on is dropped. An interval of 0 or less is taken as DefaultEvery.
//
// A run refused because another exporter committed meanwhile
// (ErrConcurrentExport) is tried again soon, not at the next tick (up to
// 168 h away): the next run goes on from the other's manifest. The tries
// wait concurrentRetryFirst, then twice as long each, at most
// concurrentRetryMax, concurrentRetries times at most (5+10+20+40 s), and
// never past the next tick; then the schedule resumes. A cancelled context
// (leadership lost, shutdown) ends every wait at once.
func (e *Exporter) Every(interval time.Duration) func(ctx context.Context) {
	if interval <= 0 {
		interval = DefaultEvery
	}
	wait := e.wait
	if wait == nil {
		wait = sleep
	}
	return func(ctx context.Context) {
		due := time.Now().Add(interval)
		tries := 0
		for {
			_, err := e.Run(ctx)
			if err != nil && ctx.Err() == nil && e.opts.Logger != nil {
				e.opts.Logger.Error("scheduled export failed", "err", err)
			}
			d, retry := time.Until(due), false
			if errors.Is(err, ErrConcurrentExport) && tries < concurrentRetries {
				if b := concurrentRetryWait(tries); b < d {
					d, retry = b, true
				}
			}
			if retry {
				tries++
				if l := e.opts.Logger; l != nil && ctx.Err() == nil {
					l.Info("scheduled export: another exporter committed; trying again soon", "in", d, "try", tries, "of", concurrentRetries)
				}
			} else {
				tries = 0
			}
			if !wait(ctx, max(d, 0)) {
				return
			}
			if now := time.Now(); !retry && !due.After(now) {
				due = due.Add((now.Sub(due)/interval + 1) * interval)
			}
		}
	}
}

// Tries of a scheduled run refused with ErrConcurrentExport (Every).
const (
	concurrentRetries    = 4
	concurrentRetryFirst = 5 * time.Second
	concurrentRetryMax   = time.Minute
)

// concurrentRetryWait is the wait before try n+1 after a refusal.
func concurrentRetryWait(n int) time.Duration {
	d := concurrentRetryFirst
	for range n {
		d = min(2*d, concurrentRetryMax)
	}
	return d
}

// sleep waits d, and says false at once if ctx is done first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// DefaultEvery is the interval of scheduled exports when none is given.
const DefaultEvery = time.Hour

// ErrForeignDestination is returned when the destination's watermark entry
// is not the replica's entry of that sequence: the destination holds another
// ledger's export.
var ErrForeignDestination = errors.New("export: the destination holds another ledger")

func digestAt(c Cut, seq uint64) (string, error) {
	if seq == 0 {
		return "", nil
	}
	var d string
	err := c.ScanLedger(seq, seq, func(e *fsm.LedgerEntry) error {
		d = entryDigest(e)
		return nil
	})
	if err == nil && d == "" {
		err = fmt.Errorf("ledger entry %d not found", seq)
	}
	if err != nil {
		return "", fmt.Errorf("export: fingerprint entry %d: %w", seq, err)
	}
	return d, nil
}

// checkDigest refuses a destination whose watermark entry differs from the
// replica's (manifests without a digest are trusted).
func checkDigest(c Cut, m *Manifest) error {
	if m.WatermarkDigest == "" || m.WatermarkSeq > c.LastSeq() {
		return nil
	}
	d, err := digestAt(c, m.WatermarkSeq)
	if err != nil {
		return err
	}
	if d != m.WatermarkDigest {
		return fmt.Errorf("%w: its entry %d differs from this replica's", ErrForeignDestination, m.WatermarkSeq)
	}
	return nil
}
