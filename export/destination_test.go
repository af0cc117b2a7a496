package export

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
