package export

import (
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// writerProps are the Parquet settings of every exported file: zstd, row
// groups of rowGroupRows, dictionary encoding only on the columns marked
// Dict (low-cardinality strings; elsewhere a dictionary only costs time),
// statistics on (warehouses prune row groups by seq and time with them).
func writerProps(cols []Column, mem memory.Allocator, rowGroupRows int) *parquet.WriterProperties {
	opts := []parquet.WriterProperty{
		parquet.WithAllocator(mem),
		parquet.WithCompression(compress.Codecs.Zstd),
		parquet.WithMaxRowGroupLength(int64(rowGroupRows)),
		parquet.WithDictionaryDefault(false),
		parquet.WithStats(true),
		// A fixed created_by keeps files identical across versions of the
		// library build, so two replicas write the same bytes.
		parquet.WithCreatedBy("creditd export"),
	}
	for _, c := range cols {
		if c.Dict {
			opts = append(opts, parquet.WithDictionaryFor(c.Name, true))
		}
	}
	return parquet.NewWriterProperties(opts...)
}

// fileWriter writes one Parquet file of one schema, buffering each row group
// in memory (encoded and compressed) until it holds rowGroupRows rows.
type fileWriter struct {
	w    *pqarrow.FileWriter
	rows int
}

func newFileWriter(out io.Writer, schema *arrow.Schema, cols []Column, mem memory.Allocator, rowGroupRows int, meta map[string]string) (*fileWriter, error) {
	arrowProps := pqarrow.NewArrowWriterProperties(pqarrow.WithAllocator(mem))
	w, err := pqarrow.NewFileWriter(schema, out, writerProps(cols, mem, rowGroupRows), arrowProps)
	if err != nil {
		return nil, fmt.Errorf("start parquet file: %w", err)
	}
	for _, k := range sortedKeys(meta) {
		if err := w.AppendKeyValueMetadata(k, meta[k]); err != nil {
			return nil, fmt.Errorf("parquet metadata %s: %w", k, err)
		}
	}
	return &fileWriter{w: w}, nil
}

// write adds a batch, starting a new row group when the current one is full.
func (f *fileWriter) write(rec arrow.RecordBatch) error {
	defer rec.Release()
	if err := f.w.WriteBuffered(rec); err != nil {
		return fmt.Errorf("write parquet rows: %w", err)
	}
	f.rows += int(rec.NumRows())
	return nil
}

func (f *fileWriter) close() error {
	if err := f.w.Close(); err != nil {
		return fmt.Errorf("finish parquet file: %w", err)
	}
	return nil
}
