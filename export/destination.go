package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
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
	b, _, err := openDestination(ctx, dest)
	return b, err
}

// OpenDestinationForRun is OpenDestination for a run that must leave nothing
// behind when it fails (creditd export opens the destination first, to
// refuse an unwritable one before it fetches any state, so a missing
// directory is created before the run can fail on its source). It also
// returns discard, for the caller to call once the run failed: when this
// call created the destination directory (with any missing parents), and
// no manifest is there (no export was committed, by this run or another),
// discard removes the export's own objects in it (parts, snapshots, day
// lists, and the temporary files of these and of the manifest) and then
// the folders left empty, up to the topmost one this call created. An
// object of any other name stays, and so do the folders holding it. A
// directory that existed before, or a blob URL (file:// with query
// parameters included), is left as it is: discard does nothing there.
func OpenDestinationForRun(ctx context.Context, dest string) (b *blob.Bucket, discard func(context.Context) error, err error) {
	b, created, err := openDestination(ctx, dest)
	if err != nil {
		return nil, nil, err
	}
	discard = func(context.Context) error { return nil }
	if created.top != "" {
		discard = func(ctx context.Context) error {
			if err := discardCreated(ctx, b, created); err != nil {
				return fmt.Errorf("remove the export destination %s this run created: %w", dest, err)
			}
			return nil
		}
	}
	return b, discard, nil
}

func openDestination(ctx context.Context, dest string) (*blob.Bucket, createdDir, error) {
	if dest == "" {
		return nil, createdDir{}, errors.New("export destination: empty")
	}
	b, created, err := openBucket(ctx, dest, true)
	if err != nil {
		return nil, createdDir{}, fmt.Errorf("export destination %s: %w", dest, err)
	}
	return b, created, nil
}

// createdDir is a destination directory that opening it created.
type createdDir struct {
	dir string // the destination's directory, absolute
	top string // the topmost directory created: dir or a parent of it; "" when dir existed
	// listed, when set, is called by discardCreated once it has listed
	// what to delete: tests commit another exporter's run there.
	listed func()
}

// OpenExport opens an export to read it. Unlike OpenDestination it creates
// nothing, and a destination without a manifest is refused with ErrNoExport:
// a mistyped path must not read as an empty ledger.
func OpenExport(ctx context.Context, src string) (*blob.Bucket, error) {
	if src == "" {
		return nil, errors.New("open export: empty location")
	}
	noExport := fmt.Errorf("%w at %s: no %s", ErrNoExport, src, ManifestKey)
	b, _, err := openBucket(ctx, src, false)
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
// says whether a missing directory is created, and created says which.
func openBucket(ctx context.Context, dest string, createDir bool) (b *blob.Bucket, created createdDir, err error) {
	dir, isDir := "", false
	switch {
	case strings.HasPrefix(dest, "file://"):
		u, err := url.Parse(dest)
		if err != nil {
			return nil, created, err
		}
		if u.RawQuery != "" {
			// Let fileblob's URL opener honour its query parameters; it
			// reads the host as we do below, and ignores any other one.
			if err := checkFileHost(u); err != nil {
				return nil, created, err
			}
			break
		}
		if dir, err = fileURLPath(u); err != nil {
			return nil, created, err
		}
		isDir = true
	case !strings.Contains(dest, "://"):
		dir, isDir = dest, true
	}
	if !isDir {
		b, err := blob.OpenBucket(ctx, dest)
		return b, created, err
	}
	if createDir {
		if created.dir, err = filepath.Abs(dir); err != nil {
			return nil, createdDir{}, err
		}
		if created.top, err = makeDir(created.dir); err != nil {
			return nil, createdDir{}, err
		}
	}
	b, err = fileblob.OpenBucket(dir, &fileblob.Options{NoTempDir: true, Metadata: fileblob.MetadataDontWrite})
	if err != nil {
		removeUpTo(created.dir, created.top)
		return nil, createdDir{}, err
	}
	return b, created, nil
}

// makeDir creates dir and its missing parents, as os.MkdirAll does, and
// returns the topmost directory it created, "" when dir was there: what
// it created, and only that, a failed export may remove. A directory made
// by someone else meanwhile is not counted as made here.
func makeDir(dir string) (top string, err error) {
	if _, err := os.Stat(dir); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return "", nil // fileblob says what is wrong with it, if anything
	}
	if parent := filepath.Dir(dir); parent != dir {
		if top, err = makeDir(parent); err != nil {
			return "", err
		}
	}
	switch err := os.Mkdir(dir, 0o777); {
	case err == nil:
		if top == "" {
			top = dir
		}
		return top, nil
	case errors.Is(err, fs.ErrExist):
		return top, nil
	default:
		removeUpTo(filepath.Dir(dir), top)
		return "", err
	}
}

// removeUpTo removes dir and its parents up to top, while they are empty;
// nothing when top is "". It reports whether it removed them all.
func removeUpTo(dir, top string) bool {
	if top == "" {
		return false
	}
	for {
		if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false
		}
		if dir == top {
			return true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return false
		}
		dir = parent
	}
}

// discardCreated removes what a failed run left in a destination directory
// that opening it created (OpenDestinationForRun): nothing when a manifest
// is there; otherwise the objects of the export's names, then the folders
// left empty, up to created.top. With no manifest, none of them is part
// of an export: the next run would delete them (its sweep) or write them
// again. One exporter per destination at a time is the rule; should
// another overlap, it is fenced as a run's sweep is: the manifest is
// looked for once the objects are listed, right before they are deleted,
// so that an export committed while they were listed loses none of its
// objects (the listing of a failed run's many parts takes a while), and
// an exporter that commits after the look, naming an object deleted here,
// is refused by its own commit's check of what it stored.
func discardCreated(ctx context.Context, b *blob.Bucket, created createdDir) error {
	ours := committedBy(&Manifest{})
	var keys []string
	it := b.List(nil)
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("list: %w", err)
		}
		if !obj.IsDir && ours.orphan(obj.Key) {
			keys = append(keys, obj.Key)
		}
	}
	if created.listed != nil {
		created.listed()
	}
	committed, err := b.Exists(ctx, ManifestKey)
	if err != nil {
		return fmt.Errorf("look for %s: %w", ManifestKey, err)
	}
	if committed {
		return nil
	}
	for _, key := range keys {
		if err := b.Delete(ctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			return fmt.Errorf("delete %s: %w", key, err)
		}
	}
	// Folders in walk order hold their own folders after them: removing
	// them in reverse removes each one's folders first. One that holds
	// something (not the export's) stays, and so does every folder above it.
	var folders []string
	err = filepath.WalkDir(created.dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != created.dir {
			folders = append(folders, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list the folders: %w", err)
	}
	for _, f := range slices.Backward(folders) {
		os.Remove(f)
	}
	removeUpTo(created.dir, created.top)
	return nil
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
