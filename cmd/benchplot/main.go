// Command benchplot draws throughput against p99 latency from the JSON
// reports of `creditd bench --json`, one line per kind of run (creditd or
// the no-op ceiling, and the batch size), points in order of throughput.
//
//	creditd bench --local 3 --batch 1000 --rate 40 --json > runs/r40.json
//	go run ./cmd/benchplot -o docs/bench-throughput-p99.png runs/*.json
//
// It reads only the files given and draws with gonum/plot: nothing is
// fetched at run time.
package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// report is the part of bench.Report the plot needs (decoded here so the
// command depends on the JSON format, not on the bench package).
type report struct {
	Noop  bool    `json:"noop"`
	Batch int     `json:"batch"`
	Nodes int     `json:"nodes"`
	Mix   string  `json:"mix"`
	Rate  float64 `json:"rate"`
	Ops   []struct {
		Op           string  `json:"op"`
		EventsPerSec float64 `json:"events_per_sec"`
		LatencyMs    struct {
			P99 float64 `json:"p99"`
		} `json:"latency_ms"`
	} `json:"ops"`
}

const maxReportBytes = 16 << 20

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("benchplot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "docs/bench-throughput-p99.png", "PNG file to write")
	title := fs.String("title", "creditd: ReportUsage throughput against p99 latency (3 replicas, fsync on, 2 cores)", "plot title")
	width := fs.Float64("width", 22, "width in cm")
	height := fs.Float64("height", 14, "height in cm")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: benchplot [-o out.png] report.json...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no report files given")
	}
	if *width < 5 || *width > 200 || *height < 5 || *height > 200 {
		return errors.New("-width and -height must be 5..200 cm")
	}
	series := map[string]plotter.XYs{}
	for _, path := range fs.Args() {
		r, err := readReport(path)
		if err != nil {
			return err
		}
		for _, o := range r.Ops {
			if o.Op != "report" {
				continue
			}
			if o.EventsPerSec <= 0 || o.LatencyMs.P99 <= 0 {
				return fmt.Errorf("%s: the report operation has no throughput or latency", path)
			}
			kind := "creditd"
			if r.Noop {
				kind = "no-op ceiling"
			}
			name := fmt.Sprintf("%s, %d-event batches", kind, r.Batch)
			series[name] = append(series[name], plotter.XY{X: o.EventsPerSec, Y: o.LatencyMs.P99})
		}
	}
	if len(series) == 0 {
		return errors.New("no report operation in the files given")
	}

	p := plot.New()
	p.Title.Text = *title
	p.X.Label.Text = "events/s (ReportUsage, log scale)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Label.Text = "p99 latency, ms (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true

	names := slices.Sorted(func(yield func(string) bool) {
		for k := range series {
			if !yield(k) {
				return
			}
		}
	})
	for i, name := range names {
		pts := series[name]
		slices.SortFunc(pts, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", name, err)
		}
		c := plotutil.Color(i)
		line.Color, points.Color = c, c
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(name, line, points)
	}
	// Log axes need a positive range with some room around the points.
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, pts := range series {
		for _, pt := range pts {
			xmin, xmax = math.Min(xmin, pt.X), math.Max(xmax, pt.X)
			ymin, ymax = math.Min(ymin, pt.Y), math.Max(ymax, pt.Y)
		}
	}
	p.X.Min, p.X.Max = xmin/1.5, xmax*1.5
	p.Y.Min, p.Y.Max = ymin/1.5, ymax*3
	p.BackgroundColor = color.White
	if err := p.Save(vg.Length(*width)*vg.Centimeter, vg.Length(*height)*vg.Centimeter, *out); err != nil {
		return fmt.Errorf("write %s: %w", *out, err)
	}
	fmt.Fprintf(stderr, "wrote %s (%d series)\n", *out, len(series))
	return nil
}

func readReport(path string) (*report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	defer f.Close()
	var r report
	dec := json.NewDecoder(io.LimitReader(f, maxReportBytes))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("read report %s: %w", path, err)
	}
	return &r, nil
}
