package export

import (
	"fmt"
	"io"
	"os"
	"time"
)

// Progress prints "what: done/total entries (pct), rate entries/s" to a
// terminal, rewriting one line at most twice a second. A nil *Progress, or
// one with a nil writer, prints nothing.
type Progress struct {
	w       io.Writer
	what    string
	total   int64
	count   int64
	start   time.Time
	lastOut time.Time
}

const progressEvery = 500 * time.Millisecond

// NewProgress returns a progress line on w (nil: none) for entries of what.
func NewProgress(w io.Writer, what string) *Progress {
	now := time.Now()
	return &Progress{w: w, what: what, start: now, lastOut: now}
}

func (p *Progress) setTotal(total int64) {
	if p != nil {
		p.total = total
	}
}

func (p *Progress) add(n int64) {
	if p == nil || p.w == nil {
		return
	}
	p.count += n
	// Checking the clock only every 4096 entries keeps the hot loop cheap.
	if p.count&4095 != 0 {
		return
	}
	if now := time.Now(); now.Sub(p.lastOut) >= progressEvery {
		p.lastOut = now
		p.print(now, false)
	}
}

func (p *Progress) done() {
	if p == nil || p.w == nil {
		return
	}
	p.print(time.Now(), true)
}

func (p *Progress) print(now time.Time, final bool) {
	elapsed := now.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.count) / elapsed // display only
	}
	pct := int64(100)
	if p.total > 0 {
		pct = p.count * 100 / p.total
	}
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(p.w, "\r%s: %d/%d entries (%d%%), %.0f entries/s%s", p.what, p.count, p.total, pct, rate, end)
}

// IsTerminal reports whether f is a character device (a terminal), where
// progress lines belong; pipes, files and CI logs stay quiet.
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
