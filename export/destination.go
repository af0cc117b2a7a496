package export

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
)

// OpenDestination opens where exports go: a directory path, a file:// URL,
// or any gocloud.dev/blob URL whose driver the program links (s3://, gs://,
// azblob://). Directories get atomic writes (a temporary file next to the
// final one, renamed on success) and no metadata sidecar files.
func OpenDestination(ctx context.Context, dest string) (*blob.Bucket, error) {
	if dest == "" {
		return nil, fmt.Errorf("export destination: empty")
	}
	dir := ""
	switch {
	case strings.HasPrefix(dest, "file://"):
		u, err := url.Parse(dest)
		if err != nil {
			return nil, fmt.Errorf("export destination %q: %w", dest, err)
		}
		if u.RawQuery != "" {
			break // let fileblob's URL opener honour its query parameters
		}
		dir = u.Path
	case !strings.Contains(dest, "://"):
		dir = dest
	}
	if dir != "" {
		b, err := fileblob.OpenBucket(dir, &fileblob.Options{CreateDir: true, NoTempDir: true, Metadata: fileblob.MetadataDontWrite})
		if err != nil {
			return nil, fmt.Errorf("export destination %s: %w", dir, err)
		}
		return b, nil
	}
	b, err := blob.OpenBucket(ctx, dest)
	if err != nil {
		return nil, fmt.Errorf("export destination %s: %w", dest, err)
	}
	return b, nil
}
