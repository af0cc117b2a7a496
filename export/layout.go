package export

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	ManifestKey   = "manifest.json"
	ledgerPrefix  = "ledger/"
	grantsPrefix  = "grants/"
	grantsFile    = "grants.parquet"
	formatVersion = 1
	// maxManifestBytes bounds what a run reads back, and so what a run may
	// commit. Each run that exports adds a part per UTC date (≈ 230 bytes)
	// and, without retention, a grants snapshot (≈ 145 bytes): a run a
	// minute reaches it in about four months, a run an hour in twenty years.
	maxManifestBytes = 64 << 20
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

// Manifest is the commit record of a destination: the files it lists are
// complete and, together, hold every ledger entry up to WatermarkSeq exactly
// once. Loaders that want only committed data read the files listed here;
// files beyond the watermark belong to a run in progress (or interrupted, to
// be replaced by the next run).
type Manifest struct {
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
	// LedgerParts lists every ledger part in sequence order.
	LedgerParts []Part `json:"ledger_parts"`
	// GrantSnapshots lists every grants snapshot in sequence order.
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

// Snapshot is one committed grants file.
type Snapshot struct {
	Key   string `json:"key"`
	Seq   uint64 `json:"seq"`
	Rows  int64  `json:"rows"`
	Bytes int64  `json:"bytes"`
}

// ReadManifest reads a destination's manifest as a writer sees it: a
// destination without one (never exported to) yields an empty manifest at
// watermark 0. Readers of an export use readExportManifest.
func ReadManifest(ctx context.Context, b *blob.Bucket) (*Manifest, error) {
	m, err := readExportManifest(ctx, b)
	if errors.Is(err, ErrNoExport) {
		return &Manifest{Format: formatVersion}, nil
	}
	return m, err
}

// readExportManifest reads the manifest of an export; a destination without
// one holds no export, and yields ErrNoExport.
func readExportManifest(ctx context.Context, b *blob.Bucket) (*Manifest, error) {
	r, err := b.NewReader(ctx, ManifestKey, nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("%w: the destination has no %s", ErrNoExport, ManifestKey)
	}
	if err != nil {
		return nil, fmt.Errorf("open manifest: %w", err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("read manifest: larger than %d bytes", maxManifestBytes)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	if m.Format != formatVersion {
		return nil, fmt.Errorf("manifest format %d: this creditd reads format %d", m.Format, formatVersion)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &m, nil
}

// check asserts the manifest's invariant: parts are contiguous from 1 to the
// watermark.
func (m *Manifest) check() error {
	next := uint64(1)
	for _, p := range m.LedgerParts {
		if p.FirstSeq != next || p.LastSeq < p.FirstSeq {
			return fmt.Errorf("ledger part %s covers %d..%d, expected to start at %d", p.Key, p.FirstSeq, p.LastSeq, next)
		}
		next = p.LastSeq + 1
	}
	if next-1 != m.WatermarkSeq {
		return fmt.Errorf("ledger parts end at %d but the watermark is %d", next-1, m.WatermarkSeq)
	}
	return nil
}

// ErrManifestTooLarge is returned by a run whose manifest would outgrow what
// readers accept (maxManifestBytes); the destination keeps its last commit.
var ErrManifestTooLarge = errors.New("export: refusing to commit manifest: too large")

func writeManifest(ctx context.Context, b *blob.Bucket, m *Manifest) error {
	if err := m.check(); err != nil {
		return fmt.Errorf("refusing to commit manifest: %w", err)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	data = append(data, '\n')
	// A committed manifest that ReadManifest refuses would fail every later
	// run and report; refusing it here keeps the last one readable.
	if len(data) > maxManifestBytes {
		return fmt.Errorf("%w: the new one, listing %d ledger parts and %d grants snapshots, is %d bytes, more than the %d a reader accepts; "+
			"the committed export stays readable, but to export further, export to a new destination (and keep fewer grants snapshots)",
			ErrManifestTooLarge, len(m.LedgerParts), len(m.GrantSnapshots), len(data), maxManifestBytes)
	}
	// One object write: on every blob driver the new manifest replaces the
	// old one whole, or not at all.
	if err := b.WriteAll(ctx, ManifestKey, data, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("commit manifest: %w", err)
	}
	return nil
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
