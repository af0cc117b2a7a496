package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlotsReportsIntoAPNG(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for i, body := range []string{
		`{"noop":false,"batch":1000,"ops":[{"op":"report","events_per_sec":8000,"latency_ms":{"p99":40}}]}`,
		`{"noop":false,"batch":1000,"ops":[{"op":"report","events_per_sec":16000,"latency_ms":{"p99":900}}]}`,
		`{"noop":true,"batch":1000,"ops":[{"op":"report","events_per_sec":90000,"latency_ms":{"p99":400}}]}`,
	} {
		p := filepath.Join(dir, "r"+string(rune('0'+i))+".json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	out := filepath.Join(dir, "plot.png")
	var stderr bytes.Buffer
	if err := run(append([]string{"-o", out}, files...), &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("the output is not a PNG (%v)", err)
	}
	if !strings.Contains(stderr.String(), "2 series") {
		t.Errorf("want 2 series (creditd and no-op): %s", stderr.String())
	}
}

func TestRefusesReportsWithoutFigures(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(p, []byte(`{"ops":[{"op":"report","events_per_sec":0}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"-o", filepath.Join(dir, "x.png"), p}, io.Discard); err == nil || !strings.Contains(err.Error(), "no throughput") {
		t.Fatalf("run = %v; want an error naming the missing figures", err)
	}
	if err := run([]string{"-o", filepath.Join(dir, "x.png")}, io.Discard); err == nil {
		t.Fatal("run with no files succeeded")
	}
}
