package export

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// OpenDestination takes "any gocloud.dev/blob URL", and gocloud's fileblob
// reads file://./path relative to the working directory. OpenDestination
// once dropped the host and wrote file://./x to /x, and file://exports/x to
// /x: the export landed somewhere else than asked, silently. It reads a
// file:// URL as fileblob does, and refuses a host it cannot honour.
func TestFileURLsAreReadAsGocloudReadsThem(t *testing.T) {
	root := t.TempDir()
	cwd := filepath.Join(root, "cwd")
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(cwd)
	// rel is root/<name> without its leading "/": as a relative path it
	// lies under cwd; misread as absolute, it is root/<name>.
	rel := func(name string) string {
		return strings.TrimPrefix(filepath.ToSlash(filepath.Join(root, name)), "/")
	}
	abs := filepath.ToSlash(filepath.Join(root, "abs"))
	for _, tc := range []struct {
		name, url string
		wantDir   string // where the manifest lands; "" = refused
	}{
		{"a relative path", "file://./" + rel("dot"), filepath.Join(cwd, filepath.FromSlash(rel("dot")))},
		{"the working directory", "file://.", cwd},
		{"an absolute path", "file://" + abs, filepath.FromSlash(abs)},
		{"an absolute path on localhost", "file://localhost" + abs + "-localhost", filepath.FromSlash(abs) + "-localhost"},
		{"a path with a host", "file://exports" + abs, ""},
		{"a relative path written without the dot", "file://" + rel("nodot"), ""},
		{"a URL without a path", "file://", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := OpenDestination(context.Background(), tc.url)
			if tc.wantDir == "" {
				if err == nil {
					b.Close()
					t.Fatalf("%s: accepted", tc.url)
				}
				if !strings.Contains(err.Error(), tc.url) {
					t.Errorf("%s: the error does not name the URL: %v", tc.url, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if err := b.WriteAll(context.Background(), ManifestKey, []byte("{}"), nil); err != nil {
				t.Fatal(err)
			}
			want := filepath.Join(tc.wantDir, ManifestKey)
			if _, err := os.Stat(want); err != nil {
				t.Errorf("%s: nothing at %s: %v", tc.url, want, err)
			}
		})
	}
}

// treePaths lists every file and folder under dir (folders end in "/"),
// relative to it, in walk order.
func treePaths(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// creditd export opens its destination before it reads any state, so that
// an unwritable one is refused at once; a run that then failed left the
// directory it had created, empty or with the parts it had stored and no
// manifest, which looked like an export. OpenDestinationForRun's discard
// removes, after a failed run, what the open and the run created, and only
// that: the export's objects and the folders they leave empty, up to the
// topmost folder the open created; never a directory that was there, nor
// anything once a manifest is committed, nor an object of another name.
func TestAFailedRunRemovesOnlyTheDestinationItCreated(t *testing.T) {
	g := newGen(t, 11)
	run(t, g, 1500, 4*time.Hour) // 30 steps of 4 h: several days, parts and day lists
	failAt := func(prefix string) func(string) error {
		return func(key string) error {
			if strings.HasPrefix(key, prefix) {
				return errCrash
			}
			return nil
		}
	}
	for _, tc := range []struct {
		name    string
		dest    string   // under the test's root
		before  []string // made before the open: folders end in "/"
		during  []string // files written after the open, before the run
		failAt  func(string) error
		runs    bool     // the run happens (else: the source failed)
		fails   bool     // the run fails
		wantAll []string // what the root holds after discard, beyond before and during; nil: nothing
		keep    bool     // every file the run wrote stays
	}{
		{name: "a new folder and its parents, the source failing", dest: "a/b/export"},
		{name: "a new folder, the run failing after its first part", dest: "a/b/export", runs: true, fails: true, failAt: failAt("ledger/")},
		{name: "a new folder, the run failing at a day list, after every part and the snapshot", dest: "export",
			runs: true, fails: true, failAt: failAt("_lists/")},
		{name: "a new folder where another file appeared", dest: "a/export", during: []string{"a/export/notes.txt", "a/export/ledger/README"},
			runs: true, fails: true, failAt: failAt("grants/")},
		{name: "a folder that was there, empty", dest: "a/export", before: []string{"a/", "a/export/"}},
		{name: "a folder that was there, the run failing", dest: "export", before: []string{"export/"},
			runs: true, fails: true, failAt: failAt("_lists/"), keep: true},
		{name: "a parent that was there", dest: "a/export", before: []string{"a/", "a/notes.txt"},
			runs: true, fails: true, failAt: failAt("ledger/")},
		{name: "a new folder whose run committed", dest: "a/export", runs: true, keep: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			root := t.TempDir()
			write := func(paths []string) {
				for _, rel := range paths {
					p := filepath.Join(root, filepath.FromSlash(rel))
					if strings.HasSuffix(rel, "/") {
						if err := os.MkdirAll(p, 0o755); err != nil {
							t.Fatal(err)
						}
						continue
					}
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, []byte("not the export's"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			write(tc.before)
			dest := filepath.Join(root, filepath.FromSlash(tc.dest))
			b, discard, err := OpenDestinationForRun(ctx, dest)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			write(tc.during)
			if tc.runs {
				opts := smallFiles()
				opts.AfterObject = tc.failAt
				e, err := New(FromFSM(g.F), b, opts)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.Run(ctx); (err != nil) != tc.fails || (tc.fails && !errors.Is(err, errCrash)) {
					t.Fatalf("run: %v, want it to fail: %v", err, tc.fails)
				}
				if len(treeFiles(t, dest)) <= len(tc.during) {
					t.Fatalf("the run stored nothing: %v", treePaths(t, dest))
				}
			}
			wrote := treePaths(t, root)
			if err := discard(ctx); err != nil {
				t.Fatal(err)
			}
			got := treePaths(t, root)
			if tc.keep {
				if !slices.Equal(got, wrote) {
					t.Errorf("discard removed what it must keep:\n got %v\nwant %v", got, wrote)
				}
				return
			}
			// What was made before the open, or by another after it, stays
			// with the folders holding it.
			want := map[string]bool{}
			for _, p := range slices.Concat(tc.before, tc.during) {
				for ; p != "." && p != "/"; p = path.Dir(strings.TrimSuffix(p, "/")) + "/" {
					want[p] = true
					if !strings.Contains(strings.TrimSuffix(p, "/"), "/") {
						break
					}
				}
			}
			if len(got) != len(want) {
				t.Errorf("after discard the root holds %v; want %v", got, slices.Sorted(maps.Keys(want)))
			}
			for _, p := range got {
				if !want[p] {
					t.Errorf("after discard the root holds %v; want %v", got, slices.Sorted(maps.Keys(want)))
					break
				}
			}
		})
	}
}

// discard looked for the manifest before it listed what to delete: an
// exporter overlapping the failed run (the scheduled export to the same
// new folder) that committed while discard listed lost the objects of its
// export that bore the names the failed run had written, and its manifest
// named parts that were gone. It looks for the manifest once the objects
// are listed, right before it deletes them, as a run's sweep does.
func TestDiscardKeepsAnExportCommittedWhileItListed(t *testing.T) {
	ctx := testCtx(t)
	g := newGen(t, 11)
	run(t, g, 1500, 4*time.Hour)
	dest := filepath.Join(t.TempDir(), "new", "export")
	b, created, err := openDestination(ctx, dest)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if created.top == "" {
		t.Fatalf("opening %s created nothing", dest)
	}
	opts := smallFiles()
	opts.AfterObject = func(key string) error {
		if strings.HasPrefix(key, "grants/") {
			return errCrash // after every part
		}
		return nil
	}
	e, err := New(FromFSM(g.F), b, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Run(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("run: %v; want it to fail", err)
	}
	var committed []string
	created.listed = func() {
		other := openDir(t, dest)
		exportOnce(t, FromFSM(g.F), other, smallFiles())
		committed = treePaths(t, dest)
	}
	if err := discardCreated(ctx, b, created); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(committed, ManifestKey) {
		t.Fatalf("the other exporter committed nothing: %v", committed)
	}
	if got := treePaths(t, dest); !slices.Equal(got, committed) {
		t.Errorf("discard changed an export committed meanwhile:\n got %v\nwant %v", got, committed)
	}
}
