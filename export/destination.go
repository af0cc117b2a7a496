package export

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"strings"
	"syscall"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/gcerrors"
)

// ErrNoExport is returned to readers of a destination that holds no export
// (no manifest.json): a mistyped path, or an export that never ran. Reading
// it as an empty ledger would print a report that ties out over nothing.
var ErrNoExport = errors.New("no export")

// OpenDestination opens where exports go: a directory path, a file:// URL,
// or any gocloud.dev/blob URL whose driver the program links (s3://, gs://,
// azblob://). Directories get atomic writes (a temporary file next to the
// final one, renamed on success) and no metadata sidecar files; a missing
// directory is created.
func OpenDestination(ctx context.Context, dest string) (*blob.Bucket, error) {
	if dest == "" {
		return nil, errors.New("export destination: empty")
	}
	b, err := openBucket(ctx, dest, true)
	if err != nil {
		return nil, fmt.Errorf("export destination %s: %w", dest, err)
	}
	return b, nil
}

// OpenExport opens an export to read it. Unlike OpenDestination it creates
// nothing, and a destination without a manifest is refused with ErrNoExport:
// a mistyped path must not read as an empty ledger.
func OpenExport(ctx context.Context, src string) (*blob.Bucket, error) {
	if src == "" {
		return nil, errors.New("open export: empty location")
	}
	noExport := fmt.Errorf("%w at %s: no %s", ErrNoExport, src, ManifestKey)
	b, err := openBucket(ctx, src, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, noExport
	}
	if err != nil {
		return nil, fmt.Errorf("open export %s: %w", src, err)
	}
	ok, err := b.Exists(ctx, ManifestKey)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("open export %s: %w", src, err)
	}
	if !ok {
		b.Close()
		return nil, noExport
	}
	return b, nil
}

// openBucket opens a directory path, a file:// URL or a blob URL; createDir
// says whether a missing directory is created.
func openBucket(ctx context.Context, dest string, createDir bool) (*blob.Bucket, error) {
	dir, isDir := "", false
	switch {
	case strings.HasPrefix(dest, "file://"):
		u, err := url.Parse(dest)
		if err != nil {
			return nil, err
		}
		if u.RawQuery != "" {
			// Let fileblob's URL opener honour its query parameters; it
			// reads the host as we do below, and ignores any other one.
			if err := checkFileHost(u); err != nil {
				return nil, err
			}
			break
		}
		if dir, err = fileURLPath(u); err != nil {
			return nil, err
		}
		isDir = true
	case !strings.Contains(dest, "://"):
		dir, isDir = dest, true
	}
	if isDir {
		return fileblob.OpenBucket(dir, &fileblob.Options{CreateDir: createDir, NoTempDir: true, Metadata: fileblob.MetadataDontWrite})
	}
	return blob.OpenBucket(ctx, dest)
}

// fileURLPath is the directory of a file:// URL as gocloud's fileblob reads
// it: file:///abs/path is absolute, file://./rel/path is relative to the
// working directory.
func fileURLPath(u *url.URL) (string, error) {
	if err := checkFileHost(u); err != nil {
		return "", err
	}
	if u.Host == "." {
		if p := strings.TrimPrefix(u.Path, "/"); p != "" {
			return p, nil
		}
		return ".", nil
	}
	if u.Path == "" {
		return "", errors.New("a file URL without a path: want file:///absolute/path or file://./relative/path")
	}
	return u.Path, nil
}

// checkFileHost refuses a file:// URL with a host other than "." (relative
// path), "" or "localhost": file://exports/x would otherwise write to /x,
// somewhere else than asked, silently.
func checkFileHost(u *url.URL) error {
	switch u.Host {
	case "", "localhost", ".":
		return nil
	}
	return fmt.Errorf("a file URL with host %q: want file:///absolute/path or file://./relative/path", u.Host)
}

// isDirectory says whether b is a directory (fileblob, the one driver that
// answers As with an *os.FileInfo, its root's), where folders are real and
// stay when the last object in them is deleted.
func isDirectory(b *blob.Bucket) bool {
	var fi os.FileInfo
	return b.As(&fi)
}

// removeEmptyFolders removes, in a directory destination, the folders
// above key (a deleted object) up to the root while they are empty.
// fileblob deletes a key with os.Remove, which removes an empty folder and
// refuses one that is not empty: the first folder that holds something
// (or is already gone) ends the climb.
func removeEmptyFolders(ctx context.Context, b *blob.Bucket, key string) error {
	for dir := path.Dir(key); dir != "." && dir != "/"; dir = path.Dir(dir) {
		err := b.Delete(ctx, dir)
		if err == nil {
			continue
		}
		if gcerrors.Code(err) == gcerrors.NotFound || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			return nil
		}
		// Where the system says "not empty" otherwise (Windows), look.
		if _, lerr := b.List(&blob.ListOptions{Prefix: dir + "/"}).Next(ctx); lerr == nil {
			return nil
		}
		return fmt.Errorf("remove the folder %s: %w", dir, err)
	}
	return nil
}
