package export

import (
	"bytes"
	"context"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"gocloud.dev/blob"

	"github.com/creditd/creditd/export/internal/ledgergen"
	"github.com/creditd/creditd/fsm"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newGen(t testing.TB, seed uint64) *ledgergen.Gen {
	t.Helper()
	g, err := ledgergen.Open(filepath.Join(t.TempDir(), "state.db"), seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func run(t testing.TB, g *ledgergen.Gen, commands int, step time.Duration) {
	t.Helper()
	if err := g.Run(commands, step); err != nil {
		t.Fatal(err)
	}
}

func openDir(t testing.TB, dir string) *blob.Bucket {
	t.Helper()
	b, err := OpenDestination(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// smallFiles makes many parts and row groups out of a small ledger.
func smallFiles() Options {
	return Options{FileRows: 700, RowGroupRows: 256, BatchRows: 100}
}

func exportOnce(t testing.TB, src Source, b *blob.Bucket, opts Options) Result {
	t.Helper()
	e, err := New(src, b, opts)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Run(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// ledgerRow is a ledger row as the independent reader (parquet-go) sees it.
type ledgerRow struct {
	seq          int64
	timeMicros   int64
	customer, ct string
	scale        int64
	grant        string
	kind         string
	amount       *big.Int // at scale 9
	balanceAfter *big.Int
	money        *big.Int // at scale 6
	file         string
}

// decimal decodes a FIXED_LEN_BYTE_ARRAY decimal: big-endian two's complement.
func decimal(b []byte) *big.Int {
	v := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return v
}

// readFiles reads every Parquet file under dir/prefix with parquet-go, not
// through the manifest: what a warehouse loading the folder would load.
// Any other file is a stray (day lists live under _lists/, not here).
func readFiles(t testing.TB, dir, prefix string) map[string][]parquet.Row {
	t.Helper()
	out := map[string][]parquet.Row{}
	root := filepath.Join(dir, prefix)
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if !strings.HasSuffix(path, ".parquet") {
			t.Errorf("stray file %s", rel)
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		st, _ := f.Stat()
		pf, err := parquet.OpenFile(f, st.Size())
		if err != nil {
			return err
		}
		r := parquet.NewReader(pf)
		defer r.Close()
		buf := make([]parquet.Row, 128)
		for {
			n, err := r.ReadRows(buf)
			for _, row := range buf[:n] {
				out[filepath.ToSlash(rel)] = append(out[filepath.ToSlash(rel)], row.Clone())
			}
			if err != nil {
				break
			}
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

// dayListsOnDisk returns the keys of the day lists under dir.
func dayListsOnDisk(t testing.TB, dir string) []string {
	t.Helper()
	var keys []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if isListKey(filepath.ToSlash(rel)) {
			keys = append(keys, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func colIndex(cols []Column, name string) int {
	return slices.IndexFunc(cols, func(c Column) bool { return c.Name == name })
}

// ledgerRows reads every ledger file under dir, sorted by sequence.
func ledgerRows(t testing.TB, dir string) []ledgerRow {
	t.Helper()
	var rows []ledgerRow
	c := func(n string) int { return colIndex(LedgerColumns, n) }
	for file, rs := range readFiles(t, dir, "ledger") {
		for _, r := range rs {
			s := func(n string) string {
				if r[c(n)].IsNull() {
					return ""
				}
				return string(r[c(n)].ByteArray())
			}
			rows = append(rows, ledgerRow{
				seq: r[c("seq")].Int64(), timeMicros: r[c("time")].Int64(),
				customer: s("customer_id"), ct: s("credit_type_id"), scale: int64(r[c("credit_scale")].Int32()),
				grant: s("grant_id"), kind: s("kind"),
				amount: decimal(r[c("amount")].ByteArray()), balanceAfter: decimal(r[c("balance_after")].ByteArray()),
				money: decimal(r[c("money_amount")].ByteArray()), file: file,
			})
		}
	}
	slices.SortFunc(rows, func(a, b ledgerRow) int { return int(a.seq - b.seq) })
	return rows
}

// checkExactlyOnce asserts sequences 1..last each appear once.
func checkExactlyOnce(t testing.TB, rows []ledgerRow, last uint64) {
	t.Helper()
	if uint64(len(rows)) != last {
		t.Errorf("files hold %d rows, the ledger has %d entries", len(rows), last)
	}
	for i, r := range rows {
		if r.seq != int64(i+1) {
			t.Fatalf("row %d has sequence %d (in %s): a gap or a duplicate", i, r.seq, r.file)
		}
	}
}

// unitsAt converts a scale-9 decimal to units of scale s, exactly.
func unitsAt(t testing.TB, v *big.Int, s int64) int64 {
	t.Helper()
	q, r := new(big.Int).QuoRem(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(9-s), nil), new(big.Int))
	if r.Sign() != 0 || !q.IsInt64() {
		t.Fatalf("%s is not a whole number of units at scale %d", v, s)
	}
	return q.Int64()
}

// checkManifestMatchesFiles asserts the files on disk are exactly those the
// manifest lists, in itself and in its day lists, and the day lists it
// names; and the manifest covers 1..watermark.
func checkManifestMatchesFiles(t testing.TB, dir string, b *blob.Bucket, watermark uint64) *Manifest {
	t.Helper()
	ctx := context.Background()
	m, err := ReadManifest(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if m.WatermarkSeq != watermark {
		t.Errorf("manifest watermark %d, want %d", m.WatermarkSeq, watermark)
	}
	var listed []string
	if err := m.EachLedgerPart(ctx, b, func(p Part) error { listed = append(listed, p.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := m.EachGrantSnapshot(ctx, b, func(s Snapshot) error { listed = append(listed, s.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, d := range slices.Concat(m.LedgerDays, m.GrantSnapshotDays) {
		listed = append(listed, d.Key)
	}
	var onDisk []string
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel = filepath.ToSlash(rel); rel != ManifestKey {
			onDisk = append(onDisk, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(listed)
	slices.Sort(onDisk)
	if !slices.Equal(listed, onDisk) {
		t.Errorf("files on disk differ from the manifest:\n disk     %v\n manifest %v", onDisk, listed)
	}
	return m
}

// memCut is a hand-made cut for tests that need values fsm would not make.
type memCut struct {
	entries []fsm.LedgerEntry
	grants  []fsm.Grant
	types   map[string]fsm.CreditType
}

func (c *memCut) Read(fn func(Cut) error) error { return fn(c) }
func (c *memCut) LastSeq() uint64 {
	if len(c.entries) == 0 {
		return 0
	}
	return c.entries[len(c.entries)-1].Seq
}
func (c *memCut) LastTime() fsm.Timestamp { return 0 }
func (c *memCut) AppliedIndex() uint64    { return c.LastSeq() }
func (c *memCut) CreditType(id string) (fsm.CreditType, error) {
	ct, ok := c.types[id]
	if !ok {
		return ct, &fsm.Error{Code: fsm.CodeNotFound, Field: "credit_type_id", Msg: "no credit type " + id}
	}
	return ct, nil
}
func (c *memCut) Grant(id string) (fsm.Grant, error) {
	for _, g := range c.grants {
		if g.ID == id {
			return g, nil
		}
	}
	return fsm.Grant{}, &fsm.Error{Code: fsm.CodeNotFound, Field: "grant_id", Msg: "no grant " + id}
}
func (c *memCut) ScanLedger(from, to uint64, fn func(*fsm.LedgerEntry) error) error {
	for i := range c.entries {
		e := c.entries[i]
		if e.Seq >= from && (to == 0 || e.Seq <= to) {
			if err := fn(&e); err != nil {
				return err
			}
		}
	}
	return nil
}
func (c *memCut) ScanGrants(fn func(*fsm.Grant) error) error {
	for i := range c.grants {
		g := c.grants[i]
		if err := fn(&g); err != nil {
			return err
		}
	}
	return nil
}

// copyTree copies every file of src into a new temporary directory.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// treeFiles maps every file's relative path to its bytes.
func treeFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		data, err := os.ReadFile(path)
		out[filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTrees(t *testing.T, what string, a, b map[string][]byte) {
	t.Helper()
	for k, x := range a {
		y, ok := b[k]
		if !ok {
			t.Errorf("%s: %s only in the first", what, k)
		} else if !bytes.Equal(x, y) {
			t.Errorf("%s: %s differs", what, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			t.Errorf("%s: %s only in the second", what, k)
		}
	}
}

// committedSnapshots lists the keys of every snapshot the manifest covers.
func committedSnapshots(t *testing.T, dir string) []string {
	t.Helper()
	b := openDir(t, dir)
	m, err := ReadManifest(testCtx(t), b)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := m.EachGrantSnapshot(testCtx(t), b, func(s Snapshot) error { keys = append(keys, s.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	return keys
}

// checkReadable asserts the export reads as committed: the manifest at
// watermark w, its parts 1..w once through the day lists, its snapshots
// through theirs.
func checkReadable(t *testing.T, dir string, w uint64) {
	t.Helper()
	b := openDir(t, dir)
	var seqs []uint64
	man, err := ScanExport(testCtx(t), b, "", func(m *Movement) error { seqs = append(seqs, m.Seq); return nil })
	if err != nil {
		t.Fatalf("the export does not read: %v", err)
	}
	if man.WatermarkSeq != w || uint64(len(seqs)) != w {
		t.Fatalf("the export reads %d entries at watermark %d, want 1..%d", len(seqs), man.WatermarkSeq, w)
	}
	if err := man.EachGrantSnapshot(testCtx(t), b, func(Snapshot) error { return nil }); err != nil {
		t.Fatalf("the export's snapshots do not read: %v", err)
	}
}

// apply applies one log entry of cmds at ts to f.
func apply(t *testing.T, f *fsm.FSM, ts fsm.Timestamp, cmds ...fsm.Command) {
	t.Helper()
	var enc [][]byte
	for _, c := range cmds {
		b, err := fsm.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		enc = append(enc, b)
	}
	rs, err := f.Apply([]fsm.Entry{{Index: f.AppliedIndex() + 1, Data: fsm.EncodeEntry(ts, enc)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs[0] {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
}
