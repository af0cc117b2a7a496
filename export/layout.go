package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/creditd/creditd/fsm"
)

// Object names in the destination. Sequences are zero-padded to 20 digits
// (the width of a uint64) so that names sort in sequence order.
const (
	ManifestKey  = "manifest.json"
	ledgerPrefix = "ledger/"
	grantsPrefix = "grants/"
	grantsFile   = "grants.parquet"
	// Day lists live under a hidden root folder ("_" is Hadoop's mark of
	// a file that is not data), never in ledger/ or grants/: warehouses
	// that load those folders whole (Hive, Athena, Spark, Redshift
	// Spectrum) read every other file there as a Parquet file, and a
	// grants/date=… folder beside grants/snapshot=… would give the table
	// two partition keys.
	listsPrefix       = "_lists/"
	ledgerListsPrefix = listsPrefix + "ledger/" // _lists/ledger/date=D-<sha16>.json: a closed day's parts
	grantsListsPrefix = listsPrefix + "grants/" // _lists/grants/date=D-<sha16>.json: a closed day's grants snapshots
	// listHashChars of a list's SHA-256 (hex) are in its name: a list is
	// named for its content, so no write ever replaces a list a manifest
	// names with other bytes (not even that of a second exporter writing
	// the same day's list with other part sizes).
	listHashChars = 16
	// formatVersion is the manifest format this creditd writes; it reads
	// format 1 (every part and snapshot in the manifest) too.
	formatVersion = 2
	// maxManifestBytes bounds what a reader reads of the manifest, and so
	// what a run may commit. The manifest grows by a summary per closed UTC
	// day (≈ 325 bytes, twice that when every grants snapshot is kept):
	// centuries to the limit. Besides, it holds the open day's parts and
	// snapshots (≈ 420 bytes a run): about 160,000 runs in one day fill it,
	// and runs fail until the day closes.
	maxManifestBytes = 64 << 20
	// maxListBytes bounds a day list. The run that closes a day lists the
	// parts the manifest held (up to maxManifestBytes of them) and its own
	// of that day: twice the manifest's bound leaves room for those, so a
	// day that filled the manifest is never refused its list, which would
	// stop the destination for good.
	maxListBytes = 2 * maxManifestBytes
	// MaxKeepGrantSnapshots bounds Options.KeepGrantSnapshots: snapshots
	// under a retention stay in the manifest itself (≈ 170 bytes each).
	MaxKeepGrantSnapshots = 100_000
)

func partKey(date string, first, last uint64) string {
	return fmt.Sprintf("%sdate=%s/part-%020d-%020d.parquet", ledgerPrefix, date, first, last)
}

// parsePartKey returns the sequence range of a ledger part's key.
func parsePartKey(key string) (first, last uint64, ok bool) {
	rest, found := strings.CutPrefix(key, ledgerPrefix+"date=")
	if !found {
		return 0, 0, false
	}
	_, name, found := strings.Cut(rest, "/part-")
	if !found {
		return 0, 0, false
	}
	name, found = strings.CutSuffix(name, ".parquet")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(name, "-")
	if !found {
		return 0, 0, false
	}
	first, err1 := strconv.ParseUint(a, 10, 64)
	last, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil || first > last {
		return 0, 0, false
	}
	return first, last, true
}

func grantsKey(seq uint64) string {
	return fmt.Sprintf("%ssnapshot=%020d/%s", grantsPrefix, seq, grantsFile)
}

func parseGrantsKey(key string) (seq uint64, ok bool) {
	rest, found := strings.CutPrefix(key, grantsPrefix+"snapshot=")
	if !found {
		return 0, false
	}
	num, file, found := strings.Cut(rest, "/")
	if !found || file != grantsFile {
		return 0, false
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	return seq, err == nil
}

// ledgerListKey and grantsListKey name a closed day's list by its date
// and content: sha256 is the hex SHA-256 of its bytes.
func ledgerListKey(date, sha256 string) string { return listKey(ledgerListsPrefix, date, sha256) }
func grantsListKey(date, sha256 string) string { return listKey(grantsListsPrefix, date, sha256) }

func listKey(prefix, date, sha256 string) string {
	return prefix + "date=" + date + "-" + sha256[:min(len(sha256), listHashChars)] + ".json"
}

// isListKey says whether key names a day list:
// _lists/ledger/date=D-<sha16>.json or _lists/grants/date=D-<sha16>.json,
// D a date and sha16 listHashChars lowercase hex digits.
func isListKey(key string) bool {
	for _, prefix := range []string{ledgerListsPrefix, grantsListsPrefix} {
		rest, ok := strings.CutPrefix(key, prefix+"date=")
		if !ok {
			continue
		}
		rest, ok = strings.CutSuffix(rest, ".json")
		if !ok || len(rest) != len(time.DateOnly)+1+listHashChars {
			return false
		}
		date, sum := rest[:len(time.DateOnly)], rest[len(time.DateOnly):]
		sum, ok = strings.CutPrefix(sum, "-")
		return ok && validDate(date) && isLowerHex(sum)
	}
	return false
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return s != ""
}

func validDate(date string) bool {
	_, err := time.Parse(time.DateOnly, date)
	return err == nil
}

// Manifest is the commit record of a destination: the files it lists, in
// itself and in the day lists it names, are complete and, together, hold
// every ledger entry up to WatermarkSeq exactly once. Loaders that want
// only committed data read the files listed there (EachLedgerPart,
// EachGrantSnapshot); files beyond the watermark belong to a run in
// progress (or interrupted, to be replaced by the next run).
//
// A UTC day is closed once the ledger has an entry of a later day: no entry
// can be added to it (log time never goes backwards). The run that sees a
// day closed moves its parts out of the manifest into an immutable list,
// _lists/ledger/date=D-<sha16>.json (named for its content), written
// before the manifest that names it, and keeps one summary (Day) of it
// here. So the manifest grows by a summary per day, not by a part per run.
type Manifest struct {
	// Format is 2 (this layout) or 1 (read only: every part and snapshot
	// listed here, none in day lists).
	Format int `json:"format"`
	// WatermarkSeq is the last ledger sequence exported; the next run starts
	// after it.
	WatermarkSeq uint64 `json:"watermark_seq"`
	// WatermarkDigest fingerprints the ledger entry at the watermark, so
	// that a run from a replica of another cluster (or of a state restored
	// from an older backup that diverged) is refused instead of appended.
	WatermarkDigest string `json:"watermark_digest,omitempty"`
	// AppliedIndex and LogTime describe the cut of the last run: the raft
	// index and log time of the replica's state it read.
	AppliedIndex uint64 `json:"applied_index"`
	LogTime      string `json:"log_time,omitempty"`
	// LedgerDays sums up the closed days, in date order; each day's parts
	// are in its list (Day.Key).
	LedgerDays []Day `json:"ledger_days"`
	// LedgerParts lists, in sequence order, the parts after the closed
	// days: those of the day still open.
	LedgerParts []Part `json:"ledger_parts"`
	// GrantSnapshotDays sums up the grants snapshots of closed days, each
	// day's in its list, when every snapshot is kept (no retention).
	GrantSnapshotDays []Day `json:"grant_snapshot_days"`
	// GrantSnapshots lists the other snapshots, in sequence order.
	GrantSnapshots []Snapshot `json:"grant_snapshots"`
}

// Part is one committed ledger file.
type Part struct {
	Key      string `json:"key"`
	Date     string `json:"date"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Rows     int64  `json:"rows"`
	Bytes    int64  `json:"bytes"`
}

// Snapshot is one committed grants file. Date is the UTC day of its ledger
// entry Seq (empty in format 1, filled in when read).
type Snapshot struct {
	Key   string `json:"key"`
	Date  string `json:"date,omitempty"`
	Seq   uint64 `json:"seq"`
	Rows  int64  `json:"rows"`
	Bytes int64  `json:"bytes"`
}

// Day sums up a closed day's list of ledger parts (or of grants
// snapshots): the list is Key, and its bytes hash to SHA256, so a reader
// refuses a list damaged or replaced after it was committed. Key holds the
// date and the first listHashChars of SHA256.
type Day struct {
	Date string `json:"date"`
	// FirstSeq and LastSeq bound the day's entries (its snapshots' seqs).
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Rows     int64  `json:"rows"`
	Bytes    int64  `json:"bytes"`
	Files    int    `json:"files"` // parts (snapshots) in the list
	Key      string `json:"key"`
	SHA256   string `json:"sha256"`
}

// DayList is the object a closed day's parts or grants snapshots are listed
// in; it is written once and never changed.
type DayList struct {
	Format         int        `json:"format"`
	Date           string     `json:"date"`
	LedgerParts    []Part     `json:"ledger_parts,omitempty"`
	GrantSnapshots []Snapshot `json:"grant_snapshots,omitempty"`
}

// ErrDamagedList is returned by readers of a day list that is missing, too
// large, or not the one the manifest committed (its digest or contents
// differ from the manifest's summary of it).
var ErrDamagedList = errors.New("export: damaged day list")

// ReadManifest reads a destination's manifest as a writer sees it: a
// destination without one (never exported to) yields an empty manifest at
// watermark 0. Readers of an export use readExportManifest.
func ReadManifest(ctx context.Context, b *blob.Bucket) (*Manifest, error) {
	m, _, err := readManifestStored(ctx, b)
	return m, err
}

// storedManifest is a manifest as stored, byte for byte, or its absence: a
// run commits only over the one it started from.
type storedManifest struct {
	data   []byte
	exists bool
}

func (s storedManifest) same(o storedManifest) bool {
	return s.exists == o.exists && bytes.Equal(s.data, o.data)
}

// readStored reads the manifest's bytes, or finds it absent.
func readStored(ctx context.Context, b *blob.Bucket) (storedManifest, error) {
	data, err := readObject(ctx, b, ManifestKey, maxManifestBytes)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return storedManifest{}, nil
	}
	if err != nil {
		return storedManifest{}, fmt.Errorf("read manifest: %w", err)
	}
	return storedManifest{data: data, exists: true}, nil
}

// readManifestStored is ReadManifest that also returns the bytes it read.
func readManifestStored(ctx context.Context, b *blob.Bucket) (*Manifest, storedManifest, error) {
	s, err := readStored(ctx, b)
	if err != nil {
		return nil, s, err
	}
	if !s.exists {
		return &Manifest{Format: formatVersion}, s, nil
	}
	m, err := decodeManifest(s.data)
	return m, s, err
}

// readExportManifest reads the manifest of an export; a destination without
// one holds no export, and yields ErrNoExport.
func readExportManifest(ctx context.Context, b *blob.Bucket) (*Manifest, error) {
	s, err := readStored(ctx, b)
	if err != nil {
		return nil, err
	}
	if !s.exists {
		return nil, fmt.Errorf("%w: the destination has no %s", ErrNoExport, ManifestKey)
	}
	return decodeManifest(s.data)
}

// decodeManifest decodes and checks a manifest's bytes.
func decodeManifest(data []byte) (*Manifest, error) {
	var m Manifest
	err := json.Unmarshal(data, &m)
	if err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	switch m.Format {
	case 1:
		err = m.fromFormat1()
	case formatVersion:
	default:
		err = fmt.Errorf("format %d: this creditd reads formats 1 and %d", m.Format, formatVersion)
	}
	if err == nil {
		err = m.check()
	}
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &m, nil
}

// readObject reads key whole, refusing more than limit bytes.
func readObject(ctx context.Context, b *blob.Bucket, key string, limit int) ([]byte, error) {
	r, err := b.NewReader(ctx, key, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > limit {
		return nil, fmt.Errorf("%s is larger than the %d bytes a reader accepts", key, limit)
	}
	return data, nil
}

// fromFormat1 gives a format 1 manifest's snapshots the dates format 2
// records: the day of the part that holds each one's ledger entry.
func (m *Manifest) fromFormat1() error {
	if len(m.LedgerDays) > 0 || len(m.GrantSnapshotDays) > 0 {
		return errors.New("format 1 with day lists")
	}
	if _, err := checkParts(m.LedgerParts, 1, ""); err != nil {
		return err
	}
	for i := range m.GrantSnapshots {
		s := &m.GrantSnapshots[i]
		date, ok := m.dateAtSeq(s.Seq)
		if !ok {
			return fmt.Errorf("grants snapshot %s at %d: no ledger part holds that entry", s.Key, s.Seq)
		}
		s.Date = date
	}
	return nil
}

// dateAtSeq is the UTC day of ledger entry seq: that of the closed day or
// the part holding it. The days and parts must be in order (checked).
func (m *Manifest) dateAtSeq(seq uint64) (string, bool) {
	if i, ok := slices.BinarySearchFunc(m.LedgerDays, seq, func(d Day, s uint64) int { return cmpRange(d.FirstSeq, d.LastSeq, s) }); ok {
		return m.LedgerDays[i].Date, true
	}
	if i, ok := slices.BinarySearchFunc(m.LedgerParts, seq, func(p Part, s uint64) int { return cmpRange(p.FirstSeq, p.LastSeq, s) }); ok {
		return m.LedgerParts[i].Date, true
	}
	return "", false
}

// cmpRange places the range [first, last] before (-1), around (0) or after
// (+1) seq.
func cmpRange(first, last, seq uint64) int {
	switch {
	case last < seq:
		return -1
	case first > seq:
		return 1
	}
	return 0
}

// check asserts the manifest's invariants: closed days and then parts are
// contiguous from 1 to the watermark, days in strictly increasing date
// order and every part later than the last closed day; snapshots in
// sequence order, each dated by its ledger entry, and those of closed days
// before the others. Every name is the one its range and date give.
func (m *Manifest) check() error {
	next, lastDay := uint64(1), ""
	for _, d := range m.LedgerDays {
		if err := checkDay(d, lastDay, ledgerListsPrefix); err != nil {
			return fmt.Errorf("ledger day %s: %w", d.Date, err)
		}
		if d.FirstSeq != next || d.Rows != int64(d.LastSeq-d.FirstSeq+1) || int64(d.Files) > d.Rows {
			return fmt.Errorf("ledger day %s covers %d..%d in %d rows and %d parts, expected to start at %d with a row per entry",
				d.Date, d.FirstSeq, d.LastSeq, d.Rows, d.Files, next)
		}
		next, lastDay = d.LastSeq+1, d.Date
	}
	next, err := checkParts(m.LedgerParts, next, lastDay)
	if err != nil {
		return err
	}
	if next-1 != m.WatermarkSeq {
		return fmt.Errorf("ledger parts end at %d but the watermark is %d", next-1, m.WatermarkSeq)
	}
	var lastSeq uint64
	lastDay = ""
	for _, d := range m.GrantSnapshotDays {
		if err := checkDay(d, lastDay, grantsListsPrefix); err != nil {
			return fmt.Errorf("grants snapshot day %s: %w", d.Date, err)
		}
		first, _ := m.dateAtSeq(d.FirstSeq)
		last, _ := m.dateAtSeq(d.LastSeq)
		if d.FirstSeq <= lastSeq || d.LastSeq > m.WatermarkSeq || first != d.Date || last != d.Date || uint64(d.Files) > d.LastSeq-d.FirstSeq+1 {
			return fmt.Errorf("grants snapshot day %s: %d snapshots at %d..%d do not follow %d within that day's entries",
				d.Date, d.Files, d.FirstSeq, d.LastSeq, lastSeq)
		}
		lastSeq, lastDay = d.LastSeq, d.Date
	}
	for _, s := range m.GrantSnapshots {
		date, _ := m.dateAtSeq(s.Seq)
		if s.Seq <= lastSeq || s.Seq > m.WatermarkSeq || s.Key != grantsKey(s.Seq) || s.Date != date || s.Date <= lastDay {
			return fmt.Errorf("grants snapshot %s of %s at %d: expected after %d, up to the watermark %d, named for its seq, dated %q and after the closed day %q",
				s.Key, s.Date, s.Seq, lastSeq, m.WatermarkSeq, date, lastDay)
		}
		lastSeq = s.Seq
	}
	return nil
}

// checkDay asserts a day summary's own shape: its date follows after, it
// lists at least one file, and its list is named, under prefix, for its
// date and digest.
func checkDay(d Day, after, prefix string) error {
	if !validDate(d.Date) || d.Date <= after {
		return fmt.Errorf("not a date after %q", after)
	}
	if d.Files < 1 || d.LastSeq < d.FirstSeq || d.Rows < 0 || d.Bytes < 0 {
		return fmt.Errorf("%d files at %d..%d, %d rows, %d bytes", d.Files, d.FirstSeq, d.LastSeq, d.Rows, d.Bytes)
	}
	if len(d.SHA256) != 2*sha256.Size || !isLowerHex(d.SHA256) {
		return fmt.Errorf("sha256 %q is not a SHA-256 digest in lowercase hex", d.SHA256)
	}
	if key := listKey(prefix, d.Date, d.SHA256); d.Key != key {
		return fmt.Errorf("list %q, expected %s", d.Key, key)
	}
	return nil
}

// checkParts asserts parts are contiguous from first, named for their date
// and range, one row per entry, dated in non-decreasing order and after
// the day after (if any). It returns the sequence that follows them.
func checkParts(parts []Part, first uint64, after string) (uint64, error) {
	next := first
	for _, p := range parts {
		if p.FirstSeq != next || p.LastSeq < p.FirstSeq {
			return 0, fmt.Errorf("ledger part %s covers %d..%d, expected to start at %d", p.Key, p.FirstSeq, p.LastSeq, next)
		}
		if p.Key != partKey(p.Date, p.FirstSeq, p.LastSeq) || p.Rows != int64(p.LastSeq-p.FirstSeq+1) || p.Bytes < 0 {
			return 0, fmt.Errorf("ledger part %s of %s covers %d..%d in %d rows: expected %s, a row per entry",
				p.Key, p.Date, p.FirstSeq, p.LastSeq, p.Rows, partKey(p.Date, p.FirstSeq, p.LastSeq))
		}
		// The first part must follow the closed day after; the next ones may
		// share the previous part's day.
		if !validDate(p.Date) || p.Date < after || (p.Date == after && next == first) {
			return 0, fmt.Errorf("ledger part %s of %s follows a part or a closed day of %s: log time went backwards", p.Key, p.Date, after)
		}
		next, after = p.LastSeq+1, p.Date
	}
	return next, nil
}

// ErrManifestTooLarge is returned by a run whose manifest (or one of whose
// day lists) would outgrow what readers accept (maxManifestBytes,
// maxListBytes); the destination keeps its last commit.
var ErrManifestTooLarge = errors.New("export: refusing to commit manifest: too large")

func writeManifest(ctx context.Context, b *blob.Bucket, m *Manifest) error {
	data, err := encodeManifest(m)
	if err != nil {
		return err
	}
	return storeManifest(ctx, b, data)
}

// storeManifest replaces the manifest with data: the commit.
func storeManifest(ctx context.Context, b *blob.Bucket, data []byte) error {
	// One object write: on every blob driver the new manifest replaces the
	// old one whole, or not at all.
	if err := b.WriteAll(ctx, ManifestKey, data, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("commit manifest: %w", err)
	}
	return nil
}

// encodeManifest checks m and encodes it as it is committed, refusing what
// a reader would refuse.
func encodeManifest(m *Manifest) ([]byte, error) {
	if m.Format != formatVersion {
		return nil, fmt.Errorf("refusing to commit manifest: format %d, this creditd writes %d", m.Format, formatVersion)
	}
	// Empty lists, not null: a loader iterates them without a special case.
	for _, s := range []*[]Day{&m.LedgerDays, &m.GrantSnapshotDays} {
		if *s == nil {
			*s = []Day{}
		}
	}
	if m.LedgerParts == nil {
		m.LedgerParts = []Part{}
	}
	if m.GrantSnapshots == nil {
		m.GrantSnapshots = []Snapshot{}
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("refusing to commit manifest: %w", err)
	}
	data, err := encodeJSON(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	// A committed manifest that ReadManifest refuses would fail every later
	// run and report; refusing it here keeps the last one readable.
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("%w: the new one, with %d closed days and listing %d ledger parts and %d grants snapshots, is %d bytes, more than the %d a reader accepts; "+
			"the committed export stays readable. The parts and snapshots of the day still open (%s) fill it: export less often; "+
			"the first run after the day is closed (an entry of a later UTC day) moves them into the day's lists and commits",
			ErrManifestTooLarge, len(m.LedgerDays), len(m.LedgerParts), len(m.GrantSnapshots), len(data), maxManifestBytes, m.openDay())
	}
	return data, nil
}

// openDay is the date of the manifest's last part: the day still open.
func (m *Manifest) openDay() string {
	if len(m.LedgerParts) == 0 {
		return ""
	}
	return m.LedgerParts[len(m.LedgerParts)-1].Date
}

func encodeJSON(v any) ([]byte, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	return append(data, '\n'), err
}

func dateOf(t fsm.Timestamp) string { return t.Time().Format(time.DateOnly) }

// entryDigest is a fingerprint of a ledger entry: every field, in a fixed
// encoding, hashed with SHA-256 and cut to 128 bits.
func entryDigest(e *fsm.LedgerEntry) string {
	h := sha256.New()
	var b [8]byte
	num := func(v uint64) {
		binary.BigEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	str := func(s string) {
		num(uint64(len(s)))
		h.Write([]byte(s))
	}
	num(e.Seq)
	num(uint64(e.Time))
	str(e.CustomerID)
	str(e.CreditTypeID)
	str(e.GrantID)
	num(uint64(e.Kind))
	num(uint64(e.Amount))
	num(uint64(e.Repaid))
	num(uint64(e.BalanceAfter))
	num(uint64(e.CostBasis.Coef))
	num(uint64(e.CostBasis.Scale))
	str(e.Currency)
	num(uint64(e.MoneyMicros))
	num(uint64(e.CauseKind))
	str(e.CauseID)
	num(uint64(e.SourceKind))
	str(e.SourceRef)
	str(e.Reason)
	return hex.EncodeToString(h.Sum(nil)[:16])
}
